//! One request over a FastCGI connection: BEGIN_REQUEST and PARAMS, the body streamed as
//! STDIN records, then STDOUT read back as a CGI response (its `Status:` as the status line,
//! its fields through the upstream's header rules) and streamed to the client, chunked when
//! it has no length. The connection is pooled after END_REQUEST when FCGI_KEEP_CONN was asked.

use std::io::Write as _;
use std::time::Instant;

use crate::config::{Fastcgi, Route, TargetAddr};
use crate::error::{reason_phrase, ErrorKind, ProxyError, Side};
use crate::http1::body::Encode;
use crate::http1::forward::ReqInfo;
use crate::http1::parse::{parse_response, Framing, Parse, ResponseHead, Version};
use crate::proxy::exchange::{write_client_head, Attempt, ClientHead};
use crate::proxy::relay::io_err;
use crate::proxy::respond::{is_head, respond_simple};
use crate::proxy::session::{
    timed, timed_at, Exchange, Failure, RecvBuf, Scratch, Session, BODY_CHUNK, COALESCE_BODY,
    RESPONSE_LIMITS,
};
use crate::proxy::shape::{self, Answered, Decision};
use crate::upstream::pool::UpConn;

use super::params::{self, Params, ScriptPath};
use super::record::{self, Event, Reader};

/// CGI response fields read at most (php sends a handful).
const MAX_CGI_FIELDS: usize = 128;

/// A FastCGI exchange on `conn`; `seen` gets the status and latency of a response head.
pub(crate) async fn exchange(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    mut conn: UpConn,
    seen: &mut Option<(u16, std::time::Duration)>,
) -> Result<Exchange, Failure> {
    let Some(fc) = a.up.transport.fastcgi.as_ref() else {
        return Err(invalid("not a FastCGI upstream").into());
    };
    let head = sess.head;
    // FastCGI needs CONTENT_LENGTH up front; a chunked body would have to be buffered whole.
    if head.framing == Framing::Chunked {
        ctx_checkin(sess, a, conn);
        return Ok(Exchange::Done(respond_simple(sess, 411).await));
    }
    let (path, query) = upstream_target(sess, a.route);
    let script = match params::split(&path, fc) {
        Ok(s) => s,
        Err(status) => {
            tracing::debug!("FastCGI path refused: {}", String::from_utf8_lossy(&path));
            ctx_checkin(sess, a, conn);
            return Ok(Exchange::Done(respond_simple(sess, status).await));
        }
    };
    send_request(sess, a, fc, &mut conn, &script, query.as_deref()).await?;
    let at = Instant::now();
    let body_len = match head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    sess.s.bytes_in += body_len;
    let mut ub = RecvBuf {
        buf: std::mem::take(sess.ubuf),
        pos: 0,
        floor: 0,
    };
    ub.buf.clear();
    let mut reader = Reader::default();
    let (synth, early) = read_head(a, fc, &mut conn, &mut ub, &mut reader).await?;
    let resp = match parse_response(
        &synth,
        is_head(&sess.down.buf, head),
        &RESPONSE_LIMITS,
        &mut sess.s.resp_headers,
    ) {
        Parse::Complete(r) => r,
        _ => return Err(invalid("FastCGI response fields are not valid HTTP fields").into()),
    };
    let took = at.elapsed();
    *seen = Some((resp.status, took));
    sess.ctx.gen_metrics().upstream_response_time[a.u].observe(took);
    sess.s.status = resp.status;
    sess.s.target = Some((a.u, a.t));
    let mut replace = None;
    if shape::shapes(a.route) {
        let headers = &sess.s.resp_headers;
        match shape::decide(a.route, resp.status, |n, w| {
            shape::header_matches(&synth, headers, n, w)
        }) {
            Decision::Pass => {}
            Decision::ReplaceStatus(code) => replace = Some(code),
            Decision::Local(local) => {
                let first = Answered {
                    route: a.route,
                    u: a.u,
                    t: a.t,
                    // The rest of the records are not read: the connection is closed.
                    keepalive: false,
                    conn: Some(conn),
                    ub: RecvBuf {
                        buf: synth,
                        pos: 0,
                        floor: 0,
                    },
                    resp: &resp,
                    body_sent: true,
                    upstream_head: false,
                };
                return shape::answer(sess, first, local).await;
            }
        }
    }
    let out = Out {
        a,
        fc,
        synth: &synth,
        resp: &resp,
        replace,
    };
    let result = send_response(sess, &out, &mut conn, &mut ub, &mut reader, early).await;
    // Bytes after END_REQUEST mean the application is confused: never reuse that.
    let clean = ub.pending() == 0;
    *sess.ubuf = std::mem::take(&mut ub.buf);
    let (keep, ended) = result?;
    if ended && clean && a.up.transport.keepalive {
        ctx_checkin(sess, a, conn);
    }
    Ok(Exchange::Done(keep))
}

