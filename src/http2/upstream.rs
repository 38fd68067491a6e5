//! One request over an HTTP/2 stream to the upstream, in place of the HTTP/1.1 exchange (as
//! the FastCGI transport replaces it): the HTTP/1 request the data path holds goes out as an
//! h2 request, and the h2 response comes back to the client as an HTTP/1.1 response, chunked
//! with trailers when the upstream sends trailers (so gRPC's grpc-status reaches an h2 client
//! through `http2::stream`).
//!
//! The request head is written by the same code as for HTTP/1.1 upstreams (rewrite, header
//! rules, X-Forwarded-*), then mapped to h2 fields. The request body streams up while the
//! response streams down (gRPC's bidirectional calls need both at once), each under HTTP/2
//! flow control: DATA is sent only as the upstream's window opens, and response window is
//! released only once the bytes reached the client. A client that leaves cancels the upstream
//! stream (RST_STREAM CANCEL, sent by `h2` when the stream's handles drop); an upstream reset
//! after the response started closes the client connection (an h2 client sees its stream
//! reset, see `http2::stream`).

use std::future::{poll_fn, Future as _};
use std::io::Write as _;
use std::marker::PhantomData;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;

use super::chunks::{Dechunk, Next};
use super::client::H2Stream;
use super::down::Down as H2Down;
use super::tunnel;
use crate::error::{reason_phrase, ErrorKind, ProxyError, Side};
use crate::http1::body::{write_chunk_header, Encode};
use crate::http1::forward::override_drops_body;
use crate::http1::parse::{
    parse_response, Framing, HeaderIdx, HeaderKind, Parse, ResponseHead, Version,
};
use crate::net::stream::{reserve_read_space, Stream};
use crate::proxy::exchange::{
    note_response, write_client_head_from, write_upstream_head, Attempt, ClientHead, HeadFrom,
};
use crate::proxy::relay::io_err;
use crate::proxy::respond::is_head;
use crate::proxy::session::{
    timed, timed_at, Exchange, Failure, RecvBuf, Session, BODY_CHUNK, RESPONSE_LIMITS,
};
use crate::proxy::shape::{self, Answered, Decision};
use crate::upstream::pool::UpConn;

/// How long a WebSocket handshake waits for a new connection's first SETTINGS (whether the
/// target allows extended CONNECT) when `response_header_timeout` does not say.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// Request fields HTTP/2 forbids (RFC 9113 §8.2.2) or that ringway answers itself: `expect`
/// (ringway sends the client its 100 Continue; flow control paces the body upstream).
const DROPPED_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "http2-settings",
    "expect",
];

/// The client connection used by two futures of one task at once: the request body is read
/// from it while the response is written to it.
struct ClientIo<'a> {
    stream: *mut Stream,
    _borrow: PhantomData<&'a mut Stream>,
}

impl<'a> ClientIo<'a> {
    fn new(stream: &'a mut Stream) -> Self {
        ClientIo {
            stream,
            _borrow: PhantomData,
        }
    }

    /// Whether a read and a write may be in flight at once: sockets allow it (monoio marks
    /// them `Split`) and the in-memory pair's directions are separate; a TLS stream's session
    /// may write while reading (an alert), so TLS clients get the body first, then the
    /// response.
    fn full_duplex(&self) -> bool {
        // SAFETY: a shared look at the variant while no read or write is in flight.
        !unsafe { &*self.stream }.is_tls()
    }

    async fn read_more(&self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        // SAFETY: only the upload reads and only the response writes; `full_duplex` keeps
        // them apart on streams where the two would share state.
        unsafe { &mut *self.stream }.read_more(buf).await
    }

    async fn write_all(&self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        // SAFETY: as in `read_more`.
        unsafe { &mut *self.stream }.write_all(buf).await
    }
}

/// RFC 9113 §8.7: a stream the upstream refused (REFUSED_STREAM), or one above the last
/// stream id of a graceful GOAWAY, was never processed and may go to any target. h2 gives a
/// stream the peer's GOAWAY only when its id is above that last stream id, or it was opened
/// after the GOAWAY (`Streams::recv_go_away`, `conn_error`); one at or below it that fails
/// later (the peer closed early) gets an I/O error, so it is never taken for unprocessed.
fn unprocessed(reason: Option<Reason>, reset: bool, go_away: bool, remote: bool) -> bool {
    remote
        && ((reset && reason == Some(Reason::REFUSED_STREAM))
            || (go_away && reason == Some(Reason::NO_ERROR)))
}

/// The one mapping of an upstream stream's failure onto the proxy's errors.
fn stream_error(e: &h2::Error, before_response: bool) -> ProxyError {
    let safe = unprocessed(e.reason(), e.is_reset(), e.is_go_away(), e.is_remote());
    ProxyError::upstream(
        ErrorKind::UpstreamIo {
            err: std::io::Error::other(e.to_string()),
            before_response,
        },
        safe && before_response,
    )
}

fn invalid(why: &'static str) -> ProxyError {
    ProxyError::upstream(ErrorKind::UpstreamInvalid(why), false)
}

