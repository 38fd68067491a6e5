//! One HTTP/2 stream, served by the HTTP/1 data path.
//!
//! The stream's request head is written as an HTTP/1.1 head straight into the data path's
//! receive buffer, and `proxy::serve_h1` serves it as a one-request connection exactly as it
//! serves a client connection (routes, limits, balancers, retries, header rules, access log,
//! metrics, timeouts). Its client is `Stream::H2` (`http2::down`): its reads take the request
//! body from the stream and its writes go out as the response's frames, inside the data path's
//! own calls, with no second task and no copy through a pair. Benefit: one data path, so
//! HTTP/2 can never drift from HTTP/1. Cost, per stream: the request head is written and parsed
//! once more, the response head written as text and split back into fields, and the data
//! path's per-connection state built per stream.
//!
//! A WebSocket's extended CONNECT (RFC 8441) still goes through an in-memory pair
//! (`net::duplex`): after the upgrade its tunnel relay needs a byte stream both ways, and the
//! response relay below reads the data path's HTTP/1.1 answer back out of the pair.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};

use super::chunks::{Dechunk, Next};
use super::down::Down;
use super::head::{self, BodyFraming};
use super::Conn;
use crate::http1::body::write_chunk_header;
use crate::http1::forward::Client;
use crate::http1::parse::{parse_response, Framing, Parse};
use crate::net::duplex;
use crate::net::stream::{reserve_read_space, Stream};
use crate::proxy::session::{timed, RecvBuf, BODY_CHUNK, INITIAL_BUF, RESPONSE_LIMITS};

/// The far end of the in-memory pair: what the data path answers, and where the request goes.
type Rd = duplex::End;
type Wr = duplex::End;

/// How a stream ended, for the connection's reset meter.
enum End {
    Done,
    /// The client reset the stream.
    ResetByClient,
    /// The response could not be completed (the stream was reset or answered 502).
    Aborted,
}

/// Serves one stream to completion.
pub(super) async fn serve(
    conn: Rc<Conn>,
    req: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let (parts, body) = req.into_parts();
    let mut respond = respond;
    // The head goes straight into the data path's receive buffer, as if read from a socket:
    // only body bytes cross the in-memory pair. Without a body, nothing more is read into it.
    let cap = if body.is_end_stream() {
        HEAD_BUF
    } else {
        INITIAL_BUF
    };
    let mut head = Vec::with_capacity(cap);
    // Extended CONNECT (RFC 8441): the Sec-WebSocket-Accept the upstream must answer with.
    let mut accept = None;
    let mapped = if head::is_websocket(&parts) {
        let key = super::websocket::new_key();
        accept = Some(super::websocket::accept_for(&key));
        head::websocket_head(&parts, &key, &mut head).map(|()| BodyFraming::Tunnel)
    } else {
        head::request_head(&parts, body.is_end_stream(), &mut head)
    };
    let framing = match mapped {
        Ok(f) => f,
        Err(status) => {
            answer(&mut respond, status);
            return;
        }
    };
    let c = &conn.client;
    let client = Client {
        peer: c.peer,
        trusted: c.trusted,
        ip_text: c.ip_text.clone(),
        scheme: c.scheme,
        local: c.local,
    };
    let down = RecvBuf {
        buf: head,
        pos: 0,
        floor: 0,
    };
    if accept.is_none() {
        let head_request = parts.method == http::Method::HEAD;
        return direct(&conn, body, framing, respond, head_request, down, client).await;
    }
    let (near, far) = duplex::pair();
    let proxy = crate::proxy::serve_h1(
        conn.ctx.clone(),
        conn.socket,
        conn.listener,
        Stream::Mem(near),
        down,
        client,
    );
    let (rd, wr) = far.split();
    let head_request = parts.method == http::Method::HEAD;
    let proxied = async {
        proxy.await;
        // The data path's in-flight mark ends with its response written into the pair; this
        // one lasts until the stream has it too, so a drain does not cut it off.
        conn.ctx.active()
    };
    let response = async {
        let mut proxied = std::pin::pin!(proxied);
        let relay = relay_response(&conn, rd, respond, head_request, accept.as_deref());
        let mut relay = std::pin::pin!(relay);
        monoio::select! {
            in_flight = &mut proxied => {
                let end = relay.await;
                drop(in_flight);
                end
            }
            end = &mut relay => {
                // A complete response: the data path is finishing up. Otherwise it is
                // abandoned (its upstream connection closes), as for a client that left.
                if let End::Done = end {
                    drop(proxied.await);
                }
                end
            }
        }
    };
    let mut wr = wr;
    let upload = async {
        let end = send_request(&mut wr, body, framing).await;
        // The request is over (sent whole, or never will be): the data path reads its end
        // instead of waiting for more (a lingering close after an early answer ends at once).
        wr.shutdown();
        if let End::ResetByClient = end {
            conn.note_reset();
        }
    };
    let mut response = std::pin::pin!(response);
    let mut upload = std::pin::pin!(upload);
    let (end, uploaded) = monoio::select! {
        end = &mut response => (end, false),
        _ = &mut upload => (response.await, true),
    };
    if let End::ResetByClient = end {
        conn.note_reset();
    }
    if !uploaded {
        // Answered before the whole request arrived (413, 404 of an upload): read a little
        // more of it, so a client still sending is not cut off by a reset (curl reports a
        // stream error).
        let _ = monoio::time::timeout(LINGER, upload).await;
    }
}

