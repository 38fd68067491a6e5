//! Responses the proxy shapes: a route's `handle_response` rules on the upstream response head
//! (new status, local answer, or the request sent on to another upstream) and its
//! `error_pages`, which replace upstream error answers and ringway's own 502/503/504.
//!
//! A request body is streamed to the first upstream as it arrives and not kept: an `upstream`
//! rule sends it to the second upstream only when all of it was in the receive buffer from
//! the start (the bodies a retry could replay too); for a body that streamed it answers 502
//! and logs why.

use std::io::Write as _;

use crate::config::{ErrorPage, HeaderMatch, Respond, ResponseRule, Route, RuleAction};
use crate::error::{reason_phrase, ErrorKind, ProxyError};
use crate::http1::forward::ReqInfo;
use crate::http1::parse::{Framing, HeaderIdx, ResponseHead};
use crate::http1::response::finish_conn_header;
use crate::proxy::respond::is_head;
use crate::proxy::session::{Exchange, Failure, RecvBuf, Scratch, Session};
use crate::template::{Placeholder, Placeholders, ResponsePart, Template};
use crate::upstream::pool::UpConn;

/// What to do with an upstream response head.
#[derive(Debug)]
pub(crate) enum Decision<'r> {
    /// Forward it as it is.
    Pass,
    /// Forward it under this status.
    ReplaceStatus(u16),
    /// Answer instead of forwarding it.
    Local(Local<'r>),
}

/// An answer given in place of the upstream response.
#[derive(Debug)]
pub(crate) enum Local<'r> {
    /// An error page.
    Page(&'r ErrorPage),
    /// A rule's `respond`.
    Respond(&'r ResponseRule, &'r Respond),
    /// A rule's `upstream`: the request goes on to another upstream.
    SendOn(&'r ResponseRule, Next<'r>),
}

/// Rules and pages compare by identity: which one of the route's was chosen.
impl PartialEq for Decision<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Local::*;
        match (self, other) {
            (Decision::Pass, Decision::Pass) => true,
            (Decision::ReplaceStatus(a), Decision::ReplaceStatus(b)) => a == b,
            (Decision::Local(Page(a)), Decision::Local(Page(b))) => std::ptr::eq(*a, *b),
            (Decision::Local(Respond(a, _)), Decision::Local(Respond(b, _)))
            | (Decision::Local(SendOn(a, _)), Decision::Local(SendOn(b, _))) => {
                std::ptr::eq(*a, *b)
            }
            _ => false,
        }
    }
}

/// What a matching rule does.
fn rule_decision(rule: &ResponseRule) -> Decision<'_> {
    match &rule.action {
        RuleAction::ReplaceStatus(code) => Decision::ReplaceStatus(*code),
        RuleAction::Respond(r) => Decision::Local(Local::Respond(rule, r)),
        RuleAction::Upstream {
            upstream,
            rewrite,
            method,
        } => Decision::Local(Local::SendOn(
            rule,
            Next {
                upstream: *upstream,
                rewrite: rewrite.as_ref(),
                method: method.as_deref(),
            },
        )),
    }
}

/// Whether the route shapes responses at all (the common route does not: one branch).
pub(crate) fn shapes(route: &Route) -> bool {
    !route.handle_response.is_empty() || !route.error_pages.is_empty()
}

/// The first rule that matches wins; error pages apply only when no rule matched. `has`
/// tells whether the response has a field `name` (lower-case) matching the wanted value.
pub(crate) fn decide<'r>(
    route: &'r Route,
    status: u16,
    has: impl Fn(&str, &HeaderMatch) -> bool,
) -> Decision<'r> {
    for rule in &route.handle_response {
        let status_ok = rule.status.is_empty() || rule.status.contains(status);
        if !status_ok || !rule.headers.iter().all(|(n, want)| has(n, want)) {
            continue;
        }
        // 204 and 304 have no body to keep under another status.
        if matches!(rule.action, RuleAction::ReplaceStatus(_)) && matches!(status, 204 | 304) {
            continue;
        }
        return rule_decision(rule);
    }
    match page_for(route, status) {
        Some(p) => Decision::Local(Local::Page(p)),
        None => Decision::Pass,
    }
}