/// The h2 request for the HTTP/1.1 head ringway would send (`head` as `write_request_head`
/// writes it: a request line and `name: value` lines, CRLF-ended). `None`: something HTTP/2
/// cannot carry.
fn h2_request(head: &[u8], scheme: &str) -> Option<http::Request<()>> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut first = lines.next()?.splitn(3, |&b| b == b' ');
    let method = http::Method::from_bytes(first.next()?).ok()?;
    let target = std::str::from_utf8(first.next()?).ok()?;
    if !target.starts_with('/') {
        return None;
    }
    let mut req = http::Request::new(());
    let mut authority = None;
    let map = req.headers_mut();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = http::HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
        let value = line[colon + 1..].trim_ascii();
        if name == http::header::HOST {
            authority = Some(std::str::from_utf8(value).ok()?.to_string());
            continue;
        }
        if DROPPED_FIELDS.contains(&name.as_str()) {
            continue;
        }
        map.append(name, http::HeaderValue::from_bytes(value).ok()?);
    }
    // TE names what ringway, the h2 client, accepts: trailers, which it passes on.
    map.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(authority.as_deref().unwrap_or("localhost"))
        .path_and_query(target)
        .build()
        .ok()?;
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    Some(req)
}

/// Which trailers of a response with a content-length can reach the client (the HTTP/1.1
/// data path carries trailers only in a chunked body, so such a response is re-framed as
/// chunked when they may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrailersTo {
    /// None: the length is kept and trailers are dropped, as HTTP/1.1 allows for a client
    /// that did not say it takes them (RFC 9110 §6.5.1).
    Dropped,
    /// Any: the HTTP/1.1 client sent `TE: trailers` (the body is re-framed as chunked).
    Any,
    /// Any, beside the body: an HTTP/2 client gets DATA and trailers as the target sent
    /// them (`down::Down::frames_body_itself`), so the length stays.
    Direct,
}

impl TrailersTo {
    /// What the client of this request takes: `te_trailers`, it sent `TE: trailers`; `h2`,
    /// it is an HTTP/2 stream the exchange sends the body to directly.
    fn of(te_trailers: bool, h2: bool) -> TrailersTo {
        match (te_trailers, h2) {
            (_, true) => TrailersTo::Direct,
            (true, false) => TrailersTo::Any,
            (false, false) => TrailersTo::Dropped,
        }
    }
}

/// Whether the request's `TE` field lists `trailers`.
fn te_trailers(buf: &[u8], headers: &[HeaderIdx]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Te)
        .any(|h| {
            h.value.get(buf).split(|&b| b == b',').any(|t| {
                let name = t.split(|&b| b == b';').next().unwrap_or_default();
                name.trim_ascii().eq_ignore_ascii_case(b"trailers")
            })
        })
}