/// Serves a stream with the data path reading and writing it directly (`http2::down`).
async fn direct(
    conn: &Conn,
    body: RecvStream,
    framing: BodyFraming,
    respond: SendResponse<Bytes>,
    head_request: bool,
    down: RecvBuf,
    client: Client,
) {
    let stall = conn.ctx.config().limits.idle_timeout;
    let h2 = Down::new(body, framing, respond, head_request, stall);
    let proxy = crate::proxy::serve_h1(
        conn.ctx.clone(),
        conn.socket,
        conn.listener,
        Stream::H2(h2.clone()),
        down,
        client,
    );
    // A client reset while the data path waits (on an upstream, mostly) ends the stream now:
    // dropping the data path abandons its upstream connection, as for a client that left.
    let reset = poll_fn(|cx| h2.poll_reset(cx));
    let finished = monoio::select! {
        _ = proxy => true,
        _ = reset => false,
    };
    let ended = h2.finish();
    if ended.reset_by_client {
        conn.note_reset();
    }
    if finished && ended.unread {
        // Answered before the whole request arrived (413, 404 of an upload): read a little
        // more of it, so a client still sending is not cut off by a reset (curl reports a
        // stream error).
        let _ = monoio::time::timeout(LINGER, h2.discard(LINGER_BYTES)).await;
    }
}

/// The data path's receive buffer for a request without a body: a typical head (a larger
/// one grows it).
const HEAD_BUF: usize = 2048;

/// First receive buffer for the data path's response: a small response's head and body.
const RESPONSE_BUF: usize = 4096;

/// How long, and how many request body bytes, a stream answered early keeps reading.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// A local answer on the stream (no body): for requests HTTP/1.1 cannot carry.
fn answer(respond: &mut SendResponse<Bytes>, status: u16) {
    let mut resp = http::Response::new(());
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let _ = respond.send_response(resp, true);
}

/// Streams the request body into the pair, releasing flow-control window only for bytes the
/// data path has taken. Returns when the body is sent or cannot be.
async fn send_request(wr: &mut Wr, mut body: RecvStream, framing: BodyFraming) -> End {
    if framing == BodyFraming::None {
        return End::Done;
    }
    // Chunk framing (chunked bodies only).
    let mut out = Vec::new();
    loop {
        let bytes = match body.data().await {
            None => break,
            Some(Ok(b)) => b,
            Some(Err(e)) => return client_end(&e),
        };
        let n = bytes.len();
        let res = if framing == BodyFraming::Chunked {
            if n == 0 {
                continue;
            }
            out.clear();
            write_chunk_header(n, &mut out);
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b"\r\n");
            wr.write_all(&out).await
        } else {
            wr.write_all(&bytes).await
        };
        let _ = body.flow_control().release_capacity(n);
        if res.is_err() {
            // The data path stopped reading (it answered early, or gave up).
            return discard(body).await;
        }
    }
    if framing == BodyFraming::Chunked {
        out.clear();
        out.extend_from_slice(b"0\r\n");
        match poll_fn(|cx| body.poll_trailers(cx)).await {
            Ok(Some(trailers)) => {
                for (name, value) in &trailers {
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
            Ok(None) => {}
            Err(e) => return client_end(&e),
        }
        out.extend_from_slice(b"\r\n");
        let _ = wr.write_all(&out).await;
    }
    End::Done
}

/// Reads and drops what is left of a request body, up to `LINGER_BYTES`.
async fn discard(mut body: RecvStream) -> End {
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        match body.data().await {
            None => break,
            Some(Ok(b)) => {
                dropped += b.len();
                let _ = body.flow_control().release_capacity(b.len());
            }
            Some(Err(e)) => return client_end(&e),
        }
    }
    End::Done
}