pub(crate) fn page_for(route: &Route, status: u16) -> Option<&ErrorPage> {
    route.error_pages.iter().find(|p| p.status.contains(status))
}

/// Whether a response head (`headers` spans into `rbuf`) has a field `name` matching `want`.
pub(crate) fn header_matches(
    rbuf: &[u8],
    headers: &[HeaderIdx],
    name: &str,
    want: &HeaderMatch,
) -> bool {
    headers
        .iter()
        .filter(|h| h.name.get(rbuf).eq_ignore_ascii_case(name.as_bytes()))
        .any(|h| match want {
            HeaderMatch::Present => true,
            HeaderMatch::Exact(v) => h.value.get(rbuf) == v.as_bytes(),
        })
}

/// Rewrites the status line at the start of a response head in `out`.
pub(crate) fn replace_status_line(out: &mut Vec<u8>, status: u16) {
    let end = out.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
    let mut line = Vec::with_capacity(32);
    let _ = write!(line, "HTTP/1.1 {status} {}", reason_phrase(status));
    out.splice(..end, line);
}

/// Adds header lines (each ending in CRLF) before the blank line that ends the head in `out`.
pub(crate) fn insert_fields(out: &mut Vec<u8>, fields: &[u8]) {
    let at = out.len() - 2;
    debug_assert_eq!(&out[at..], b"\r\n");
    out.splice(at..at, fields.iter().copied());
}

/// Answers ringway's own error: its error page when the route has one for the status, else
/// the short plain answer. The connection closes either way.
pub(crate) async fn answer_error(sess: &mut Session<'_>, route: &Route, error: &ProxyError) {
    let page = error
        .status()
        .and_then(|s| page_for(route, s).map(|p| (s, p)));
    match page {
        Some((status, page)) => {
            tracing::warn!("{error}");
            write_page(sess, page, status, false).await;
        }
        None => sess.answer_error(error).await,
    }
}

/// Writes an error page under `status`; whether the write went through.
async fn write_page(sess: &mut Session<'_>, page: &ErrorPage, status: u16, keep: bool) -> bool {
    let head = sess.head;
    let s = &mut *sess.s;
    s.status = status;
    s.out.clear();
    let _ = write!(
        s.out,
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        page.content_type,
        page.body.len()
    );
    finish_conn_header(&mut s.out, head.version, keep);
    if !is_head(&sess.down.buf, head) {
        s.out.extend_from_slice(&page.body);
    }
    write_out(sess).await
}

async fn write_out(sess: &mut Session<'_>) -> bool {
    let s = &mut *sess.s;
    s.bytes_out = s.out.len() as u64;
    let out = std::mem::take(&mut s.out);
    let (res, out) = sess.stream.write_all(out).await;
    s.out = out;
    res.is_ok()
}

/// The first upstream response, whose head a rule or page answers instead of forwarding.
pub(crate) struct Answered<'a> {
    pub(crate) route: &'a Route,
    /// Upstream and target indices of the connection.
    pub(crate) u: usize,
    pub(crate) t: usize,
    /// The upstream's `transport.keepalive`.
    pub(crate) keepalive: bool,
    /// `None`: an HTTP/2 stream, reset when the exchange dropped it.
    pub(crate) conn: Option<UpConn>,
    /// The response head sits at `ub.buf[ub.pos..]`.
    pub(crate) ub: RecvBuf,
    pub(crate) resp: &'a ResponseHead,
    /// The whole request body went upstream (else the client connection cannot be reused).
    pub(crate) body_sent: bool,
    /// The upstream was asked a HEAD (its response has no body).
    pub(crate) upstream_head: bool,
}

