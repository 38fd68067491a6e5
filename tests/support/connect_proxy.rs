//! A small HTTP forward proxy that serves CONNECT only (as Squid or Caddy's forward_proxy do
//! for TLS): it records each requested authority, answers `status`, and on 2xx relays bytes
//! both ways until either side closes. It can ask for Basic credentials (407 otherwise) and
//! serve over TLS (an `https://` forward proxy).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::tls::Issued;

pub struct ConnectProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

/// How the proxy behaves.
#[derive(Clone, Default)]
pub struct Options {
    /// Answer to CONNECT (tunnelling on 2xx); 0 = 200.
    pub status: u16,
    /// The `Proxy-Authorization` value required, e.g. `Basic dTpw`; others get 407.
    pub authorization: Option<String>,
    /// Serve TLS with this certificate.
    pub tls: Option<Issued>,
}

impl ConnectProxy {
    /// Answers every CONNECT with `status` (tunnelling on 2xx).
    pub fn start(status: u16) -> ConnectProxy {
        Self::start_with(Options {
            status,
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let tls = options.tls.as_ref().map(|issued| {
            Arc::new(
                ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    super::tls::certs(&issued.cert_pem),
                    super::tls::key(&issued.key_pem),
                )
                .unwrap(),
            )
        });
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (log, options, tls) = (log.clone(), options.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(conn, &options, &log),
                    Some(config) => serve_tls(conn, config, &options, &log),
                });
            }
        });
        ConnectProxy { addr, seen }
    }

    /// The authorities CONNECT asked for, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads the CONNECT head and answers it; the target's connection on success.
fn answer(
    conn: &mut impl ReadWrite,
    options: &Options,
    log: &Mutex<Vec<String>>,
) -> Option<TcpStream> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (Some("CONNECT"), Some(authority)) = (words.next(), words.next()) else {
        let _ = conn.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return None;
    };
    log.lock().unwrap().push(authority.to_string());
    if let Some(want) = &options.authorization {
        let given = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("proxy-authorization")
                .then(|| v.trim().to_string())
        });
        if given.as_deref() != Some(want.as_str()) {
            let _ = conn.write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"t\"\r\nContent-Length: 0\r\n\r\n",
            );
            return None;
        }
    }
    let status = if options.status == 0 {
        200
    } else {
        options.status
    };
    if !(200..300).contains(&status) {
        let _ = write!(conn, "HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n");
        return None;
    }
    let Ok(upstream) = TcpStream::connect(authority) else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return None;
    };
    let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let _ = conn.flush();
    Some(upstream)
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn serve(mut conn: TcpStream, options: &Options, log: &Mutex<Vec<String>>) {
    let Some(upstream) = answer(&mut conn, options, log) else {
        return;
    };
    relay(conn, upstream);
}

/// Relays both ways on two plain sockets until either side closes.
pub fn relay(conn: TcpStream, upstream: TcpStream) {
    let (mut a, mut b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut c, mut d) = (conn, upstream);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut d, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// The TLS proxy: one thread moves bytes both ways through the TLS session, polling each side
/// with short timeouts (a TLS session cannot be split across threads).
fn serve_tls(
    conn: TcpStream,
    config: Arc<ServerConfig>,
    options: &Options,
    log: &Mutex<Vec<String>>,
) {
    let Ok(session) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(session, conn);
    let Some(mut upstream) = answer(&mut tls, options, log) else {
        return;
    };
    let tick = Some(std::time::Duration::from_millis(5));
    let _ = tls.sock.set_read_timeout(tick);
    let _ = upstream.set_read_timeout(tick);
    let mut buf = vec![0u8; 16 * 1024];
    let would_block = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if upstream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
        match upstream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                    break;
                }
            }
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