/// A response cut short by an h2 error: by the client's reset, or by the connection.
fn aborted(e: &h2::Error) -> End {
    match client_end(e) {
        End::Done => End::Aborted,
        end => end,
    }
}

fn client_end(e: &h2::Error) -> End {
    if e.is_reset() && e.is_remote() {
        End::ResetByClient
    } else {
        End::Done
    }
}

/// Reads the data path's HTTP/1.1 response from the socket pair and sends it on the stream.
/// `accept`: the request was a WebSocket handshake, answered by this Sec-WebSocket-Accept.
async fn relay_response(
    conn: &Conn,
    mut rd: Rd,
    mut respond: SendResponse<Bytes>,
    head_request: bool,
    accept: Option<&str>,
) -> End {
    // Grown by `read_more` when a head or body needs more.
    let mut buf: Vec<u8> = Vec::with_capacity(RESPONSE_BUF);
    let mut idx = Vec::with_capacity(32);
    let resp = loop {
        match parse_response(&buf, head_request, &RESPONSE_LIMITS, &mut idx) {
            Parse::Complete(r) if r.status == 101 && accept.is_some() => break r,
            // Interim responses (100 Continue, 103 Early Hints) are passed on, as to HTTP/1.1.
            Parse::Complete(r) if r.status < 200 => {
                if let Some(interim) = head::response(&buf, &r, &idx) {
                    let _ = respond.send_informational(interim);
                }
                buf.drain(..r.head_len);
                continue;
            }
            Parse::Complete(r) => break r,
            Parse::Invalid(_) => {
                answer(&mut respond, 502);
                return End::Aborted;
            }
            Parse::Partial => {}
        }
        // While the data path works, a client reset ends the stream (and with it the request).
        let read = read_more(&mut rd, buf, RESPONSE_LIMITS.max_head_bytes);
        let reset = poll_fn(|cx| respond.poll_reset(cx));
        let (res, b) = monoio::select! {
            r = read => r,
            reason = reset => {
                return match reason {
                    Ok(_) => End::ResetByClient,
                    Err(_) => End::Aborted,
                };
            }
        };
        buf = b;
        match res {
            Ok(0) | Err(_) => {
                // The data path closed without answering: nothing honest to send but a reset.
                respond.send_reset(Reason::INTERNAL_ERROR);
                return End::Aborted;
            }
            Ok(_) => {}
        }
    };
    let tunnel = match accept.map(|a| head::handshake(&buf, &resp, &idx, a)) {
        Some(head::Handshake::Switched(ok)) => Some(ok),
        Some(head::Handshake::Broken) => {
            answer(&mut respond, 502);
            return End::Aborted;
        }
        Some(head::Handshake::Refused) | None => None,
    };
    let head = match tunnel {
        // The upgraded connection's bytes, until the upstream closes it.
        Some(ok) => ok,
        None => match head::response(&buf, &resp, &idx) {
            Some(head) => head,
            None => {
                answer(&mut respond, 502);
                return End::Aborted;
            }
        },
    };
    let framing = if head_request {
        Framing::None
    } else if resp.status == 101 {
        Framing::CloseDelimited
    } else {
        resp.framing
    };
    let end_now = matches!(framing, Framing::None | Framing::Length(0));
    let mut tx = match respond.send_response(head, end_now) {
        Ok(tx) => tx,
        Err(e) => return aborted(&e),
    };
    if end_now {
        return End::Done;
    }
    buf.drain(..resp.head_len);
    let mut body = Body {
        conn,
        rd,
        buf,
        tx: &mut tx,
    };
    match body.relay(framing).await {
        Ok(()) => End::Done,
        Err(BodyEnd::Client(e)) => aborted(&e),
        Err(BodyEnd::Stalled) => {
            tracing::debug!("HTTP/2 client kept its window shut past idle_timeout; stream reset");
            tx.send_reset(Reason::CANCEL);
            End::Aborted
        }
        Err(BodyEnd::Truncated) => {
            tx.send_reset(Reason::INTERNAL_ERROR);
            End::Aborted
        }
    }
}

enum BodyEnd {
    Client(h2::Error),
    /// The client's window stayed shut for `limits.idle_timeout`.
    Stalled,
    /// The response ended before its framing said it would.
    Truncated,
}

/// A response body on its way from the socket pair to the stream.
struct Body<'a> {
    conn: &'a Conn,
    rd: Rd,
    /// Response bytes read but not yet sent.
    buf: Vec<u8>,
    tx: &'a mut SendStream<Bytes>,
}