/// Answers in place of the upstream response: an error page, a rule's `respond`, or, for a
/// rule's `upstream`, the second route left in `Scratch::send_on` for `forward` to run. The
/// upstream body is never forwarded: the connection is pooled when the body is already here
/// in full, else closed.
pub(crate) async fn answer(
    sess: &mut Session<'_>,
    first: Answered<'_>,
    local: Local<'_>,
) -> Result<Exchange, Failure> {
    let Answered {
        route,
        u,
        t,
        keepalive,
        conn,
        mut ub,
        resp,
        body_sent,
        upstream_head,
    } = first;
    let keep = sess.head.keep_alive() && body_sent && !sess.ctx.draining();
    let rbuf_start = ub.pos;
    let pool = Pool {
        u,
        t,
        keepalive,
        upstream_head,
    };
    let result = match local {
        Local::Page(page) => {
            let ok = write_page(sess, page, resp.status, keep).await;
            Ok(Exchange::Done(ok && keep))
        }
        Local::Respond(rule, r) => {
            let ok = respond(sess, rule, r, &ub.buf[rbuf_start..], resp, keep).await;
            Ok(Exchange::Done(ok && keep))
        }
        Local::SendOn(rule, next) => {
            release(sess, &pool, conn, &ub, resp);
            let r = send_on(sess, route, rule, &next, &ub.buf[rbuf_start..], resp).await;
            *sess.ubuf = std::mem::take(&mut ub.buf);
            return Ok(r);
        }
    };
    release(sess, &pool, conn, &ub, resp);
    *sess.ubuf = std::mem::take(&mut ub.buf);
    result
}

/// Where the first upstream connection goes back to.
struct Pool {
    u: usize,
    t: usize,
    keepalive: bool,
    upstream_head: bool,
}

/// Pools the first upstream connection when its response is complete in the buffer (nothing
/// left to drain), else closes it.
fn release(sess: &Session<'_>, p: &Pool, conn: Option<UpConn>, ub: &RecvBuf, resp: &ResponseHead) {
    let Some(conn) = conn else {
        return;
    };
    let after_head = ub.pending().saturating_sub(resp.head_len) as u64;
    let complete = p.upstream_head
        || match resp.framing {
            Framing::None => after_head == 0,
            Framing::Length(n) => after_head == n,
            _ => false,
        };
    if complete && resp.keep_alive() && p.keepalive {
        checkin(sess.ctx, p.u, p.t, conn);
    }
}

/// Pools an upstream connection, unless another worker waits for a slot of this capped
/// target (then it is closed, as the HTTP exchange does).
pub(crate) fn checkin(ctx: &crate::worker::ctx::WorkerCtx, u: usize, t: usize, conn: UpConn) {
    use std::sync::atomic::Ordering::Relaxed;
    let bal = ctx.balancer(u);
    let shared = bal.shared(t);
    let wanted =
        bal.is_capped(t) && shared.wanted.load(Relaxed) && shared.wanted.swap(false, Relaxed);
    if !wanted {
        ctx.checkin(u, t, conn);
    }
}

/// Placeholder values of a rule: the request's, and `{rp.*}` from the upstream response.
struct WithResponse<'a> {
    req: ReqInfo<'a>,
    status: u16,
    reason: &'a [u8],
    rbuf: &'a [u8],
    headers: &'a [HeaderIdx],
}

impl Placeholders for WithResponse<'_> {
    fn write(&self, p: &Placeholder, out: &mut Vec<u8>) {
        match p {
            Placeholder::Response(ResponsePart::StatusCode) => {
                let _ = write!(out, "{}", self.status);
            }
            Placeholder::Response(ResponsePart::StatusText) if self.reason.is_empty() => {
                out.extend_from_slice(reason_phrase(self.status).as_bytes())
            }
            Placeholder::Response(ResponsePart::StatusText) => out.extend_from_slice(self.reason),
            Placeholder::Response(ResponsePart::Header(name)) => {
                if let Some(h) = self
                    .headers
                    .iter()
                    .find(|h| h.name.get(self.rbuf).eq_ignore_ascii_case(name.as_bytes()))
                {
                    out.extend_from_slice(h.value.get(self.rbuf));
                }
            }
            _ => self.req.write(p, out),
        }
    }
}

