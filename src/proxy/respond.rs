//! Answers ringway gives itself: a route's `respond`, and plain status pages (404).

use std::io::Write as _;

use crate::config::Respond;
use crate::error::reason_phrase;
use crate::http1::forward::ReqInfo;
use crate::http1::parse::{Framing, RequestHead};
use crate::http1::response::finish_conn_header;
use crate::proxy::session::{RecvBuf, Session};

/// Whether the rest of the request body is already in the buffer (so answering without
/// proxying can skip it and keep the connection).
pub(crate) fn skip_buffered_body(down: &mut RecvBuf, head: &RequestHead) -> bool {
    match head.framing {
        Framing::None => true,
        Framing::Length(n) if (down.pending() as u64) >= n => {
            down.pos += n as usize;
            true
        }
        _ => false,
    }
}

/// A plain-text status page (`404 Not Found`); whether the connection stays open.
pub(crate) async fn respond_simple(sess: &mut Session<'_>, status: u16) -> bool {
    let (down, s, head) = (&mut *sess.down, &mut *sess.s, sess.head);
    s.status = status;
    down.pos = head.head_len;
    let keep = head.keep_alive() && skip_buffered_body(down, head);
    let reason = reason_phrase(status);
    s.out.clear();
    let _ = write!(s.out, "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n", reason.len() + 5);
    finish_conn_header(&mut s.out, head.version, keep);
    if !is_head(&down.buf, head) {
        let _ = writeln!(s.out, "{status} {reason}");
    }
    s.bytes_out = s.out.len() as u64;
    let out = std::mem::take(&mut s.out);
    let (res, out) = sess.stream.write_all(out).await;
    s.out = out;
    res.is_ok() && keep
}

pub(crate) fn is_head(buf: &[u8], head: &RequestHead) -> bool {
    head.method.get(buf) == b"HEAD"
}

/// A route's `respond`: status, headers and body rendered from templates; whether the
/// connection stays open.
pub(crate) async fn respond(sess: &mut Session<'_>, r: &Respond) -> bool {
    let (ctx, client, head) = (sess.ctx, sess.client, sess.head);
    let (down, s) = (&mut *sess.down, &mut *sess.s);
    let keep = head.keep_alive() && skip_buffered_body(down, head) && !ctx.draining();
    s.status = r.status;
    let info = ReqInfo {
        buf: &down.buf,
        head,
        headers: &s.headers,
        client,
        path: head.path.get(&down.buf),
        query: head.query.map(|q| q.get(&down.buf)),
        upstream: "",
        worker: ctx.id(),
    };
    s.aux.clear();
    r.body.render(&info, &mut s.aux);
    s.out.clear();
    let _ = write!(
        s.out,
        "HTTP/1.1 {} {}\r\n",
        r.status,
        reason_phrase(r.status)
    );
    for (name, value) in &r.headers {
        s.out.extend_from_slice(name.as_bytes());
        s.out.extend_from_slice(b": ");
        value.render(&info, &mut s.out);
        s.out.extend_from_slice(b"\r\n");
    }
    let bodiless = r.status < 200 || r.status == 204 || r.status == 304;
    if !bodiless {
        let _ = write!(s.out, "Content-Length: {}\r\n", s.aux.len());
    }
    finish_conn_header(&mut s.out, head.version, keep);
    if !bodiless && !is_head(&down.buf, head) {
        s.out.extend_from_slice(&s.aux);
    }
    s.bytes_out = s.out.len() as u64;
    let out = std::mem::take(&mut s.out);
    let (res, out) = sess.stream.write_all(out).await;
    s.out = out;
    res.is_ok() && keep
}
