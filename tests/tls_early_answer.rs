//! Early answers from TLS upstreams: one that answers an upload before reading it reaches the
//! client, and TLS records that carry no response (TLS 1.3 session tickets, sent as the
//! handshake ends) never stop a body the upstream is reading.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::tls::{certs, key, Issued, Pki, TlsBackend};
use support::*;

const UPLOAD: usize = 20 * 1024 * 1024;

/// A TLS 1.3 backend that reads one request head per connection and writes `answer` at once.
/// With `then`, it reads the whole body (`Content-Length` bytes) and answers `then`; without,
/// it holds the connection open for `hold`, reading nothing more. rustls sends two session
/// tickets as its handshake ends.
struct EarlyTlsBackend {
    addr: SocketAddr,
    heads: Arc<AtomicUsize>,
    /// Body bytes read (with `then`).
    body: Arc<AtomicUsize>,
}

impl EarlyTlsBackend {
    fn start(server: &Issued, answer: &'static [u8], hold: Duration) -> EarlyTlsBackend {
        Self::start_then(server, answer, None, hold)
    }

    fn start_then(
        server: &Issued,
        answer: &'static [u8],
        then: Option<&'static [u8]>,
        hold: Duration,
    ) -> EarlyTlsBackend {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
        .unwrap();
        assert!(
            config.send_tls13_tickets > 0,
            "the backend must send session tickets"
        );
        let config = Arc::new(config);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(AtomicUsize::new(0));
        let body = Arc::new(AtomicUsize::new(0));
        let (seen, got) = (heads.clone(), body.clone());
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { return };
                let (config, seen, got) = (config.clone(), seen.clone(), got.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let _ = tls.write_all(answer);
                    let _ = tls.flush();
                    let Some(then) = then else {
                        std::thread::sleep(hold);
                        return;
                    };
                    let len = head_content_length(&head);
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut read = 0;
                    while read < len {
                        match tls.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    got.store(read, Ordering::SeqCst);
                    let _ = tls.write_all(then);
                    let _ = tls.flush();
                    std::thread::sleep(hold);
                });
            }
        });
        EarlyTlsBackend { addr, heads, body }
    }
}

/// A proxy to one `https://` target verified with `pki`'s CA.
fn proxy_to(driver: Driver, pki: &Pki, addr: SocketAddr) -> Proxy {
    let ca = pki.ca_file.display();
    let extra = format!("    transport:\n      tls: {{ ca: [{ca}], server_name: backend.test }}\n");
    Proxy::start(
        driver,
        &one_upstream_yaml(&format!("\"https://{addr}\""), &extra),
        &[],
    )
}

driver_tests! {
    fn a_tls_upstream_that_answers_401_before_reading_a_20_mb_upload_reaches_the_client(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let server = pki.server("backend", &["backend.test"]);
        let b = EarlyTlsBackend::start(
            &server,
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\nWWW-Authenticate: Basic\r\n\r\nunauthorized\n",
            Duration::from_secs(8),
        );
        let proxy = proxy_to(driver, &pki, b.addr);
        let started = Instant::now();
        let (mut c, writer) = start_upload(proxy.addr(), UPLOAD);
        expect_early_401(&mut c, writer, started, UPLOAD);
        assert_eq!(b.heads.load(Ordering::SeqCst), 1, "one request reached the backend");
    }

    fn session_tickets_from_a_tls_upstream_do_not_stop_a_20_mb_upload_it_reads(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let server = pki.server("backend", &["backend.test"]);
        // TLS 1.3 (rustls's default), whose server sends session tickets after the handshake.
        let b = TlsBackend::start("tb", &server, None);
        let proxy = proxy_to(driver, &pki, b.addr);
        for _ in 0..2 {
            let (mut c, writer) = start_upload(proxy.addr(), UPLOAD);
            let r = c.try_read_response(false).unwrap_or_else(|e| panic!("the client got no answer: {e}"));
            assert_eq!((r.status, r.text().as_str()), (200, "tb sni=backend.test client_cert=no\n"), "{}", r.head_text());
            assert_eq!(writer.join().unwrap(), UPLOAD);
        }
        // The backend counts a request once it has read its whole body.
        assert_eq!(b.requests(), 2, "both uploads reached the backend whole");
        assert!(b.last_head.lock().unwrap().to_ascii_lowercase().contains(&format!("content-length: {UPLOAD}")));
    }

    fn an_interim_100_from_a_tls_upstream_lets_the_whole_upload_go_on(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let server = pki.server("backend", &["backend.test"]);
        let b = EarlyTlsBackend::start_then(
            &server,
            b"HTTP/1.1 100 Continue\r\n\r\n",
            Some(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nok\n"),
            Duration::from_secs(1),
        );
        let proxy = proxy_to(driver, &pki, b.addr);
        let (mut c, writer) = start_upload(proxy.addr(), UPLOAD);
        let r = c.read_final_response();
        assert_eq!((r.status, r.text().as_str()), (201, "ok\n"), "{}", r.head_text());
        assert_eq!(writer.join().unwrap(), UPLOAD);
        assert_eq!(b.body.load(Ordering::SeqCst), UPLOAD, "the backend read the whole upload");
    }
}
