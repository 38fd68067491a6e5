//! One request to an upstream group: pick a target, reuse or dial a connection, run the
//! exchange, and fail over or replay when that is safe.

use std::time::Instant;

use crate::config::Route;
use crate::error::{ErrorKind, ProxyError};
use crate::http1::parse::Framing;
use crate::proxy::exchange::{exchange, note_response, Attempt};
use crate::proxy::lb_key::LbKey;
use crate::proxy::relay::fill_body;
use crate::proxy::session::{Exchange, Failure, Session};
use crate::upstream::connect::{connect, discard_idle, Attempts, Connected, Link, Want};
use crate::upstream::retry;
use crate::upstream::target::dial_name;

pub(crate) fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

/// Proxies one request to `up`. `Ok(keep)` when a full response reached the client.
pub(crate) async fn forward(
    sess: &mut Session<'_>,
    u: usize,
    route: &Route,
) -> Result<Exchange, Failure> {
    let (ctx, head, client) = (sess.ctx, sess.head, sess.client);
    let up = &ctx.config().upstreams[u];
    let bal = &ctx.balancer(u);
    if up.request_buffer > 0 {
        let idle = ctx.config().limits.idle_timeout;
        fill_body(
            sess.stream,
            sess.down,
            head.framing,
            up.request_buffer,
            idle,
        )
        .await
        .map_err(|e| Failure::from(ProxyError::downstream(ErrorKind::ClientIo(e))))?;
    }
    let method = route
        .method
        .as_deref()
        .map(str::as_bytes)
        .unwrap_or(head.method.get(&sess.down.buf));
    // A request can be replayed only while all of it is still in our buffer.
    let body_buffered = match head.framing {
        Framing::None => true,
        Framing::Length(n) => sess.down.pending() as u64 >= n,
        _ => false,
    };
    let req =
        retry::Request {
            body_buffered,
            idempotent: is_idempotent(method),
            retry_method: up.lb.retry_methods.iter().any(|m| m.as_bytes() == method)
                && up.lb.retry_match.as_ref().is_none_or(|m| {
                    crate::route::matches(m, &sess.down.buf, head, &sess.s.headers)
                }),
        };
    let lb_key = LbKey::find(
        bal.policy(),
        &up.lb.key,
        &ctx.config().trusted_proxies,
        client,
        &sess.down.buf,
        head,
        &sess.s.headers,
    );
    // Each attempt sends the body from here again (only ever replayed when fully buffered).
    let body_start = sess.down.pos;
    sess.s.body_at = req.body_buffered.then_some(body_start);
    let mut att = Attempts::default();
    let mut replayed_unprocessed = false;
    let first_dial = Instant::now();
    // The first attempt's dial starts with the request's (one clock read fewer).
    let mut dial_started = Some(first_dial);
    loop {
        sess.down.pos = body_start;
        let want = Want {
            key: lb_key.get(&sess.down.buf),
            reuse: Some(req.idempotent && req.body_buffered),
            source: client.peer,
            dest: client.local,
            proxy_header: up.transport.proxy_protocol != crate::config::ProxyProtocol::Off,
            upgrade: head.conn.upgrade,
        };
        let dial_started = dial_started.take().unwrap_or_else(Instant::now);
        let connected = connect(ctx, u, up, &mut att, &want).await;
        let trace = &mut sess.s.trace;
        trace.connect = Some(dial_started.elapsed());
        let Connected {
            target: t,
            conn,
            in_flight,
        } = match connected {
            Ok(c) => c,
            Err(e) => {
                trace.dialed = att.last_failed;
                trace.response = Some(first_dial.elapsed());
                return Err(e.into());
            }
        };
        trace.dialed = Some(t);
        let reused = match &conn {
            Link::Conn(c) => c.reused,
            Link::H2(s) => s.reused,
        };
        // The cookie policy (re)issues its cookie whenever the request did not name this target.
        let set_cookie = bal.policy() == crate::config::Policy::Cookie
            && lb_key.get(&sess.down.buf) != Some(bal.cookie(t).as_bytes());
        let mut seen = None;
        let attempt = Attempt {
            u,
            t,
            up,
            route,
            set_cookie,
        };
        let result = match conn {
            // Boxed: the HTTP/1 path's future stays its size.
            Link::H2(stream) => {
                Box::pin(crate::http2::upstream::exchange(sess, &attempt, stream)).await
            }
            Link::Conn(conn) if up.transport.fastcgi.is_some() => {
                let r = Box::pin(crate::fastcgi::exchange::exchange(
                    sess, &attempt, conn, &mut seen,
                ))
                .await;
                // The HTTP exchange judges its response head itself, as soon as it arrives.
                if let Some((status, latency)) = seen {
                    let passive = bal.passive_enabled();
                    note_response(bal.shared(t), up, passive, status, latency);
                }
                r
            }
            Link::Conn(conn) => exchange(sess, &attempt, conn, &mut seen).await,
        };
        sess.s.trace.response = Some(first_dial.elapsed());
        let f = match result {
            Ok(next) => match sess.s.send_on.take() {
                Some(second) => {
                    drop(in_flight);
                    return Ok(send_on(sess, &second).await);
                }
                None => return Ok(next),
            },
            Err(f) => f,
        };
        let failed = retry::Failed {
            reused,
            broke: matches!(f.error.kind, ErrorKind::UpstreamIo { .. }),
            answered: f.answered,
            before_response: retry::failed_before_response(&f.error.kind),
            retry_safe: f.error.retry_safe,
        };
        // Only HTTP/2 streams fail safely after the exchange began: refused or past a GOAWAY,
        // or never sent.
        let unprocessed = matches!(f.error.kind, ErrorKind::UpstreamIo { .. });
        if retry::replay_unprocessed(failed, unprocessed, replayed_unprocessed) {
            replayed_unprocessed = true;
            att.replay();
            // Another target when one is left untried, else this one again (a new stream,
            // on a new connection after a GOAWAY).
            if (0..up.targets.len()).any(|i| i != t && !att.tried.contains(i)) {
                att.tried.insert(t);
            }
            continue;
        }
        if retry::replay_on_fresh_connection(req, failed) {
            // Stale connections come from the pool; a fresh dial follows on the replay.
            discard_idle(ctx, u, t);
            att.replay();
            continue;
        }
        // A target that took the request and then hung, reset or closed is taken out of
        // rotation like one that refused the connection.
        if retry::counts_against_target(f.error.side, &f.error.kind, f.answered) {
            let target = dial_name(&up.targets[t].addr);
            tracing::warn!(upstream = %up.name, upstream_addr = %target, "{}", f.error);
            bal.record_failure(t);
        }
        if retry::try_another_target(req, failed) && att.may_try_again(up) {
            att.tried.insert(t);
            continue;
        }
        return Err(f);
    }
}

/// A `handle_response` rule's second upstream. Its failures are answered here: they are not
/// the first target's, so they must not reach its retry loop.
async fn send_on(sess: &mut Session<'_>, second: &Route) -> Exchange {
    let crate::config::Action::Proxy(u) = second.action else {
        return Exchange::Done(false);
    };
    // Boxed: this future sits inside the first forward's.
    let result = Box::pin(forward(sess, u, second)).await;
    sess.s.copied.clear();
    match result {
        Ok(next) => next,
        Err(Failure { error, answered }) => {
            if answered {
                tracing::debug!("response cut short: {error}");
            } else {
                sess.s.status = error.status().unwrap_or(0);
                crate::proxy::shape::answer_error(sess, second, &error).await;
            }
            Exchange::Done(false)
        }
    }
}