/// Appends `Name: value` lines of the upstream fields a rule copies.
fn copy_fields(rule: &ResponseRule, rbuf: &[u8], headers: &[HeaderIdx], out: &mut Vec<u8>) {
    for h in headers {
        let name = h.name.get(rbuf);
        if rule
            .copy_headers
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value.get(rbuf));
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// A rule's local answer, its templates rendered against the request and the response.
async fn respond(
    sess: &mut Session<'_>,
    rule: &ResponseRule,
    r: &Respond,
    rbuf: &[u8],
    resp: &ResponseHead,
    keep: bool,
) -> bool {
    let (ctx, client, head) = (sess.ctx, sess.client, sess.head);
    let buf = &sess.down.buf;
    let Scratch {
        headers,
        resp_headers,
        out,
        aux,
        status,
        ..
    } = &mut *sess.s;
    *status = r.status;
    let info = WithResponse {
        req: ReqInfo {
            buf,
            head,
            headers,
            client,
            path: head.path.get(buf),
            query: head.query.map(|q| q.get(buf)),
            upstream: "",
            worker: ctx.id(),
        },
        status: resp.status,
        reason: resp.reason.get(rbuf),
        rbuf,
        headers: resp_headers,
    };
    aux.clear();
    r.body.render(&info, aux);
    out.clear();
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason_phrase(r.status));
    copy_fields(rule, rbuf, resp_headers, out);
    for (name, value) in &r.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        value.render(&info, out);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(r.status, 204 | 304);
    if !bodiless {
        let _ = write!(out, "Content-Length: {}\r\n", aux.len());
    }
    finish_conn_header(out, head.version, keep);
    if !bodiless && !is_head(buf, head) {
        out.extend_from_slice(aux);
    }
    write_out(sess).await
}

/// Where an `upstream` rule sends the request.
#[derive(Debug)]
pub(crate) struct Next<'a> {
    upstream: usize,
    rewrite: Option<&'a Template>,
    method: Option<&'a str>,
}

/// Leaves the second route (the rule's upstream, rewrite and method) in `Scratch::send_on`
/// and the rule's copied fields in `Scratch::copied`, or answers 502 when the request cannot
/// be sent again.
async fn send_on(
    sess: &mut Session<'_>,
    route: &Route,
    rule: &ResponseRule,
    next: &Next<'_>,
    rbuf: &[u8],
    resp: &ResponseHead,
) -> Exchange {
    let refuse = |why| ProxyError::upstream(ErrorKind::UpstreamInvalid(why), false);
    let has_body = !matches!(sess.head.framing, Framing::None | Framing::Length(0));
    match sess.s.body_at {
        // Still whole in the receive buffer: it goes again, as a replay would send it.
        Some(at) if has_body => sess.down.pos = at,
        Some(_) => {}
        None if has_body => {
            let e = refuse("handle_response `upstream`: the request body streamed to the first upstream and cannot be sent again");
            sess.s.status = e.status().unwrap_or(502);
            answer_error(sess, route, &e).await;
            return Exchange::Done(false);
        }
        None => {}
    }
    let mut rewrite = None;
    if let Some(t) = next.rewrite {
        let (ctx, client, head) = (sess.ctx, sess.client, sess.head);
        let buf = &sess.down.buf;
        let info = WithResponse {
            req: ReqInfo {
                buf,
                head,
                headers: &sess.s.headers,
                client,
                path: head.path.get(buf),
                query: head.query.map(|q| q.get(buf)),
                upstream: "",
                worker: ctx.id(),
            },
            status: resp.status,
            reason: resp.reason.get(rbuf),
            rbuf,
            headers: &sess.s.resp_headers,
        };
        let mut path = Vec::new();
        t.render(&info, &mut path);
        match String::from_utf8(path) {
            Ok(p) if is_request_target(&p) => rewrite = Some(Template::literal(p)),
            _ => {
                let e = refuse("handle_response `rewrite` did not render to a path (/...)");
                sess.s.status = 502;
                answer_error(sess, route, &e).await;
                return Exchange::Done(false);
            }
        }
    }
    sess.s.copied.clear();
    copy_fields(rule, rbuf, &sess.s.resp_headers, &mut sess.s.copied);
    sess.s.send_on = Some(Box::new(Route {
        name: route.name.clone(),
        matcher: Default::default(),
        strip_prefix: if rewrite.is_some() {
            None
        } else {
            route.strip_prefix.clone()
        },
        rewrite: rewrite.or_else(|| route.rewrite.clone()),
        method: next.method.map(str::to_string).or(route.method.clone()),
        action: crate::config::Action::Proxy(next.upstream),
        // Rules shape the first response only; the error pages still apply.
        handle_response: Vec::new(),
        error_pages: route.error_pages.clone(),
    }));
    Exchange::Done(false)
}

