//! The client side of a TLS handshake over a socket, shared by TLS targets
//! (`upstream::connect`) and `https://` forward proxies (`upstream::forward`).

use crate::net::stream::Sock;

/// Drives a client handshake to its end. Unlike monoio-rustls's own, a refusal (say, of the
/// server's certificate) sends its alert before the connection closes, so the server learns
/// why instead of seeing a bare end of stream.
pub async fn handshake(
    mut tcp: Sock,
    mut tls: rustls::ClientConnection,
) -> std::io::Result<(Sock, rustls::ClientConnection)> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        while tls.wants_write() {
            buf.clear();
            tls.write_tls(&mut buf)?;
            let (res, b) = tcp.write_all(buf).await;
            buf = b;
            res?;
        }
        if !tls.is_handshaking() {
            return Ok((tcp, tls));
        }
        buf.clear();
        let (res, b) = tcp.read(buf).await;
        buf = b;
        if res? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // Everything read goes to rustls, records past the handshake included.
        let mut rest = &buf[..];
        while !rest.is_empty() {
            tls.read_tls(&mut rest)?;
            if let Err(e) = tls.process_new_packets() {
                // The alert rustls queued for the failure.
                let mut alert = Vec::new();
                let _ = tls.write_tls(&mut alert);
                let _ = tcp.write_all(alert).await;
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
            }
        }
    }
}