impl Body<'_> {
    async fn relay(&mut self, framing: Framing) -> Result<(), BodyEnd> {
        match framing {
            Framing::None => self.send(Bytes::new(), true).await,
            Framing::Length(n) => self.length(n).await,
            Framing::Chunked => self.chunked().await,
            Framing::CloseDelimited => self.until_close().await,
        }
    }

    async fn length(&mut self, n: u64) -> Result<(), BodyEnd> {
        let mut left = n;
        loop {
            let take = (self.buf.len() as u64).min(left) as usize;
            left -= take as u64;
            if take > 0 {
                let data = Bytes::copy_from_slice(&self.buf[..take]);
                self.buf.drain(..take);
                self.send(data, left == 0).await?;
            }
            if left == 0 {
                return Ok(());
            }
            if !self.read().await? {
                return Err(BodyEnd::Truncated);
            }
        }
    }

    async fn until_close(&mut self) -> Result<(), BodyEnd> {
        loop {
            if !self.buf.is_empty() {
                let data = Bytes::copy_from_slice(&self.buf);
                self.buf.clear();
                self.send(data, false).await?;
            }
            if !self.read().await? {
                return self.send(Bytes::new(), true).await;
            }
        }
    }

    /// De-chunks the body; the trailer section becomes HTTP/2 trailers.
    async fn chunked(&mut self) -> Result<(), BodyEnd> {
        let mut dechunk = Dechunk::new();
        loop {
            let mut p = 0;
            loop {
                match dechunk.next(&self.buf, &mut p) {
                    Err(_) => return Err(BodyEnd::Truncated),
                    Ok(Next::Data(r)) => {
                        let data = Bytes::copy_from_slice(&self.buf[r]);
                        self.send(data, false).await?;
                    }
                    Ok(Next::End(trailers)) => {
                        self.buf.drain(..p);
                        if trailers.is_empty() {
                            return self.send(Bytes::new(), true).await;
                        }
                        return self.tx.send_trailers(trailers).map_err(BodyEnd::Client);
                    }
                    Ok(Next::More) => break,
                }
            }
            self.buf.drain(..p);
            if !self.read().await? {
                return Err(BodyEnd::Truncated);
            }
        }
    }

    /// Reads more of the response; `false` at its end.
    async fn read(&mut self) -> Result<bool, BodyEnd> {
        let buf = std::mem::take(&mut self.buf);
        // A client reset while the upstream is quiet (a gRPC stream waiting) ends the stream
        // now, so the data path and its upstream stream are cancelled too.
        let read = read_more(&mut self.rd, buf, BODY_CHUNK);
        let tx = &mut *self.tx;
        let reset = poll_fn(|cx| tx.poll_reset(cx));
        let (res, buf) = monoio::select! {
            r = read => r,
            reason = reset => {
                return Err(BodyEnd::Client(match reason {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                }));
            }
        };
        self.buf = buf;
        match res {
            Ok(0) | Err(_) => Ok(false),
            Ok(_) => Ok(true),
        }
    }

    /// Sends `data` as the client's window allows; a window that stays shut for
    /// `limits.idle_timeout` ends the stream rather than pinning its buffers.
    async fn send(&mut self, mut data: Bytes, end: bool) -> Result<(), BodyEnd> {
        if data.is_empty() {
            return self.tx.send_data(data, end).map_err(BodyEnd::Client);
        }
        let idle = self.conn.ctx.config().limits.idle_timeout;
        while !data.is_empty() {
            self.tx.reserve_capacity(data.len());
            // Window already open (a small response, mostly): no timer to arm and cancel.
            let ready = poll_fn(|cx| Poll::Ready(self.tx.poll_capacity(cx))).await;
            let polled = match ready {
                Poll::Ready(r) => Some(r),
                Poll::Pending => timed(idle, poll_fn(|cx| self.tx.poll_capacity(cx))).await,
            };
            let cap = match polled {
                None => return Err(BodyEnd::Stalled),
                Some(None) => return Err(BodyEnd::Truncated),
                Some(Some(Err(e))) => return Err(BodyEnd::Client(e)),
                Some(Some(Ok(n))) => n,
            };
            if cap == 0 {
                continue;
            }
            let chunk = data.split_to(cap.min(data.len()));
            self.tx
                .send_data(chunk, end && data.is_empty())
                .map_err(BodyEnd::Client)?;
        }
        Ok(())
    }
}

/// Reads into the spare capacity of `buf` (grown up to `cap`).
async fn read_more(rd: &mut Rd, mut buf: Vec<u8>, cap: usize) -> (std::io::Result<usize>, Vec<u8>) {
    let cap = cap.max(buf.len() + 1);
    reserve_read_space(&mut buf, cap);
    let res = rd.read_more(&mut buf).await;
    (res, buf)
}
