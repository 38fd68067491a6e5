//! Forward proxies in front of TCP targets (`transport.forward_proxy_url`): an HTTP CONNECT
//! tunnel (`http://`), the same inside TLS to the proxy (`https://`), or a SOCKS5 CONNECT
//! (`socks5://`). Credentials in the URL go as `Proxy-Authorization: Basic` or RFC 1929.
//! A refusal (407 for wrong credentials) is a failed dial: 502, with the proxy's answer logged.

use std::cell::OnceCell;
use std::io;
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::config::{ForwardProxy, ProxyKind, UpstreamTls};
use crate::net::stream::Sock;
use crate::upstream::socks;
use crate::worker::ctx::WorkerCtx;

/// Largest answer a forward proxy may give to CONNECT.
const CONNECT_ANSWER_MAX: usize = 8 * 1024;

/// The target a tunnel is asked for: its host as written (a name goes to the proxy, which
/// resolves it) and port.
pub struct Through<'a> {
    pub host: &'a str,
    pub port: u16,
}

impl Through<'_> {
    /// `host:port`, brackets around an IPv6 literal.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Opens the tunnel to `to` through `fp`, already connected on `tcp`; the tunnel's stream.
pub async fn open(
    ctx: &WorkerCtx,
    u: usize,
    fp: &ForwardProxy,
    mut tcp: monoio::net::TcpStream,
    to: &Through<'_>,
) -> io::Result<Sock> {
    match fp.kind {
        ProxyKind::Http => {
            connect_tunnel(&mut tcp, &to.authority(), fp.credentials.as_ref()).await?;
            Ok(Sock::Tcp(tcp))
        }
        ProxyKind::Socks5 => {
            let dest = socks::Dest::of(to.host, to.port);
            socks::handshake(&mut tcp, &dest, fp.credentials.as_ref()).await?;
            Ok(Sock::Tcp(tcp))
        }
        ProxyKind::Https => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
            let name = rustls::pki_types::ServerName::try_from(fp.host.clone())
                .map_err(|e| io::Error::other(format!("forward proxy name: {e}")))?;
            let session = rustls::ClientConnection::new(proxy_tls(ctx, u)?, name)
                .map_err(io::Error::other)?;
            let (sock, session) = crate::upstream::handshake::handshake(Sock::Tcp(tcp), session)
                .await
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "TLS to the forward proxy failed: {}",
                            crate::net::tls::failure_reason(&e)
                        ),
                    )
                })?;
            let mut tls = crate::net::tls_stream::TlsClient::new(sock, session);
            connect_tunnel(&mut tls, &to.authority(), fp.credentials.as_ref()).await?;
            Ok(Sock::Tunnel(Box::new(tls), fd))
        }
    }
}

thread_local! {
    /// The system roots, for an `https://` proxy of an upstream with no TLS settings: built
    /// once per worker (reading the trust store is slow).
    static SYSTEM_TLS: OnceCell<Option<Arc<rustls::ClientConfig>>> = const { OnceCell::new() };
}

/// The TLS client config toward an `https://` proxy: the upstream's TLS settings (roots, client
/// certificate, verification), else the system roots; ALPN offers only HTTP/1.1, which
/// CONNECT needs.
fn proxy_tls(ctx: &WorkerCtx, u: usize) -> io::Result<Arc<rustls::ClientConfig>> {
    let base = match ctx.upstream_tls(u) {
        Some(c) => c.clone(),
        None => SYSTEM_TLS
            .with(|c| {
                c.get_or_init(|| {
                    crate::net::tls::client_config(&UpstreamTls::default())
                        .ok()
                        .map(Arc::new)
                })
                .clone()
            })
            .ok_or_else(|| io::Error::other("no TLS client config for the forward proxy"))?,
    };
    if base.alpn_protocols == [b"http/1.1".to_vec()] {
        return Ok(base);
    }
    let mut c = (*base).clone();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(c))
}

/// The same tunnel opened on a blocking socket (the health checker's probes): `http://` and
/// `socks5://` proxies; `https://` ones are not opened here.
pub fn open_blocking(
    fp: &ForwardProxy,
    tcp: &mut std::net::TcpStream,
    to: &Through<'_>,
) -> io::Result<()> {
    use std::io::{Read, Write};
    let creds = fp.credentials.as_ref();
    let read_n = |tcp: &mut std::net::TcpStream, n: usize| -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        tcp.read_exact(&mut buf)?;
        Ok(buf)
    };
    match fp.kind {
        ProxyKind::Http => {
            tcp.write_all(connect_request(&to.authority(), creds).as_bytes())?;
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                if head.len() > CONNECT_ANSWER_MAX {
                    return Err(io::Error::other(
                        "forward proxy's CONNECT answer is too long",
                    ));
                }
                head.push(read_n(tcp, 1)?[0]);
            }
            connect_verdict(&head[..head.len() - 4], false, creds.is_some())
        }
        ProxyKind::Socks5 => {
            tcp.write_all(&socks::greeting(creds.is_some()))?;
            let choice = read_n(tcp, 2)?;
            if socks::parse_choice([choice[0], choice[1]], creds.is_some())? {
                if let Some((user, password)) = creds {
                    tcp.write_all(&socks::auth_request(user, password)?)?;
                    let r = read_n(tcp, 2)?;
                    socks::parse_auth_reply([r[0], r[1]])?;
                }
            }
            tcp.write_all(&socks::connect_request(&socks::Dest::of(to.host, to.port))?)?;
            let f = read_n(tcp, 5)?;
            let len = socks::reply_len([f[0], f[1], f[2], f[3], f[4]])?;
            read_n(tcp, len - 5).map(|_| ())
        }
        ProxyKind::Https => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "probes do not open tunnels through https:// forward proxies",
        )),
    }
}