/// Pools a connection that carried no request, or a finished one.
fn ctx_checkin(sess: &Session<'_>, a: &Attempt<'_>, conn: UpConn) {
    shape::checkin(sess.ctx, a.u, a.t, conn);
}

fn invalid(why: &'static str) -> ProxyError {
    ProxyError::upstream(ErrorKind::UpstreamInvalid(why), false)
}

/// The path and query the application gets: the route's rewrite or strip_prefix applied.
fn upstream_target(sess: &Session<'_>, route: &Route) -> (Vec<u8>, Option<Vec<u8>>) {
    let (buf, head) = (&sess.down.buf[..], sess.head);
    let path = head.path.get(buf);
    let stripped = route
        .strip_prefix
        .as_deref()
        .map(|p| crate::route::strip_prefix(path, p.as_bytes()))
        .unwrap_or(path);
    let query = head.query.map(|q| q.get(buf));
    let Some(rewrite) = &route.rewrite else {
        let path = if stripped.is_empty() { b"/" } else { stripped };
        return (path.to_vec(), query.map(<[u8]>::to_vec));
    };
    let info = ReqInfo {
        buf,
        head,
        headers: &sess.s.headers,
        client: sess.client,
        path: stripped,
        query,
        upstream: "",
        worker: sess.ctx.id(),
    };
    let mut target = Vec::new();
    rewrite.render(&info, &mut target);
    match target.iter().position(|&b| b == b'?') {
        Some(q) => {
            let query = target[q + 1..].to_vec();
            target.truncate(q);
            (target, (!query.is_empty()).then_some(query))
        }
        None => (target, None),
    }
}

/// Writes BEGIN_REQUEST, PARAMS and the request body as STDIN records (a small buffered body
/// rides along in the first write).
async fn send_request(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    fc: &Fastcgi,
    conn: &mut UpConn,
    script: &ScriptPath,
    query: Option<&[u8]>,
) -> Result<(), Failure> {
    let (ctx, head) = (sess.ctx, sess.head);
    let tr = &a.up.transport;
    let method = a
        .route
        .method
        .as_deref()
        .map(str::as_bytes)
        .unwrap_or(head.method.get(&sess.down.buf));
    let Scratch {
        headers, out, aux, ..
    } = &mut *sess.s;
    let buf = &sess.down.buf;
    let info = ReqInfo {
        buf,
        head,
        headers,
        client: sess.client,
        path: head.path.get(buf),
        query,
        upstream: "",
        worker: ctx.id(),
    };
    let mut pairs = std::mem::take(aux);
    pairs.clear();
    let mut tmp = Vec::new();
    params::write(
        &Params {
            fc,
            info: &info,
            script,
            method,
            framing: head.framing,
            version: head.version,
            local: sess.stream.local_addr(),
        },
        &mut pairs,
        &mut tmp,
    );
    out.clear();
    record::begin_request(out, tr.keepalive);
    record::stream(out, record::PARAMS, &pairs, true);
    *aux = pairs;
    let total = match head.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let down = &mut *sess.down;
    let whole = down.pending() as u64 >= total && total <= COALESCE_BODY as u64;
    if whole {
        let body = &down.buf[down.pos..down.pos + total as usize];
        record::stream(out, record::STDIN, body, true);
        down.pos += total as usize;
    }
    let reused = conn.reused;
    write_up(conn, &mut sess.s.out, tr.write_timeout, reused).await?;
    ctx.gen_metrics().upstream_requests[a.u][a.t][reused as usize].inc();
    if whole {
        return Ok(());
    }
    // A client waiting for 100-continue sends nothing until told to.
    if head.expect_continue && sess.down.pending() == 0 && head.version == Version::Http11 {
        let (res, b) = sess
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        drop(b);
        res.map_err(|e| Failure::from(io_err(Side::Downstream, e)))?;
    }
    let idle = ctx.config().limits.idle_timeout;
    let mut left = total;
    while left > 0 {
        let down = &mut *sess.down;
        if down.pending() == 0 {
            down.reset();
            let cap = down.floor + BODY_CHUNK;
            let read = timed(idle, down.read_more(sess.stream, cap)).await;
            match read {
                Some(Ok(0)) | None => {
                    let eof = std::io::ErrorKind::UnexpectedEof.into();
                    return Err(ProxyError::downstream(ErrorKind::ClientIo(eof)).into());
                }
                Some(Err(e)) => return Err(ProxyError::downstream(ErrorKind::ClientIo(e)).into()),
                Some(Ok(_)) => {}
            }
        }
        let take = (down.pending() as u64).min(left) as usize;
        left -= take as u64;
        let out = &mut sess.s.out;
        out.clear();
        record::stream(
            out,
            record::STDIN,
            &down.buf[down.pos..down.pos + take],
            left == 0,
        );
        down.pos += take;
        write_up(conn, out, tr.write_timeout, false).await?;
    }
    Ok(())
}

