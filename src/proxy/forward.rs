//! One request to an upstream group: pick a target, reuse or dial a connection, run the
//! exchange, and fail over or replay when that is safe.

use std::time::{Duration, Instant};

use crate::config::{Route, Upstream};
use crate::error::{ErrorKind, ProxyError};
use crate::http1::parse::Framing;
use crate::proxy::exchange::{exchange, Attempt};
use crate::proxy::lb_key::LbKey;
use crate::proxy::relay::fill_body;
use crate::proxy::session::{Exchange, Failure, Session};
use crate::upstream::connect::dial;
use crate::upstream::target::dial_name;
use crate::worker::ctx::WorkerCtx;

/// Marks a request in flight on a target for as long as it lives.
pub(crate) struct InFlight<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> InFlight<'a> {
    fn new(c: &'a std::sync::atomic::AtomicU32) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

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
    let may_retry_sent =
        body_buffered && up.lb.retry_methods.iter().any(|m| m.as_bytes() == method);
    let idempotent = is_idempotent(method);
    let lb_key = LbKey::find(
        bal.policy(),
        &up.lb.key,
        &ctx.config().trusted_proxies,
        client,
        &sess.down.buf,
        head,
        &sess.s.headers,
    );
    let started = Instant::now();
    // Each attempt sends the body from here again (only ever replayed when fully buffered).
    let body_start = sess.down.pos;
    let mut tried = crate::upstream::balance::Tried::default();
    let mut attempts = 0u32;
    let mut waiting = PoolWait(None);
    loop {
        attempts += 1;
        sess.down.pos = body_start;
        let can_try_again = |attempts: u32| match up.lb.try_duration {
            Some(d) => started.elapsed() < d,
            None => attempts <= up.lb.retries,
        };
        let key = lb_key.get(&sess.down.buf);
        let Some(t) = bal.select(tried, key, |i| ctx.pool().has_idle(u, i)) else {
            if can_try_again(attempts) {
                tried = Default::default();
                waiting.start(ctx, u);
                monoio::time::sleep(up.lb.try_interval).await;
                continue;
            }
            waiting.end(ctx, u);
            return Err(ProxyError::upstream(ErrorKind::NoTarget, true).into());
        };
        ctx.gen_metrics().selected[u][t].inc();
        let target = &up.targets[t];
        let _in_flight = InFlight::new(&bal.shared(t).in_flight);
        // A request that cannot be replayed must not meet a pooled connection the upstream
        // already closed: a non-blocking peek finds that out for one syscall. Replayable
        // requests skip it and are replayed if the connection turns out stale.
        let replayable = idempotent && body_buffered;
        let mut pooled = ctx.pool().checkout(u, t, up.transport.idle_timeout);
        while pooled
            .as_ref()
            .is_some_and(|c| !replayable && c.stream.peer_closed())
        {
            pooled = ctx.pool().checkout(u, t, up.transport.idle_timeout);
        }
        let conn = match pooled {
            Some(c) => c,
            None => match dial(ctx, u, t, up).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(upstream = %up.name, target = %dial_name(&target.addr), "{e}");
                    // A full target refused a new connection: that says nothing of its health.
                    if !matches!(e.kind, ErrorKind::NoTarget) {
                        bal.record_failure(t);
                    }
                    tried.insert(t);
                    if can_try_again(attempts) {
                        let key = lb_key.get(&sess.down.buf);
                        if bal
                            .select(tried, key, |i| ctx.pool().has_idle(u, i))
                            .is_none()
                        {
                            tried = Default::default();
                            waiting.start(ctx, u);
                            monoio::time::sleep(up.lb.try_interval).await;
                        }
                        continue;
                    }
                    waiting.end(ctx, u);
                    return Err(e.into());
                }
            },
        };
        waiting.end(ctx, u);
        let reused = conn.reused;
        // The cookie policy (re)issues its cookie whenever the request did not name this target.
        let set_cookie = bal.policy() == crate::config::Policy::Cookie
            && lb_key.get(&sess.down.buf) != Some(bal.cookie(t).as_bytes());
        let mut seen = None;
        let result = exchange(
            sess,
            &Attempt {
                u,
                t,
                up,
                route,
                set_cookie,
            },
            conn,
            &mut seen,
        )
        .await;
        if let Some((status, latency)) = seen {
            note_response(bal.shared(t), up, bal.passive_enabled(), status, latency);
        }
        match result {
            Ok(next) => return Ok(next),
            Err(f) => {
                // A pooled connection the upstream had already closed: replay once on a fresh
                // one when nothing of the response arrived and the request is safe to repeat.
                let stale = reused
                    && !f.answered
                    && matches!(
                        f.error.kind,
                        ErrorKind::UpstreamIo {
                            before_response: true,
                            ..
                        }
                    )
                    && body_buffered
                    && idempotent;
                if stale {
                    // Stale connections come from the pool; a fresh dial follows on the retry.
                    while let Some(c) = ctx.pool().checkout(u, t, Some(Duration::ZERO)) {
                        drop(c);
                    }
                    attempts -= 1;
                    continue;
                }
                // Sent requests are replayed on another target only when retry_methods allows
                // and no byte of a response came back.
                let unanswered = matches!(
                    f.error.kind,
                    ErrorKind::UpstreamIo {
                        before_response: true,
                        ..
                    }
                );
                let replay = f.error.retry_safe || (may_retry_sent && unanswered);
                if !f.answered && replay && can_try_again(attempts) {
                    tried.insert(t);
                    continue;
                }
                return Err(f);
            }
        }
    }
}

/// When a request started waiting for a target with a free slot (for the pool wait metrics).
pub(crate) struct PoolWait(Option<Instant>);

impl PoolWait {
    fn start(&mut self, ctx: &WorkerCtx, u: usize) {
        if self.0.is_none() {
            self.0 = Some(Instant::now());
            ctx.gen_metrics().pool_waits[u].inc();
        }
    }

    fn end(&mut self, ctx: &WorkerCtx, u: usize) {
        if let Some(since) = self.0.take() {
            ctx.gen_metrics().pool_wait_time[u].observe(since.elapsed());
        }
    }
}

/// Feeds one response into the target's shared latency estimate and passive health memory.
pub(crate) fn note_response(
    shared: &crate::upstream::target::TargetShared,
    up: &Upstream,
    passive: bool,
    status: u16,
    latency: Duration,
) {
    if up.lb.policy == crate::config::Policy::P2cEwma {
        shared.observe_latency(latency);
    }
    let p = &up.health.passive;
    let failed =
        p.unhealthy_status.contains(status) || p.unhealthy_latency.is_some_and(|max| latency > max);
    if let (true, true, Some(d)) = (passive, failed, p.fail_duration) {
        shared.record_failure_within(
            crate::upstream::target::now_ms(),
            d.as_millis().max(1) as u64,
        );
    }
}