/// A rendered rewrite is usable as a request target: origin form, no spaces or controls.
fn is_request_target(p: &str) -> bool {
    p.starts_with('/') && p.bytes().all(|b| b > b' ' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, StatusSet};
    use std::sync::Arc;

    fn rule(status: &str, headers: &[(&str, HeaderMatch)], action: RuleAction) -> ResponseRule {
        ResponseRule {
            status: if status.is_empty() {
                StatusSet::default()
            } else {
                StatusSet::parse(status).unwrap()
            },
            headers: headers
                .iter()
                .map(|(n, m)| (n.to_string(), m.clone()))
                .collect(),
            action,
            copy_headers: vec![],
        }
    }

    fn page(status: &str) -> ErrorPage {
        ErrorPage {
            status: StatusSet::parse(status).unwrap(),
            path: format!("{status}.html").into(),
            content_type: "text/html; charset=utf-8",
            body: Arc::from(&b"page"[..]),
        }
    }

    fn route(rules: Vec<ResponseRule>, pages: Vec<ErrorPage>) -> Route {
        Route {
            name: None,
            matcher: Default::default(),
            strip_prefix: None,
            rewrite: None,
            method: None,
            action: Action::Proxy(0),
            handle_response: rules,
            error_pages: pages,
        }
    }

    fn respond_action() -> RuleAction {
        RuleAction::Respond(Respond {
            status: 502,
            body: Template::literal("x".into()),
            headers: vec![],
        })
    }

    /// Decides against a response with the given fields.
    fn decide_with<'r>(r: &'r Route, status: u16, fields: &[(&str, &str)]) -> Decision<'r> {
        decide(r, status, |name, want| {
            fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .any(|(_, v)| match want {
                    HeaderMatch::Present => true,
                    HeaderMatch::Exact(w) => v == w,
                })
        })
    }

    #[test]
    fn rules_are_tried_in_order_and_the_first_match_wins() {
        let r = route(
            vec![
                rule("404", &[], RuleAction::ReplaceStatus(410)),
                rule("5xx", &[], RuleAction::ReplaceStatus(503)),
                rule("500", &[], RuleAction::ReplaceStatus(599)),
                rule(
                    "",
                    &[("x-accel-redirect", HeaderMatch::Present)],
                    respond_action(),
                ),
            ],
            vec![],
        );
        let cases = [
            (404, vec![], Decision::ReplaceStatus(410)),
            (500, vec![], Decision::ReplaceStatus(503)),
            (502, vec![], Decision::ReplaceStatus(503)),
            (200, vec![], Decision::Pass),
            (
                200,
                vec![("X-Accel-Redirect", "/f")],
                rule_decision(&r.handle_response[3]),
            ),
        ];
        for (status, fields, want) in cases {
            assert_eq!(
                decide_with(&r, status, &fields),
                want,
                "{status} {fields:?}"
            );
        }
    }

    #[test]
    fn header_conditions_need_presence_or_the_exact_value() {
        let r = route(
            vec![rule(
                "2xx",
                &[
                    ("x-a", HeaderMatch::Exact("yes".into())),
                    ("x-b", HeaderMatch::Present),
                ],
                RuleAction::ReplaceStatus(299),
            )],
            vec![],
        );
        let cases: [(&[(&str, &str)], bool); 5] = [
            (&[("X-A", "yes"), ("X-B", "")], true),
            (&[("x-a", "no"), ("x-a", "yes"), ("x-b", "1")], true),
            (&[("X-A", "Yes"), ("X-B", "1")], false),
            (&[("X-A", "yes")], false),
            (&[("X-B", "1")], false),
        ];
        for (fields, matches) in cases {
            let want = if matches {
                Decision::ReplaceStatus(299)
            } else {
                Decision::Pass
            };
            assert_eq!(decide_with(&r, 200, fields), want, "{fields:?}");
        }
        assert_eq!(
            decide_with(&r, 404, &[("X-A", "yes"), ("X-B", "")]),
            Decision::Pass
        );
    }

    #[test]
    fn error_pages_apply_when_no_rule_matched() {
        let r = route(
            vec![rule("503", &[], RuleAction::ReplaceStatus(500))],
            vec![page("502"), page("5xx"), page("404")],
        );
        assert_eq!(decide_with(&r, 503, &[]), Decision::ReplaceStatus(500));
        assert_eq!(
            decide_with(&r, 502, &[]),
            Decision::Local(Local::Page(&r.error_pages[0]))
        );
        assert_eq!(
            decide_with(&r, 500, &[]),
            Decision::Local(Local::Page(&r.error_pages[1]))
        );
        assert_eq!(
            decide_with(&r, 404, &[]),
            Decision::Local(Local::Page(&r.error_pages[2]))
        );
        assert_eq!(decide_with(&r, 403, &[]), Decision::Pass);
        assert_eq!(decide_with(&r, 200, &[]), Decision::Pass);
        assert_eq!(
            page_for(&r, 504).map(|p| &p.path),
            Some(&r.error_pages[1].path)
        );
    }

    #[test]
    fn replace_status_skips_bodiless_responses() {
        let r = route(
            vec![
                rule("", &[], RuleAction::ReplaceStatus(200)),
                rule("304", &[], respond_action()),
            ],
            vec![],
        );
        assert_eq!(decide_with(&r, 204, &[]), Decision::Pass);
        assert_eq!(
            decide_with(&r, 304, &[]),
            rule_decision(&r.handle_response[1])
        );
        assert_eq!(decide_with(&r, 201, &[]), Decision::ReplaceStatus(200));
    }

    #[test]
    fn status_line_is_replaced_and_fields_go_before_the_blank_line() {
        let mut out = b"HTTP/1.1 500 Internal Server Error\r\nA: b\r\n\r\n".to_vec();
        replace_status_line(&mut out, 503);
        assert_eq!(out, b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\n");
        insert_fields(&mut out, b"X-C: d\r\n");
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\nX-C: d\r\n\r\n"
        );
    }

    #[test]
    fn rendered_rewrites_must_be_origin_form_paths() {
        for (p, ok) in [
            ("/files/a.txt", true),
            ("/a?b=c", true),
            ("", false),
            ("files/a", false),
            ("/a b", false),
            ("/a\r\nX: y", false),
            ("http://x/", false),
        ] {
            assert_eq!(is_request_target(p), ok, "{p:?}");
        }
    }
}