/// Writes `out` to the application; `replay_safe` when nothing of this request went before.
async fn write_up(
    conn: &mut UpConn,
    out: &mut Vec<u8>,
    limit: Option<std::time::Duration>,
    replay_safe: bool,
) -> Result<(), Failure> {
    let buf = std::mem::take(out);
    let Some((res, buf)) = timed(limit, conn.stream.write_all(buf)).await else {
        return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false).into());
    };
    *out = buf;
    res.map_err(|err| {
        let kind = ErrorKind::UpstreamIo {
            err,
            before_response: true,
        };
        ProxyError::upstream(kind, replay_safe).into()
    })
}

/// Reads STDOUT up to the end of the CGI header section; returns an HTTP response head made
/// of it (`Status:` as the status line) and the body bytes that came after it.
async fn read_head(
    a: &Attempt<'_>,
    fc: &Fastcgi,
    conn: &mut UpConn,
    ub: &mut RecvBuf,
    reader: &mut Reader,
) -> Result<CgiHead, Failure> {
    let tr = &a.up.transport;
    let deadline = tr.response_header_timeout.map(|d| Instant::now() + d);
    let mut cgi = Vec::new();
    let mut nothing_yet = true;
    loop {
        loop {
            let (used, ev) = reader.next(&ub.buf[ub.pos..]).map_err(|e| invalid(e.0))?;
            let base = ub.pos;
            ub.pos += used;
            match ev {
                Event::Stdout { start, len } => {
                    cgi.extend_from_slice(&ub.buf[base + start..base + start + len]);
                    if let Some(head) = cgi_head(&cgi)? {
                        return Ok(head);
                    }
                    if cgi.len() > RESPONSE_LIMITS.max_head_bytes {
                        return Err(invalid("FastCGI response head too large").into());
                    }
                }
                Event::Stderr { start, len } => {
                    log_stderr(a, fc, &ub.buf[base + start..base + start + len])
                }
                Event::End { .. } => {
                    return Err(invalid("FastCGI request ended without a response head").into())
                }
                Event::NeedMore => break,
            }
        }
        ub.compact();
        let read = ub.read_more(&mut conn.stream, RESPONSE_LIMITS.max_head_bytes);
        let Some(res) = timed_at(deadline, read).await else {
            return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false).into());
        };
        let err = match res {
            Ok(0) => std::io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => {
                nothing_yet = false;
                continue;
            }
            Err(e) => e,
        };
        let kind = ErrorKind::UpstreamIo {
            err,
            before_response: nothing_yet,
        };
        return Err(ProxyError::upstream(kind, nothing_yet && conn.reused).into());
    }
}

fn log_stderr(a: &Attempt<'_>, fc: &Fastcgi, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    if fc.capture_stderr {
        tracing::warn!(upstream = %a.up.name, "FastCGI stderr: {}", text.trim_end());
    } else {
        tracing::debug!(upstream = %a.up.name, "FastCGI stderr: {}", text.trim_end());
    }
}

/// An HTTP/1.1 head made of a CGI head, and the body bytes that came after it.
type CgiHead = (Vec<u8>, Vec<u8>);

