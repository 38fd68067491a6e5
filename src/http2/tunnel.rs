//! WebSocket handshakes to HTTP/2 targets (RFC 8441): the HTTP/1.1 `Upgrade: websocket`
//! request the data path holds (from an HTTP/1.1 client, or an h2 client's own extended
//! CONNECT through `http2::stream`) goes up as an extended CONNECT with `:protocol
//! websocket`, when the target announced SETTINGS_ENABLE_CONNECT_PROTOCOL. Its 200 becomes the
//! client's 101 (with the Sec-WebSocket-Accept the client's key calls for: the key itself is
//! not sent, RFC 8441 §5), and the stream's DATA the upgraded connection's bytes. The tunnel
//! then runs as any upgrade does (`l4::upgrade`, `stream_timeout`, `stream_close_delay`): its
//! upstream side is an in-memory pair whose far end a task pumps to and from the h2 stream.

use std::future::poll_fn;
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};

use super::client::H2Stream;
use crate::http1::parse::{HeaderIdx, HeaderKind};
use crate::net::duplex::End;
use crate::proxy::session::{timed, BODY_CHUNK};

/// Fields of the target's 200 the 101 does not carry: connection-specific ones (which HTTP/2
/// forbids anyway), a length (a 101 has no body), and an accept (ours answers the client's key).
const NOT_COPIED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
    "sec-websocket-accept",
];

/// Whether the request's Upgrade field asks for a WebSocket (the only upgrade RFC 8441 maps).
pub(super) fn wants_websocket(buf: &[u8], headers: &[HeaderIdx]) -> bool {
    headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Upgrade)
        .any(|h| {
            h.value
                .get(buf)
                .trim_ascii()
                .eq_ignore_ascii_case(b"websocket")
        })
}

/// The client's Sec-WebSocket-Key, the one its 101 must answer.
pub(super) fn client_key<'a>(buf: &'a [u8], headers: &[HeaderIdx]) -> Option<&'a str> {
    let h = headers
        .iter()
        .find(|h| h.name.get(buf).eq_ignore_ascii_case(b"sec-websocket-key"))?;
    std::str::from_utf8(h.value.get(buf).trim_ascii()).ok()
}

/// Turns the mapped GET into RFC 8441's extended CONNECT: `:protocol websocket` (its
/// `:scheme`, `:path` and `:authority` stay); Sec-WebSocket-Key is not used over HTTP/2, nor
/// TE (the stream carries no response trailers).
pub(super) fn extended_connect(req: &mut http::Request<()>) {
    *req.method_mut() = http::Method::CONNECT;
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let h = req.headers_mut();
    h.remove("sec-websocket-key");
    h.remove(http::header::TE);
}

/// The 101 the client gets for the target's 200: the target's fields (Sec-WebSocket-Protocol,
/// -Extensions...) with the upgrade fields HTTP/1.1 needs.
pub(super) fn switched_head(parts: &http::response::Parts, key: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if NOT_COPIED.contains(&n) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let accept = super::websocket::accept_for(key);
    let _ = write!(
        out,
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
}

/// Moves bytes between `far` (the tunnel's upstream side) and the h2 stream until both
/// directions ended; each end is passed on (END_STREAM one way, EOF the other). `link` keeps
/// the stream counted open on its connection meanwhile. A tunnel dropped before its stream
/// ended resets it (h2 sends RST_STREAM CANCEL when its handles drop).
pub(super) async fn pump(
    far: End,
    mut tx: SendStream<Bytes>,
    mut rx: RecvStream,
    link: H2Stream,
    write_timeout: Option<Duration>,
) {
    let (mut rd, mut wr) = far.split();
    let up = async {
        let mut buf = Vec::with_capacity(BODY_CHUNK);
        loop {
            buf.clear();
            match rd.read_more(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send_data(Bytes::new(), true);
                    return;
                }
                Ok(_) => {}
            }
            let mut data = Bytes::copy_from_slice(&buf);
            while !data.is_empty() {
                tx.reserve_capacity(data.len());
                let cap = match timed(write_timeout, poll_fn(|cx| tx.poll_capacity(cx))).await {
                    Some(Some(Ok(n))) => n,
                    _ => return,
                };
                let chunk = data.split_to(cap.min(data.len()));
                if tx.send_data(chunk, false).is_err() {
                    return;
                }
            }
        }
    };
    let down = async {
        while let Some(Ok(data)) = rx.data().await {
            let n = data.len();
            if wr.write_all(&data).await.is_err() {
                break;
            }
            // The target's window opens once the bytes are in the tunnel's buffer.
            let _ = rx.flow_control().release_capacity(n);
        }
        wr.shutdown();
    };
    monoio::join!(up, down);
    drop(link);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_200_becomes_a_101_with_the_accept_the_clients_key_calls_for() {
        let parts = http::Response::builder()
            .status(200)
            .header("sec-websocket-protocol", "chat")
            .header("content-length", "0")
            .header("sec-websocket-accept", "forged")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut out = Vec::new();
        switched_head(&parts, "dGhlIHNhbXBsZSBub25jZQ==", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-protocol: chat\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }
}
