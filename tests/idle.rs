//! Idle keep-alive connections hold no receive buffer: after `PARK_AFTER` (100 ms) of quiet a
//! connection (plain or TLS) waits on readiness alone, counted by
//! `ringway_worker_receive_buffers`, and wakes to serve its next request exactly as before.

#[macro_use]
mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::tls::{client_config, Pki, TlsClient};
use support::*;

fn start(driver: Driver, limits: &str) -> (Proxy, Backend, SocketAddr) {
    let b1 = Backend::start("b1");
    let yaml = format!(
        "admin:\n  listen: 127.0.0.1:0\nworkers: 2\n{limits}{}",
        one_upstream_yaml("$B1", "")
    );
    let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
    let admin = proxy.server().admin_addr().expect("admin enabled");
    (proxy, b1, admin)
}

/// A TLS listener (certificate for `idle.test`) in front of one backend, and a client config
/// that trusts it.
struct TlsEdge {
    proxy: Proxy,
    b1: Backend,
    admin: SocketAddr,
    client: std::sync::Arc<rustls::ClientConfig>,
    _dir: TempDir,
}

fn start_tls(driver: Driver, limits: &str) -> TlsEdge {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "idle");
    let cert = pki.server("idle", &["idle.test"]);
    let b1 = Backend::start("b1");
    let yaml = format!(
        "admin:\n  listen: 127.0.0.1:0\nworkers: 2\n{limits}listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: $CERT, key: $KEY }}\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n"
    );
    let vars = [
        ("B1", b1.target()),
        ("CERT", cert.cert.display().to_string()),
        ("KEY", cert.key.display().to_string()),
    ];
    let proxy = Proxy::start(driver, &yaml, &vars);
    let admin = proxy.server().admin_addr().expect("admin enabled");
    TlsEdge {
        proxy,
        b1,
        admin,
        client: client_config(pki.roots(), None),
        _dir: dir,
    }
}

impl TlsEdge {
    fn connect(&self) -> TlsClient {
        TlsClient::connect(self.proxy.addr(), self.client.clone(), Some("idle.test")).unwrap()
    }
}

driver_tests! {
    fn idle_tls_connections_give_back_their_buffers_and_still_serve(driver) {
        let edge = start_tls(driver, "");
        let mut clients: Vec<TlsClient> = (0..10).map(|_| edge.connect()).collect();
        for c in &mut clients {
            assert_eq!(c.get("idle.test", "/").unwrap().status, 200);
        }
        assert!(
            wait_for(Duration::from_secs(10), || receive_buffers(edge.admin) == 0),
            "10 idle TLS connections still hold {} receive buffers",
            receive_buffers(edge.admin)
        );
        // Parked TLS connections wake and serve their next request, session intact.
        for c in &mut clients {
            assert_eq!(c.get("idle.test", "/").unwrap().status, 200);
        }
        assert_eq!(edge.b1.requests(), 20);
    }

    fn a_request_sent_as_a_tls_connection_parks_is_served(driver) {
        // Requests timed around PARK_AFTER race the cancelled socket read under TLS too.
        let edge = start_tls(driver, "");
        let mut c = edge.connect();
        assert_eq!(c.get("idle.test", "/").unwrap().status, 200);
        for i in 0..12u64 {
            std::thread::sleep(Duration::from_millis(85 + 5 * i));
            assert_eq!(c.get("idle.test", "/").unwrap().status, 200, "request {i}");
        }
        // Two requests in one write: the second is decrypted while the first is answered.
        std::thread::sleep(Duration::from_millis(300));
        let two = "GET /a HTTP/1.1\r\nHost: idle.test\r\n\r\nGET /b HTTP/1.1\r\nHost: idle.test\r\n\r\n";
        assert_eq!(c.request(two).unwrap().status, 200);
        assert_eq!(c.read_response().unwrap().status, 200);
        assert_eq!(edge.b1.requests(), 15);
    }

    fn a_parked_tls_connection_is_still_closed_after_idle_timeout(driver) {
        let edge = start_tls(driver, "limits:\n  idle_timeout: 2500ms\n");
        let mut c = edge.connect();
        assert_eq!(c.get("idle.test", "/").unwrap().status, 200);
        let sent = Instant::now();
        assert!(wait_for(Duration::from_secs(2), || receive_buffers(edge.admin) == 0));
        // The proxy closes: the client reads the end of the stream (or a reset), no answer.
        let mut rest = Vec::new();
        let _ = c.tls.read_to_end(&mut rest);
        assert!(rest.is_empty(), "got {:?}", String::from_utf8_lossy(&rest));
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(2000), "closed too early: {took:?}");
        assert!(took < Duration::from_secs(6), "closed too late: {took:?}");
    }

    fn idle_keep_alive_connections_give_back_their_receive_buffers_and_still_serve(driver) {
        let (proxy, b1, admin) = start(driver, "");
        let mut clients: Vec<Client> = (0..20).map(|_| proxy.client()).collect();
        for c in &mut clients {
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert!(
            wait_for(Duration::from_secs(10), || receive_buffers(admin) == 0),
            "20 idle connections still hold {} receive buffers",
            receive_buffers(admin)
        );
        // A half-sent head is a busy connection: it holds a buffer while it waits for the rest.
        let mut slow = proxy.client();
        slow.send("GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(
            wait_for(Duration::from_secs(5), || receive_buffers(admin) == 1),
            "one busy connection, {} buffers",
            receive_buffers(admin)
        );
        slow.send("\r\n");
        assert_eq!(slow.read_response().status, 200);
        // Parked connections wake and serve their next request, keep-alive intact.
        for c in &mut clients {
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert_eq!(b1.requests(), 41);
    }

    fn a_parked_connection_is_still_closed_after_idle_timeout(driver) {
        let (proxy, _b1, admin) = start(driver, "limits:\n  idle_timeout: 2500ms\n");
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        let sent = Instant::now();
        assert!(wait_for(Duration::from_secs(2), || receive_buffers(admin) == 0));
        c.expect_closed();
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(2000), "closed too early: {took:?}");
        assert!(took < Duration::from_secs(6), "closed too late: {took:?}");
    }

    fn a_request_sent_as_the_connection_parks_is_served(driver) {
        // Requests timed around PARK_AFTER race the cancelled read: none may be lost.
        let (proxy, b1, _admin) = start(driver, "");
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        for i in 0..12u64 {
            std::thread::sleep(Duration::from_millis(85 + 5 * i));
            assert_eq!(c.request(get_req("/", "")).status, 200, "request {i}");
        }
        assert_eq!(b1.requests(), 13);
    }
}