/// The CGI head in `cgi`, once complete.
fn cgi_head(cgi: &[u8]) -> Result<Option<CgiHead>, ProxyError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_CGI_FIELDS];
    let (len, fields) = match httparse::parse_headers(cgi, &mut fields) {
        Ok(httparse::Status::Complete((len, fields))) => (len, fields),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid("FastCGI response head is not valid CGI")),
    };
    let mut status = None;
    let mut location = false;
    for f in fields.iter() {
        if f.name.eq_ignore_ascii_case("status") {
            status = Some(f.value);
        }
        location |= f.name.eq_ignore_ascii_case("location");
    }
    let mut head = Vec::with_capacity(len + 32);
    match status {
        Some(v) => {
            let v = std::str::from_utf8(v).map_err(|_| invalid("FastCGI Status is not text"))?;
            let v = v.trim();
            let code: u16 = v
                .get(..3)
                .and_then(|c| c.parse().ok())
                .filter(|c| (200..=599).contains(c))
                .ok_or(invalid("FastCGI Status is not a final status code"))?;
            let reason = v[3..].trim();
            let reason = if reason.is_empty() {
                reason_phrase(code)
            } else {
                reason
            };
            let _ = write!(head, "HTTP/1.1 {code} {reason}\r\n");
        }
        // CGI/1.1 §6.2.3: a Location without Status is a client redirect.
        None if location => head.extend_from_slice(b"HTTP/1.1 302 Found\r\n"),
        None => head.extend_from_slice(b"HTTP/1.1 200 OK\r\n"),
    }
    for f in fields.iter() {
        // The body is raw in STDOUT; ringway frames it for the client.
        if f.name.eq_ignore_ascii_case("status") || f.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        head.extend_from_slice(f.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(f.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some((head, cgi[len..].to_vec())))
}

/// What the response phase needs of the exchange.
struct Out<'a> {
    a: &'a Attempt<'a>,
    fc: &'a Fastcgi,
    /// The HTTP head made of the CGI head; `resp` and the session's `resp_headers` point in.
    synth: &'a [u8],
    resp: &'a ResponseHead,
    replace: Option<u16>,
}

/// Sends the head and streams STDOUT to the client until END_REQUEST. Returns whether the
/// client connection stays open and whether the request ended cleanly (pooling allowed).
async fn send_response(
    sess: &mut Session<'_>,
    o: &Out<'_>,
    conn: &mut UpConn,
    ub: &mut RecvBuf,
    reader: &mut Reader,
    early: Vec<u8>,
) -> Result<(bool, bool), Failure> {
    let (ctx, head, a, resp) = (sess.ctx, sess.head, o.a, o.resp);
    let client_head = is_head(&sess.down.buf, head);
    let http10 = head.version == Version::Http10;
    let encode = match resp.framing {
        // A HEAD answer, or a status without a body (204, 304): STDOUT content is dropped.
        Framing::None => Encode::Discard,
        _ if client_head => Encode::Discard,
        Framing::CloseDelimited if !http10 => Encode::Chunk,
        _ => Encode::Raw,
    };
    let unknown_len_to_10 = http10 && !client_head && resp.framing == Framing::CloseDelimited;
    let keep = head.keep_alive() && !ctx.draining() && !unknown_len_to_10;
    let host = match &a.up.targets[a.t].addr {
        TargetAddr::Tcp { host, .. } => host.as_str(),
        TargetAddr::Unix(_) => "localhost",
    };
    write_client_head(
        sess,
        a,
        host,
        ClientHead {
            rbuf: o.synth,
            resp,
            encode,
            zero_length: false,
            keep,
        },
    );
    if let Some(code) = o.replace {
        shape::replace_status_line(&mut sess.s.out, code);
        sess.s.status = code;
    }
    if !sess.s.copied.is_empty() {
        shape::insert_fields(&mut sess.s.out, &sess.s.copied);
    }
    let mut body = Body {
        encode,
        left: match resp.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        },
        done: false,
    };
    body.add(&mut sess.s.out, &early)?;
    let answered = |error| Failure {
        error,
        answered: true,
    };
    let tr = &a.up.transport;
    loop {
        // What arrived so far goes out in one write.
        let mut ended = false;
        loop {
            let (used, ev) = reader
                .next(&ub.buf[ub.pos..])
                .map_err(|e| answered(invalid(e.0)))?;
            let base = ub.pos;
            ub.pos += used;
            match ev {
                Event::Stdout { start, len } => {
                    let data = &ub.buf[base + start..base + start + len];
                    body.add(&mut sess.s.out, data).map_err(answered)?;
                }
                Event::Stderr { start, len } => {
                    log_stderr(a, o.fc, &ub.buf[base + start..base + start + len])
                }
                Event::End {
                    app_status,
                    protocol_status,
                } => {
                    if protocol_status != 0 {
                        tracing::warn!(upstream = %a.up.name, protocol_status, "FastCGI request not completed");
                    }
                    tracing::trace!(app_status, "FastCGI request ended");
                    ended = protocol_status == 0;
                    body.finish(&mut sess.s.out).map_err(answered)?;
                    break;
                }
                Event::NeedMore => break,
            }
        }
        let done = body.done;
        if !sess.s.out.is_empty() {
            sess.s.bytes_out += sess.s.out.len() as u64;
            let out = std::mem::take(&mut sess.s.out);
            let (res, mut out) = sess.stream.write_all(out).await;
            out.clear();
            sess.s.out = out;
            res.map_err(|e| answered(io_err(Side::Downstream, e)))?;
        }
        if done {
            return Ok((keep, ended));
        }
        ub.compact();
        if ub.pending() == 0 {
            ub.reset();
        }
        let read = ub.read_more(&mut conn.stream, BODY_CHUNK);
        let Some(res) = timed(tr.read_timeout, read).await else {
            return Err(answered(ProxyError::upstream(
                ErrorKind::UpstreamTimeout,
                false,
            )));
        };
        match res {
            Ok(0) => {
                let err = std::io::ErrorKind::UnexpectedEof.into();
                return Err(answered(io_err(Side::Upstream, err)));
            }
            Ok(_) => {}
            Err(e) => return Err(answered(io_err(Side::Upstream, e))),
        }
    }
}