/// `Proxy-Authorization: Basic` for `user:password` (RFC 7617).
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// The CONNECT request for `authority`.
pub fn connect_request(authority: &str, credentials: Option<&(String, String)>) -> String {
    let auth = match credentials {
        Some((user, password)) => {
            format!("Proxy-Authorization: {}\r\n", basic_auth(user, password))
        }
        None => String::new(),
    };
    format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n")
}

/// Opens a tunnel to `authority` through an HTTP forward proxy connected on `s`: CONNECT,
/// then a 2xx answer before any byte of ours.
async fn connect_tunnel<S: AsyncReadRent + AsyncWriteRent>(
    s: &mut S,
    authority: &str,
    credentials: Option<&(String, String)>,
) -> io::Result<()> {
    let ask = connect_request(authority, credentials);
    let (res, _) = s.write_all(ask.into_bytes()).await;
    res?;
    let mut got = Vec::with_capacity(1024);
    loop {
        let buf = Vec::with_capacity(1024);
        let (res, buf) = s.read(buf).await;
        if res? == 0 {
            return Err(io::Error::other(
                "forward proxy closed before answering CONNECT",
            ));
        }
        got.extend_from_slice(&buf);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            return connect_verdict(&got[..end], end + 4 != got.len(), credentials.is_some());
        }
        if got.len() > CONNECT_ANSWER_MAX {
            return Err(io::Error::other(
                "forward proxy's CONNECT answer is too long",
            ));
        }
    }
}

/// What a proxy's answer head to CONNECT means for the dial.
fn connect_verdict(head: &[u8], bytes_after: bool, sent_credentials: bool) -> io::Result<()> {
    match connect_status(head) {
        Some(200..=299) if bytes_after => Err(io::Error::other(
            "forward proxy sent bytes after its CONNECT answer",
        )),
        Some(200..=299) => Ok(()),
        Some(407) if sent_credentials => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "forward proxy answered 407 to CONNECT: it refused the credentials of \
             forward_proxy_url",
        )),
        Some(407) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "forward proxy answered 407 to CONNECT: it wants credentials \
             (forward_proxy_url: http://user:password@host:port)",
        )),
        Some(s) => Err(io::Error::other(format!(
            "forward proxy answered {s} to CONNECT"
        ))),
        None => Err(io::Error::other(
            "forward proxy sent a malformed CONNECT answer",
        )),
    }
}

/// The status code of a response head's status line.
fn connect_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_requests_carry_basic_credentials_when_the_url_has_them() {
        assert_eq!(
            connect_request("api.test:443", None),
            "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n"
        );
        let creds = ("Aladdin".to_string(), "open sesame".to_string());
        // RFC 7617 §2's example.
        assert_eq!(
            connect_request("[::1]:8443", Some(&creds)),
            "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        let ipv6 = Through {
            host: "::1",
            port: 8443,
        };
        assert_eq!(ipv6.authority(), "[::1]:8443");
    }

    #[test]
    fn connect_answers_decide_the_dial() {
        for (head, after, creds, want) in [
            (
                &b"HTTP/1.1 200 Connection established"[..],
                false,
                false,
                Ok(()),
            ),
            (b"HTTP/1.0 204 OK", false, true, Ok(())),
            (b"HTTP/1.1 200 OK", true, false, Err("bytes after")),
            (
                b"HTTP/1.1 407 Proxy Auth",
                false,
                true,
                Err("refused the credentials"),
            ),
            (
                b"HTTP/1.1 407 Proxy Auth",
                false,
                false,
                Err("wants credentials"),
            ),
            (b"HTTP/1.1 403 Forbidden", false, false, Err("answered 403")),
            (b"SSH-2.0-OpenSSH", false, false, Err("malformed")),
        ] {
            match (connect_verdict(head, after, creds), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
                (got, w) => panic!("{:?}: {got:?} vs {w:?}", String::from_utf8_lossy(head)),
            }
        }
    }
}
