//! PROXY protocol on the HTTP side: sent to upstreams of http routes (pooled connections are
//! the announcing client's own, never shared), and read before TLS on a listener that has both
//! (HAProxy from Debian's packages as the sender).

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::tls::Pki;
use support::*;

/// An HTTP/1.1 keep-alive backend behind a PROXY v1 reader: each response's body is the PROXY
/// line its connection started with.
struct ProxiedBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl ProxiedBackend {
    fn start() -> ProxiedBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(conn));
            }
        });
        ProxiedBackend { addr, connections }
    }
}

fn serve(conn: TcpStream) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut proxy = String::new();
    if r.read_line(&mut proxy).unwrap_or(0) == 0 || !proxy.starts_with("PROXY ") {
        return;
    }
    let proxy = proxy.trim_end().to_string();
    loop {
        // A GET head: lines until the empty one.
        let mut line = String::new();
        let mut lines = 0;
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            lines += 1;
        }
        if lines == 0 {
            return;
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{proxy}",
            proxy.len()
        );
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

driver_tests! {
    fn pooled_proxy_protocol_connections_serve_only_the_client_they_announced(driver) {
        let backend = ProxiedBackend::start();
        let yaml = one_upstream_yaml("$B", "    transport: { proxy_protocol: v1 }\n");
        let proxy = Proxy::start(driver, &yaml, &[("B", backend.addr.to_string())]);
        let mut a = proxy.client();
        let mut b = proxy.client();
        let mut seen = Vec::new();
        for _ in 0..3 {
            for (name, c) in [("a", &mut a), ("b", &mut b)] {
                let r = c.request(get_req("/", ""));
                assert_eq!(r.status, 200, "{}", r.head_text());
                seen.push((name, r.text()));
            }
        }
        let of = |who: &str| -> Vec<&String> {
            seen.iter().filter(|(n, _)| *n == who).map(|(_, t)| t).collect()
        };
        let (from_a, from_b) = (of("a"), of("b"));
        // Each client's requests all rode connections announcing that client, and only it.
        assert!(from_a.iter().all(|t| *t == from_a[0]), "{seen:?}");
        assert!(from_b.iter().all(|t| *t == from_b[0]), "{seen:?}");
        assert_ne!(from_a[0], from_b[0], "{seen:?}");
        assert!(from_a[0].starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{}", from_a[0]);
        // ... and were pooled: one upstream connection per client, not one per request.
        assert_eq!(backend.connections.load(Ordering::SeqCst), 2, "{seen:?}");
    }
}

driver_tests! {
    fn a_capped_proxy_protocol_upstream_serves_clients_in_turn(driver) {
        // max_connections: 1 and one pooled connection per client: the next client's request
        // waits for the idle one of the previous client to be closed, not for queue_timeout.
        let backend = ProxiedBackend::start();
        let yaml = format!(
            "workers: 1\n{}",
            one_upstream_yaml(
                "{ address: \"$B\", max_connections: 1 }",
                "    transport: { proxy_protocol: v1, queue_timeout: 3s }\n",
            )
        );
        let proxy = Proxy::start(driver, &yaml, &[("B", backend.addr.to_string())]);
        let started = std::time::Instant::now();
        let mut clients: Vec<_> = (0..3).map(|_| proxy.client()).collect();
        let mut seen = Vec::new();
        for round in 0..2 {
            for c in clients.iter_mut() {
                let r = c.request(get_req("/", ""));
                assert_eq!(r.status, 200, "round {round}: {}", r.head_text());
                seen.push(r.text());
            }
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        // Each request was announced as its own client's.
        for i in 0..3 {
            assert_eq!(seen[i], seen[i + 3], "{seen:?}");
        }
        assert_ne!(seen[0], seen[1]);
    }
}

/// A free port on 127.0.0.1 (bound and released; HAProxy binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy in TCP mode on a free port, forwarding to `to` with `send` (send-proxy or
/// send-proxy-v2). Fails the test, naming HAProxy, when it is not installed.
fn haproxy(dir: &TempDir, to: SocketAddr, send: &str) -> (Haproxy, u16) {
    let port = free_port();
    let cfg = dir.write(
        &format!("haproxy-{send}.cfg"),
        &format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
             timeout server 30s\nfrontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  server s1 {to} {send}\n"
        ),
    );
    let child = Command::new("haproxy")
        .args(["-db", "-f", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "haproxy is needed as the PROXY+TLS sender (tests/support/install-peers.sh): {e}"
            )
        });
    let h = Haproxy(child);
    assert!(
        wait_for(Duration::from_secs(5), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "haproxy did not come up on {port}"
    );
    (h, port)
}

#[test]
fn haproxy_sends_proxy_then_tls_and_the_announced_client_reaches_the_upstream() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "pp");
    pki.server("a", &["a.test"]);
    let b1 = Backend::start("b1");
    let yaml = "trusted_proxies: [127.0.0.1/32]\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    \
                proxy_protocol: true\n    tls:\n      certificates: [{ cert: $CERT, key: $KEY }]\n    \
                routes: [{ upstream: app }]\nupstreams:\n  app:\n    targets: [$B1]\n";
    let proxy = Proxy::start(
        Driver::any(),
        yaml,
        &[
            ("B1", b1.target()),
            ("CERT", dir.join("a.pem").display().to_string()),
            ("KEY", dir.join("a.key").display().to_string()),
        ],
    );
    for send in ["send-proxy", "send-proxy-v2"] {
        let (_h, port) = haproxy(&dir, proxy.addr(), send);
        // curl from 127.0.0.2: HAProxy announces that address; ringway's peer is 127.0.0.1.
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "--interface",
                "127.0.0.2",
                "--cacert",
                pki.ca_file.to_str().unwrap(),
                "--resolve",
                &format!("a.test:{port}:127.0.0.1"),
                &format!("https://a.test:{port}/pp"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("curl is needed for this test: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "b1\n",
            "{send}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = b1.last_request();
        assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.2"), "{send}");
        assert_eq!(got.header("x-forwarded-proto"), Some("https"), "{send}");
    }
}