/// The client body being framed from STDOUT content.
struct Body {
    encode: Encode,
    /// Content-Length bytes still owed, when the application gave one.
    left: Option<u64>,
    done: bool,
}

impl Body {
    fn add(&mut self, out: &mut Vec<u8>, data: &[u8]) -> Result<(), ProxyError> {
        if data.is_empty() || self.encode == Encode::Discard {
            return Ok(());
        }
        if let Some(left) = &mut self.left {
            if data.len() as u64 > *left {
                return Err(invalid("FastCGI body longer than its Content-Length"));
            }
            *left -= data.len() as u64;
        }
        if self.encode == Encode::Chunk {
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(data);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ProxyError> {
        self.done = true;
        if self.encode == Encode::Discard {
            return Ok(());
        }
        if self.left.is_some_and(|l| l > 0) {
            return Err(invalid("FastCGI body shorter than its Content-Length"));
        }
        if self.encode == Encode::Chunk {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(cgi: &str) -> (String, String) {
        let (h, b) = cgi_head(cgi.as_bytes()).unwrap().expect("complete");
        (String::from_utf8(h).unwrap(), String::from_utf8(b).unwrap())
    }

    #[test]
    fn cgi_status_becomes_the_status_line() {
        let cases = [
            (
                "Status: 404 Not Found\r\nX-A: b\r\n\r\nbody",
                "HTTP/1.1 404 Not Found\r\nX-A: b\r\n\r\n",
                "body",
            ),
            ("Status: 201\r\n\r\n", "HTTP/1.1 201 Created\r\n\r\n", ""),
            (
                "Content-Type: text/html\r\n\r\nhi",
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
                "hi",
            ),
            (
                "Location: /x\r\n\r\n",
                "HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n",
                "",
            ),
            (
                "Status: 301\r\nLocation: /y\r\n\r\n",
                "HTTP/1.1 301 Moved Permanently\r\nLocation: /y\r\n\r\n",
                "",
            ),
            (
                "X-A: 1\nTransfer-Encoding: chunked\n\nraw",
                "HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n",
                "raw",
            ),
        ];
        for (cgi, head, body) in cases {
            assert_eq!(
                head_of(cgi),
                (head.to_string(), body.to_string()),
                "{cgi:?}"
            );
        }
    }

    #[test]
    fn incomplete_and_broken_cgi_heads() {
        assert!(cgi_head(b"Status: 200\r\nX-A: b\r\n").unwrap().is_none());
        for bad in [
            "Status: 99\r\n\r\n",
            "Status: abc\r\n\r\n",
            "Status: 103\r\n\r\n",
            "Bad Field\r\n\r\n",
        ] {
            assert!(cgi_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn body_framing_follows_the_encoding() {
        let mut out = Vec::new();
        let mut b = Body {
            encode: Encode::Chunk,
            left: None,
            done: false,
        };
        b.add(&mut out, b"hello").unwrap();
        b.add(&mut out, b"").unwrap();
        b.finish(&mut out).unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");
        let mut out = Vec::new();
        let mut b = Body {
            encode: Encode::Raw,
            left: Some(3),
            done: false,
        };
        assert!(b.add(&mut out, b"abcd").is_err());
        b.add(&mut out, b"ab").unwrap();
        assert!(b.finish(&mut out).is_err(), "short of its length");
        let mut b = Body {
            encode: Encode::Discard,
            left: Some(3),
            done: false,
        };
        b.add(&mut out, b"abcdef").unwrap();
        b.finish(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }
}
