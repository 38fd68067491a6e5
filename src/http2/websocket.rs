//! WebSocket over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` becomes an
//! HTTP/1.1 WebSocket handshake to the upstream (`head::websocket_head`), its 101 a 200 on the
//! stream (`head::handshake`), and the stream's DATA the upgraded connection's bytes, relayed by
//! the same tunnel as an HTTP/1 upgrade (`l4::upgrade`).

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

use crate::config::{Action, Config, ListenerKind};

/// RFC 6455 §1.3: what the server appends to the key before hashing it.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether the listener announces SETTINGS_ENABLE_CONNECT_PROTOCOL: only where some route
/// proxies to an HTTP upstream (a `respond` route or a FastCGI application cannot upgrade).
pub(crate) fn offered(config: &Config, listener: usize) -> bool {
    let ListenerKind::Http { routes } = &config.listeners[listener].kind else {
        return false;
    };
    routes.iter().any(|r| match r.action {
        Action::Proxy(u) => config.upstreams[u].transport.fastcgi.is_none(),
        Action::Respond(_) => false,
    })
}

/// A fresh Sec-WebSocket-Key: base64 of 16 random bytes (RFC 6455 §4.1).
pub(crate) fn new_key() -> String {
    let mut nonce = [0u8; 16];
    if getrandom::getrandom(&mut nonce).is_err() {
        // The key is a handshake nonce, not a secret: the clock still makes it unique enough.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        nonce = t.to_le_bytes();
    }
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The Sec-WebSocket-Accept a server must answer `key` with.
pub(crate) fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_is_rfc_6455s_example_and_keys_are_fresh_16_byte_nonces() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 16);
    }
}
