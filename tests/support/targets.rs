//! Upstream targets that misbehave or speak TLS, for the shared upstream connector's tests: a
//! TLS echo server ([`TlsEcho`]) that records each handshake, a target that accepts and never
//! answers ([`Hung`]), one that resets every connection at once ([`ResetOnAccept`]), and a
//! plain echo on a listener the test bound itself ([`echo_on`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ServerConfig, StreamOwned};

use super::l4::reset_close;
use super::tls::{certs, key, Issued};

/// How one TLS connection to a [`TlsEcho`] went.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// Completed; the SNI the client sent (`-` for none).
    Done { sni: String },
    /// Failed with this rustls error (e.g. an alert the client sent, or plaintext bytes).
    Failed(String),
}

/// A TLS echo server on 127.0.0.1: one thread per connection; after the handshake it echoes
/// every byte and, on the client's end of stream, sends close_notify and closes.
pub struct TlsEcho {
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// Plaintext bytes echoed, all connections.
    echoed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TlsEcho {
    pub fn start(server: &Issued) -> TlsEcho {
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = TlsEcho {
            addr,
            handshakes: Arc::default(),
            echoed: Arc::default(),
            stop: Arc::default(),
        };
        let (handshakes, echoed, stop) = (
            echo.handshakes.clone(),
            echo.echoed.clone(),
            echo.stop.clone(),
        );
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let (config, handshakes, echoed) =
                    (config.clone(), handshakes.clone(), echoed.clone());
                std::thread::spawn(move || serve_tls_echo(tcp, config, &handshakes, &echoed));
            }
        });
        echo
    }

    /// `https://127.0.0.1:PORT`
    pub fn https_target(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every handshake so far, in the order they ended.
    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `n` ended handshakes; returns what there is then.
    pub fn wait_handshakes(&self, n: usize, timeout: Duration) -> Vec<Handshake> {
        super::wait_for(timeout, || self.handshakes.lock().unwrap().len() >= n);
        self.handshakes()
    }

    pub fn echoed_bytes(&self) -> usize {
        self.echoed.load(Ordering::SeqCst)
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve_tls_echo(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    handshakes: &Mutex<Vec<Handshake>>,
    echoed: &AtomicUsize,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tls = StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), tcp);
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            handshakes
                .lock()
                .unwrap()
                .push(Handshake::Failed(e.to_string()));
            return;
        }
    }
    let sni = tls.conn.server_name().unwrap_or("-").to_string();
    handshakes.lock().unwrap().push(Handshake::Done { sni });
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                    return;
                }
                echoed.fetch_add(n, Ordering::SeqCst);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A peer closing without close_notify: the end of its stream all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(_) => return,
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Write);
}

/// A target that accepts connections and keeps them open without ever answering.
pub struct Hung {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Hung {
    pub fn start() -> Hung {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hung = Hung {
            addr,
            accepted: Arc::default(),
            stop: Arc::default(),
        };
        let (accepted, stop) = (hung.accepted.clone(), hung.stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                // Read nothing, answer nothing; the connection stays open until drop.
                held.push(conn);
            }
        });
        hung
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// A target that accepts each connection and closes it at once with a reset (SO_LINGER 0).
/// It waits 20 ms first, so that the proxy's dial has certainly completed: the failure is the
/// tunnel's, not the dial's (a reset racing the dial would fail `connect` on epoll).
pub struct ResetOnAccept {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ResetOnAccept {
    pub fn start() -> ResetOnAccept {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let target = ResetOnAccept {
            addr,
            accepted: Arc::default(),
            stop: Arc::default(),
        };
        let (accepted, stop) = (target.accepted.clone(), target.stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                reset_close(conn);
            }
        });
        target
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ResetOnAccept {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Serves `listener` on a thread: each connection echoes every byte until the client's end of
/// stream, then closes. Returns the count of accepted connections.
pub fn echo_on(listener: TcpListener) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    accepted
}