/// The HTTP/1.1 head of an h2 response, for the data path's parser and header rules. Without
/// a content-length, a response with a body is chunked (its trailers go in the trailer
/// section); one that ended with its headers has length 0. A response with a length and a
/// body is chunked when trailers that may follow can reach an HTTP/1.1 client (`to`); a gRPC
/// response always is: its status comes in trailers. An HTTP/2 client's body is never
/// re-framed: it goes beside this head (`TrailersTo::Direct`).
fn synth_head(parts: &http::response::Parts, end_stream: bool, to: TrailersTo, out: &mut Vec<u8>) {
    let status = parts.status.as_u16();
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let rechunk = !end_stream && to != TrailersTo::Direct && (grpc || to == TrailersTo::Any);
    let mut length = false;
    for (name, value) in &parts.headers {
        if DROPPED_FIELDS.contains(&name.as_str()) {
            continue;
        }
        if name == http::header::CONTENT_LENGTH {
            if rechunk {
                continue;
            }
            length = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !length && !matches!(status, 204 | 304) {
        if end_stream {
            out.extend_from_slice(b"content-length: 0\r\n");
        } else {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// An interim (1xx) response of the target, as the HTTP/1.1 head the client is sent.
fn interim_head(parts: &http::response::Parts, out: &mut Vec<u8>) {
    let status = parts.status.as_u16();
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in &parts.headers {
        if DROPPED_FIELDS.contains(&name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The next response head on a stream: interim ones (1xx) first, then the final one.
enum Head {
    Interim(http::response::Parts),
    Final(http::Response<RecvStream>),
}

/// Waits for the next response head. HTTP/2 has no 101 (RFC 9113 §8.6): one is skipped.
async fn next_head(response: &mut ResponseFuture) -> Result<Head, h2::Error> {
    poll_fn(|cx| loop {
        match response.poll_informational(cx) {
            Poll::Ready(Some(Ok(r))) if r.status() == http::StatusCode::SWITCHING_PROTOCOLS => {}
            Poll::Ready(Some(Ok(r))) => return Poll::Ready(Ok(Head::Interim(r.into_parts().0))),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => {
                return std::pin::Pin::new(&mut *response)
                    .poll(cx)
                    .map(|r| r.map(Head::Final))
            }
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Appends the trailer section (after the last chunk) for `trailers`.
fn write_trailers(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the request body upload ended.
enum Uploaded {
    /// All of it went; bytes read past its end (a pipelined request) are handed back.
    Done(Vec<u8>),
    /// The upstream stopped taking it (it answered early, or reset the stream): the response
    /// goes on, the client connection closes after it.
    Stopped,
}

/// The request body on its way up.
struct Upload<'a> {
    client: &'a ClientIo<'a>,
    tx: SendStream<Bytes>,
    /// Body bytes read but not yet sent.
    buf: Vec<u8>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    max: Option<u64>,
    /// Body bytes read from the client (access log).
    moved: u64,
    /// An HTTP/2 client: its DATA and trailers go up as they came (`upload_direct`).
    direct: Option<H2Down>,
}

impl Upload<'_> {
    async fn run(&mut self, framing: Framing) -> Result<Uploaded, ProxyError> {
        let done = match (framing, self.direct.clone()) {
            (Framing::Length(_) | Framing::Chunked, Some(h2)) if self.buf.is_empty() => {
                self.upload_direct(&h2).await
            }
            (Framing::Length(n), _) => self.length(n).await,
            (Framing::Chunked, _) => self.chunked().await,
            _ => Ok(true),
        };
        match done {
            Ok(true) => Ok(Uploaded::Done(std::mem::take(&mut self.buf))),
            Ok(false) => Ok(Uploaded::Stopped),
            Err(e) => {
                // The client failed: the upstream learns the request will not complete.
                self.tx.send_reset(Reason::CANCEL);
                Err(e)
            }
        }
    }

    /// Sends an HTTP/2 client's DATA and trailers up as they came: no chunk framing either way,
    /// no copy. `Ok(false)`: the upstream stopped taking the body.
    async fn upload_direct(&mut self, h2: &H2Down) -> Result<bool, ProxyError> {
        let client_io = |e| io_err(Side::Downstream, e);
        loop {
            let Some(next) = timed(self.read_timeout, h2.recv_data()).await else {
                return Err(ProxyError::downstream(ErrorKind::ClientIo(
                    std::io::ErrorKind::TimedOut.into(),
                )));
            };
            let Some((data, last)) = next.map_err(client_io)? else {
                break;
            };
            let n = data.len();
            self.moved += n as u64;
            if self.max.is_some_and(|m| self.moved > m) {
                return Err(ProxyError::downstream(ErrorKind::BodyTooLarge));
            }
            // The last DATA (no trailers after it) carries END_STREAM, as the client's did.
            let sent = (n == 0 && !last) || self.send(data, last).await;
            // The client's window opens only once the upstream took the bytes.
            h2.release(n);
            if !sent || last {
                return Ok(sent);
            }
        }
        let trailers = h2.recv_trailers().await.map_err(client_io)?;
        let sent = match trailers {
            Some(t) if !t.is_empty() => self.tx.send_trailers(t),
            _ => self.tx.send_data(Bytes::new(), true),
        };
        Ok(sent.is_ok())
    }

    /// `Ok(false)`: the upstream stopped taking the body.
    async fn length(&mut self, n: u64) -> Result<bool, ProxyError> {
        let mut left = n;
        while left > 0 {
            if self.buf.is_empty() && !self.read().await? {
                return Err(ProxyError::downstream(ErrorKind::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )));
            }
            let take = (self.buf.len() as u64).min(left) as usize;
            left -= take as u64;
            let data = Bytes::copy_from_slice(&self.buf[..take]);
            self.buf.drain(..take);
            if !self.send(data, left == 0).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn chunked(&mut self) -> Result<bool, ProxyError> {
        let mut dechunk = Dechunk::new();
        let mut payload = 0u64;
        loop {
            let mut p = 0;
            loop {
                let next = dechunk.next(&self.buf, &mut p).map_err(|_| {
                    ProxyError::downstream(ErrorKind::BadBody("malformed chunked body"))
                })?;
                match next {
                    Next::Data(r) => {
                        payload += r.len() as u64;
                        if self.max.is_some_and(|m| payload > m) {
                            return Err(ProxyError::downstream(ErrorKind::BodyTooLarge));
                        }
                        let data = Bytes::copy_from_slice(&self.buf[r]);
                        if !self.send(data, false).await {
                            return Ok(false);
                        }
                    }
                    Next::End(trailers) => {
                        self.buf.drain(..p);
                        let sent = if trailers.is_empty() {
                            self.tx.send_data(Bytes::new(), true)
                        } else {
                            self.tx.send_trailers(trailers)
                        };
                        return Ok(sent.is_ok());
                    }
                    Next::More => break,
                }
            }
            self.buf.drain(..p);
            if !self.read().await? {
                return Err(ProxyError::downstream(ErrorKind::ClientIo(
                    std::io::ErrorKind::UnexpectedEof.into(),
                )));
            }
        }
    }

    /// Reads more of the body from the client; `false` at its end.
    async fn read(&mut self) -> Result<bool, ProxyError> {
        reserve_read_space(&mut self.buf, BODY_CHUNK);
        let buf = std::mem::take(&mut self.buf);
        let Some((res, buf)) = timed(self.read_timeout, self.client.read_more(buf)).await else {
            return Err(ProxyError::downstream(ErrorKind::ClientIo(
                std::io::ErrorKind::TimedOut.into(),
            )));
        };
        self.buf = buf;
        match res {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.moved += n as u64;
                Ok(true)
            }
            Err(e) => Err(io_err(Side::Downstream, e)),
        }
    }

    /// Sends `data` as the upstream's window allows; `false` when the upstream no longer takes
    /// it (its window stayed shut past `write_timeout`, or the stream is gone).
    async fn send(&mut self, mut data: Bytes, end: bool) -> bool {
        if data.is_empty() {
            return self.tx.send_data(data, end).is_ok();
        }
        while !data.is_empty() {
            self.tx.reserve_capacity(data.len());
            let cap = match timed(self.write_timeout, poll_fn(|cx| self.tx.poll_capacity(cx))).await
            {
                Some(Some(Ok(n))) => n,
                _ => return false,
            };
            if cap == 0 {
                continue;
            }
            let chunk = data.split_to(cap.min(data.len()));
            if self.tx.send_data(chunk, end && data.is_empty()).is_err() {
                return false;
            }
        }
        true
    }
}

/// What the response phase needs besides the session's scratch.
struct Down<'a> {
    client: &'a ClientIo<'a>,
    read_timeout: Option<Duration>,
    /// An HTTP/2 client: the body and trailers go to its stream as they are.
    direct: Option<H2Down>,
}

/// Streams the response body to the client in the framing its head announced; trailers go in
/// the chunked trailer section. Returns the bytes written.
async fn relay_body(
    d: &Down<'_>,
    body: &mut RecvStream,
    encode: Encode,
    chunked: bool,
    out: &mut Vec<u8>,
) -> Result<u64, ProxyError> {
    if let Some(h2) = &d.direct {
        return relay_direct(h2, d.read_timeout, body).await;
    }
    let mut written = 0u64;
    loop {
        let next = match timed(d.read_timeout, body.data()).await {
            None => return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false)),
            Some(next) => next,
        };
        let data = match next {
            None => break,
            Some(Err(e)) => return Err(stream_error(&e, false)),
            Some(Ok(data)) => data,
        };
        let n = data.len();
        if encode == Encode::Discard || n == 0 {
            let _ = body.flow_control().release_capacity(n);
            continue;
        }
        out.clear();
        if chunked {
            write_chunk_header(n, out);
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        let (res, b) = d.client.write_all(std::mem::take(out)).await;
        *out = b;
        res.map_err(|e| io_err(Side::Downstream, e))?;
        written += out.len() as u64;
        // Window opens for the upstream only once the bytes reached the client.
        let _ = body.flow_control().release_capacity(n);
    }
    if chunked && encode != Encode::Discard {
        let trailers = poll_fn(|cx| body.poll_trailers(cx))
            .await
            .map_err(|e| stream_error(&e, false))?;
        out.clear();
        write_trailers(trailers.as_ref(), out);
        let (res, b) = d.client.write_all(std::mem::take(out)).await;
        *out = b;
        res.map_err(|e| io_err(Side::Downstream, e))?;
        written += out.len() as u64;
    }
    Ok(written)
}

/// Passes the body and trailers on to an HTTP/2 client's stream as the target sent them: no
/// chunk framing and no copy. Returns the body bytes sent.
async fn relay_direct(
    h2: &H2Down,
    read_timeout: Option<Duration>,
    body: &mut RecvStream,
) -> Result<u64, ProxyError> {
    let mut written = 0u64;
    loop {
        let data = match timed(read_timeout, body.data()).await {
            None => return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false)),
            Some(None) => break,
            Some(Some(Err(e))) => return Err(stream_error(&e, false)),
            Some(Some(Ok(data))) => data,
        };
        let n = data.len();
        if n > 0 {
            h2.send_body(data)
                .await
                .map_err(|e| io_err(Side::Downstream, e))?;
            written += n as u64;
        }
        // Window opens for the upstream only once the client's window took the bytes.
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = poll_fn(|cx| body.poll_trailers(cx))
        .await
        .map_err(|e| stream_error(&e, false))?;
    h2.end(trailers).map_err(|e| io_err(Side::Downstream, e))?;
    Ok(written)
}

/// How the exchange ended, once the upload and the response are no longer polled.
enum Outcome<'r> {
    /// A `handle_response` rule or error page answers instead (the stream is reset).
    Local {
        local: shape::Local<'r>,
        synth: Vec<u8>,
        resp: ResponseHead,
        body_sent: bool,
        upstream_head: bool,
    },
    /// The response reached the client; `rest`: bytes read past the request body.
    Done { keep: bool, rest: Option<Vec<u8>> },
    /// The stream failed before its response head.
    Failed(ProxyError),
    /// The target accepted the extended CONNECT: the stream is the tunnel. `early`: bytes the
    /// client sent after its handshake.
    Switched {
        parts: http::response::Parts,
        body: RecvStream,
        early: Vec<u8>,
    },
}

/// One exchange on `link`, a stream of this worker's HTTP/2 connection to the target.
pub(crate) async fn exchange(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    mut link: H2Stream,
) -> Result<Exchange, Failure> {
    let (ctx, head) = (sess.ctx, sess.head);
    let tr = &a.up.transport;
    let websocket = head.conn.upgrade;
    if websocket {
        // RFC 8441: a WebSocket only, to a target that allows extended CONNECT (known once
        // its first SETTINGS were read).
        timed(
            Some(tr.response_header_timeout.unwrap_or(SETTLE_WAIT)),
            link.settled(),
        )
        .await;
        if !tunnel::wants_websocket(&sess.down.buf, &sess.s.headers)
            || !link.send.is_extended_connect_protocol_enabled()
        {
            return Err(invalid(
                "the HTTP/2 target takes no WebSocket (no SETTINGS_ENABLE_CONNECT_PROTOCOL)",
            )
            .into());
        }
    }
    write_upstream_head(sess, a);
    let scheme = if a.up.targets[a.t].tls {
        "https"
    } else {
        "http"
    };
    let mut request = h2_request(&sess.s.out, scheme)
        .ok_or_else(|| invalid("the request cannot be carried over HTTP/2"))?;
    if websocket {
        tunnel::extended_connect(&mut request);
    }
    let framing = if override_drops_body(a.route) {
        Framing::None
    } else {
        head.framing
    };
    let no_body = matches!(framing, Framing::None | Framing::Length(0));
    // Not sent yet: a connection that went away meanwhile costs nothing but a new attempt.
    let not_sent = |e: h2::Error| {
        ProxyError::upstream(
            ErrorKind::UpstreamIo {
                err: std::io::Error::other(e.to_string()),
                before_response: true,
            },
            true,
        )
    };
    poll_fn(|cx| link.send.poll_ready(cx))
        .await
        .map_err(not_sent)?;
    // An extended CONNECT's stream stays open: it carries the tunnel.
    let end = no_body && !websocket;
    let (response, tx) = link.send.send_request(request, end).map_err(not_sent)?;
    ctx.gen_metrics().upstream_requests[a.u][a.t][link.reused as usize].inc();
    let at = Instant::now();
    // Body bytes that came with the head go first; the rest is read as it comes, and what
    // follows the body (a pipelined request) is handed back to the receive buffer after.
    let pending = sess.down.buf[sess.down.pos..].to_vec();
    sess.down.pos = sess.down.buf.len();
    let pending_len = pending.len() as u64;
    let continued =
        !no_body && head.expect_continue && pending.is_empty() && head.version == Version::Http11;
    if continued {
        let (res, _) = sess
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        res.map_err(|e| io_err(Side::Downstream, e))?;
    }
    let client_head = is_head(&sess.down.buf, head);
    let upstream_head = a
        .route
        .method
        .as_deref()
        .map_or(client_head, |m| m == "HEAD");
    // An HTTP/2 client (not asking for a HEAD) gets the body and trailers beside the head.
    let direct = match &*sess.stream {
        Stream::H2(h2) if !client_head => Some(h2.clone()),
        _ => None,
    };
    let client = ClientIo::new(sess.stream);
    let mut upload = Upload {
        client: &client,
        tx,
        buf: pending,
        read_timeout: ctx.config().limits.idle_timeout,
        write_timeout: tr.write_timeout,
        max: ctx.config().limits.max_request_body,
        moved: 0,
        direct: direct.clone(),
    };
    let d = Down {
        client: &client,
        read_timeout: tr.read_timeout,
        direct,
    };
    let outcome = 'ex: {
        let mut uploaded: Option<Uploaded> = None;
        if no_body {
            uploaded = Some(Uploaded::Done(std::mem::take(&mut upload.buf)));
        }
        let mut up = std::pin::pin!(upload.run(framing));
        if uploaded.is_none() && !client.full_duplex() {
            uploaded = Some(up.as_mut().await.map_err(Failure::from)?);
        }
        let deadline = tr.response_header_timeout.map(|t| at + t);
        let mut response = response;
        let resp = loop {
            let next = timed_at(deadline, next_head(&mut response));
            let r = monoio::select! {
                r = &mut up, if uploaded.is_none() => {
                    uploaded = Some(r.map_err(Failure::from)?);
                    continue;
                }
                r = next => r,
            };
            match r {
                None => return Err(ProxyError::upstream(ErrorKind::UpstreamTimeout, false).into()),
                Some(Err(e)) => break 'ex Outcome::Failed(stream_error(&e, true)),
                Some(Ok(Head::Final(resp))) => break resp,
                Some(Ok(Head::Interim(parts))) => {
                    // Interim responses reach HTTP/1.1 clients (an h2 client's stream passes
                    // them on as HEADERS); after ringway's own 100 the target's would be a
                    // second one.
                    let ours = continued && parts.status == http::StatusCode::CONTINUE;
                    if head.version == Version::Http11 && !ours {
                        let mut b = Vec::with_capacity(256);
                        interim_head(&parts, &mut b);
                        let (res, _) = client.write_all(b).await;
                        res.map_err(|e| io_err(Side::Downstream, e))?;
                    }
                }
            }
        };
        let (parts, mut body) = resp.into_parts();
        let status = parts.status.as_u16();
        let took = at.elapsed();
        let bal = ctx.balancer(a.u);
        note_response(bal.shared(a.t), a.up, bal.passive_enabled(), status, took);
        ctx.gen_metrics().upstream_response_time[a.u].observe(took);
        sess.s.status = status;
        sess.s.target = Some((a.u, a.t));
        if websocket && status == 200 {
            let early = match uploaded {
                Some(Uploaded::Done(rest)) => rest,
                _ => Vec::new(),
            };
            break 'ex Outcome::Switched { parts, body, early };
        }
        let mut synth = Vec::with_capacity(512);
        let to = TrailersTo::of(
            te_trailers(&sess.down.buf, &sess.s.headers),
            d.direct.is_some(),
        );
        synth_head(&parts, body.is_end_stream(), to, &mut synth);
        let resp = match parse_response(
            &synth,
            upstream_head,
            &RESPONSE_LIMITS,
            &mut sess.s.resp_headers,
        ) {
            Parse::Complete(r) => r,
            _ => return Err(invalid("response fields cannot be carried in HTTP/1.1").into()),
        };
        let mut replace = None;
        let decision = if shape::shapes(a.route) {
            let headers = &sess.s.resp_headers;
            shape::decide(a.route, resp.status, |n, w| {
                shape::header_matches(&synth, headers, n, w)
            })
        } else {
            Decision::Pass
        };
        match decision {
            Decision::Pass => {}
            Decision::ReplaceStatus(code) => replace = Some(code),
            Decision::Local(local) => {
                break 'ex Outcome::Local {
                    local,
                    synth,
                    resp,
                    body_sent: matches!(uploaded, Some(Uploaded::Done(_))),
                    upstream_head,
                };
            }
        }
        let http10 = head.version == Version::Http10;
        let encode = match resp.framing {
            _ if client_head => Encode::Discard,
            Framing::Chunked if http10 => Encode::Dechunk,
            _ => Encode::Raw,
        };
        let chunked =
            resp.framing == Framing::Chunked && encode == Encode::Raw && d.direct.is_none();
        let unknown_len_to_10 = http10 && !client_head && resp.framing == Framing::Chunked;
        // Decided before the body: the client connection is kept when the request will
        // have been read whole (checked again after).
        let keep = head.keep_alive() && !ctx.draining() && !unknown_len_to_10;
        let zero_length = upstream_head && !client_head && !matches!(resp.status, 204 | 304);
        let h = ClientHead {
            rbuf: &synth,
            resp: &resp,
            encode,
            zero_length,
            keep,
        };
        let from = HeadFrom {
            ctx,
            buf: &sess.down.buf,
            head,
            client: sess.client,
        };
        write_client_head_from(&from, sess.s, a, a.host(), h);
        if let Some(code) = replace {
            shape::replace_status_line(&mut sess.s.out, code);
            sess.s.status = code;
        }
        if !sess.s.copied.is_empty() {
            shape::insert_fields(&mut sess.s.out, &sess.s.copied);
        }
        let answered = |error| Failure {
            error,
            answered: true,
        };
        let out = &mut sess.s.out;
        let ended = body.is_end_stream();
        let send_down = async {
            let head_len = out.len() as u64;
            // A response that ended with its head goes as it is (gRPC's trailers-only
            // answer must stay one HEADERS frame).
            if let (Some(h2), false) = (&d.direct, ended) {
                h2.frames_body_itself();
            }
            let (res, b) = client.write_all(std::mem::take(out)).await;
            *out = b;
            res.map_err(|e| io_err(Side::Downstream, e))?;
            // A direct response always ends by `relay_direct` (an empty body, or after a HEAD
            // made for a GET, too).
            let with_body = (!matches!(resp.framing, Framing::None) && encode != Encode::Discard)
                || d.direct.is_some();
            let moved = if with_body {
                relay_body(&d, &mut body, encode, chunked, out).await?
            } else {
                0
            };
            Ok::<u64, ProxyError>(head_len + moved)
        };
        let mut send_down = std::pin::pin!(send_down);
        let sent = loop {
            monoio::select! {
                r = &mut up, if uploaded.is_none() => match r {
                    Ok(u) => uploaded = Some(u),
                    Err(e) => break Err(e),
                },
                r = &mut send_down => break r,
            }
        };
        let bytes_out = sent.map_err(answered)?;
        sess.s.bytes_out = bytes_out;
        let rest = match uploaded {
            Some(Uploaded::Done(rest)) => Some(rest),
            _ => None,
        };
        Outcome::Done {
            keep: keep && rest.is_some(),
            rest,
        }
    };
    let Upload { moved, tx, .. } = upload;
    if let Outcome::Switched { parts, body, early } = outcome {
        sess.s.bytes_in += pending_len;
        return switch(sess, a, &parts, (tx, body), link, early).await;
    }
    drop(tx);
    if let Outcome::Failed(mut e) = outcome {
        // A request the target never processed goes again only if all of it is still here:
        // body bytes read from the client since are gone.
        e.retry_safe &= moved == 0;
        if !e.retry_safe {
            sess.s.bytes_in += pending_len + moved;
        }
        return Err(e.into());
    }
    sess.s.bytes_in += pending_len + moved;
    match outcome {
        Outcome::Done { keep, rest } => {
            if let Some(rest) = rest.filter(|r| !r.is_empty()) {
                sess.down.buf.extend_from_slice(&rest);
            }
            Ok(Exchange::Done(keep))
        }
        local => answer_locally(sess, a, local).await,
    }
}

/// Answers the client's WebSocket handshake with its 101 and hands the data path the tunnel's
/// upstream side: an in-memory pair whose far end [`tunnel::pump`] moves to and from the
/// stream. The tunnel counts against the target's connections as an HTTP/1.1 one would (the
/// connector reserved its slot, `H2Stream::tunnel_slot`).
async fn switch(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    parts: &http::response::Parts,
    (tx, rx): (SendStream<Bytes>, RecvStream),
    mut link: H2Stream,
    early: Vec<u8>,
) -> Result<Exchange, Failure> {
    let Some(key) = tunnel::client_key(&sess.down.buf, &sess.s.headers) else {
        return Err(invalid("a WebSocket handshake without Sec-WebSocket-Key").into());
    };
    // The slot the connector reserved for this tunnel against `max_connections`.
    let Some(slot) = link.tunnel_slot.take() else {
        return Err(invalid("a WebSocket stream without a connection slot").into());
    };
    sess.s.status = 101;
    sess.s.out.clear();
    tunnel::switched_head(parts, key, &mut sess.s.out);
    let head = std::mem::take(&mut sess.s.out);
    let (res, head) = sess.stream.write_all(head).await;
    sess.s.bytes_out = head.len() as u64;
    sess.s.out = head;
    res.map_err(|e| Failure {
        error: io_err(Side::Downstream, e),
        answered: true,
    })?;
    let (mut near, far) = crate::net::duplex::pair();
    if !early.is_empty() {
        // Room for it: the pair holds 64 KiB, and the head's read buffer no more than that.
        let _ = near.write_all(&early).await;
    }
    let conn = UpConn {
        stream: Stream::Mem(near),
        slot,
        reused: false,
        tag: None,
    };
    monoio::spawn(tunnel::pump(
        far,
        tx,
        rx,
        link,
        a.up.transport.write_timeout,
    ));
    Ok(Exchange::Upgraded(conn))
}

/// A `handle_response` rule's or error page's answer in place of the upstream response.
async fn answer_locally(
    sess: &mut Session<'_>,
    a: &Attempt<'_>,
    outcome: Outcome<'_>,
) -> Result<Exchange, Failure> {
    let Outcome::Local {
        local,
        synth,
        resp,
        body_sent,
        upstream_head,
    } = outcome
    else {
        return Ok(Exchange::Done(false));
    };
    let first = Answered {
        route: a.route,
        u: a.u,
        t: a.t,
        keepalive: false,
        conn: None,
        ub: RecvBuf {
            buf: synth,
            pos: 0,
            floor: 0,
        },
        resp: &resp,
        body_sent,
        upstream_head,
    };
    shape::answer(sess, first, local).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_streams_and_streams_past_a_graceful_goaway_are_unprocessed() {
        use Reason as R;
        // (reason, reset, go_away, remote, unprocessed)
        let cases = [
            (Some(R::REFUSED_STREAM), true, false, true, true),
            (Some(R::NO_ERROR), false, true, true, true),
            (Some(R::REFUSED_STREAM), true, false, false, false),
            (Some(R::CANCEL), true, false, true, false),
            (Some(R::INTERNAL_ERROR), true, false, true, false),
            (Some(R::PROTOCOL_ERROR), false, true, true, false),
            (None, false, false, false, false),
        ];
        for (reason, reset, go_away, remote, want) in cases {
            assert_eq!(
                unprocessed(reason, reset, go_away, remote),
                want,
                "{reason:?} reset={reset} go_away={go_away} remote={remote}"
            );
        }
    }

    #[test]
    fn an_http1_head_becomes_an_h2_request_without_connection_fields() {
        let head = b"POST /pkg.Svc/Call?x=1 HTTP/1.1\r\nHost: api.internal:8080\r\n\
            Content-Type: application/grpc\r\nTE: trailers\r\nConnection: close\r\n\
            Transfer-Encoding: chunked\r\nExpect: 100-continue\r\ngrpc-timeout: 5S\r\n\
            X-Forwarded-For: 10.0.0.1\r\n\r\n";
        let req = h2_request(head, "http").expect("maps");
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "http://api.internal:8080/pkg.Svc/Call?x=1"
        );
        let h = req.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-timeout"], "5S");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["te"], "trailers");
        for gone in ["host", "connection", "transfer-encoding", "expect"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
        // Asterisk-form and absolute-form targets have no h2 path of their own.
        assert!(h2_request(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "http").is_none());
    }

    #[test]
    fn a_websocket_handshake_maps_to_an_extended_connect_without_its_key() {
        let head = b"GET /chat?x=1 HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\n\
            Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";
        let mut req = h2_request(head, "http").expect("maps");
        tunnel::extended_connect(&mut req);
        assert_eq!(req.method(), http::Method::CONNECT);
        assert_eq!(req.uri().to_string(), "http://a.test/chat?x=1");
        assert_eq!(
            req.extensions()
                .get::<h2::ext::Protocol>()
                .map(|p| p.as_str()),
            Some("websocket")
        );
        let h = req.headers();
        assert_eq!(h["sec-websocket-protocol"], "chat");
        assert_eq!(h["sec-websocket-version"], "13");
        for gone in ["sec-websocket-key", "te", "upgrade", "connection"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn a_response_with_a_length_is_chunked_only_when_its_trailers_can_reach_the_client() {
        use TrailersTo::*;
        let resp = |headers: &[(&str, &str)]| {
            let mut b = http::Response::builder().status(200);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let plain: &[(&str, &str)] = &[("content-length", "5")];
        let announced: &[(&str, &str)] = &[("content-length", "5"), ("trailer", "x-sum")];
        let grpc: &[(&str, &str)] = &[
            ("content-length", "5"),
            ("content-type", "application/grpc"),
        ];
        // (fields, stream ended with the head, what the client takes, chunked)
        let cases = [
            (plain, false, Dropped, false),
            (plain, false, Any, true),
            (plain, false, Direct, false),
            (announced, false, Dropped, false),
            (announced, false, Any, true),
            (announced, false, Direct, false),
            (grpc, false, Dropped, true),
            (grpc, false, Direct, false),
            // Nothing can follow a stream that ended with its head.
            (announced, true, Any, false),
        ];
        for (fields, end, to, chunked) in cases {
            let mut out = Vec::new();
            synth_head(&resp(fields), end, to, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text.contains("transfer-encoding: chunked"),
                chunked,
                "{to:?} {text}"
            );
            assert_eq!(
                text.contains("content-length: 5"),
                !chunked,
                "{to:?} {text}"
            );
        }
        // Who takes what: an h2 client all of them, beside the body; an HTTP/1.1 client
        // those of a chunked body, when it sent TE: trailers.
        assert_eq!(TrailersTo::of(true, false), Any);
        assert_eq!(TrailersTo::of(true, true), Direct);
        assert_eq!(TrailersTo::of(false, true), Direct);
        assert_eq!(TrailersTo::of(false, false), Dropped);
    }

    #[test]
    fn te_lists_trailers_among_other_codings() {
        use crate::http1::parse::{parse_request, HeadLimits, Parse};
        let limits = HeadLimits {
            max_head_bytes: 4096,
            max_uri_bytes: 4096,
            max_headers: 16,
        };
        for (te, want) in [
            ("trailers", true),
            ("gzip, Trailers", true),
            ("trailers;q=0.5", true),
            ("gzip", false),
            ("trailersx", false),
        ] {
            let text = format!("GET / HTTP/1.1\r\nHost: a\r\nTE: {te}\r\n\r\n");
            let mut headers = Vec::new();
            let Parse::Complete(_) = parse_request(text.as_bytes(), &limits, &mut headers) else {
                panic!("unparsed");
            };
            assert_eq!(te_trailers(text.as_bytes(), &headers), want, "{te}");
        }
    }

    #[test]
    fn an_h2_response_gets_http1_framing_that_keeps_its_trailers() {
        let resp = |headers: &[(&str, &str)]| {
            let mut b = http::Response::builder().status(200);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Fields, bool, &str); 5] = [
            (
                &[("content-type", "application/grpc")],
                false,
                "transfer-encoding: chunked\r\n",
            ),
            (&[("content-length", "5")], false, "content-length: 5\r\n"),
            // Trailers-only (a gRPC error): the status rides in the headers, no body.
            (&[("grpc-status", "5")], true, "content-length: 0\r\n"),
            (&[("content-length", "0")], true, "content-length: 0\r\n"),
            // A gRPC response's trailers need chunked framing, whatever its length.
            (
                &[
                    ("content-type", "application/grpc"),
                    ("content-length", "9"),
                ],
                false,
                "transfer-encoding: chunked\r\n",
            ),
        ];
        for (headers, end, want) in cases {
            let mut out = Vec::new();
            synth_head(&resp(headers), end, TrailersTo::Dropped, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
            assert!(text.ends_with(&format!("{want}\r\n")), "{text}");
            assert_eq!(
                text.matches("content-length").count() + text.matches("chunked").count(),
                1,
                "{text}"
            );
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let mut out = Vec::new();
        write_trailers(Some(&trailers), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\ngrpc-message: ok\r\n\r\n");
        out.clear();
        write_trailers(None, &mut out);
        assert_eq!(out, b"0\r\n\r\n");
    }
}
