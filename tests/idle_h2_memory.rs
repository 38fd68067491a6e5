//! Heap bytes an idle HTTP/2 client connection holds after a request, TLS (ALPN h2) and h2c,
//! counted exactly as `idle_tls_memory.rs` does: the proxy runs in this process under a
//! live-bytes counting allocator, and the clients run in a python process
//! (`tls_idle/hold_h2.py`) so their state is not counted.

#[macro_use]
mod support;

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::tls::Pki;
use support::*;

live_bytes_allocator!();

/// What an idle h2c connection may hold on the heap: the `h2` crate's own state (its codec
/// keeps a 16 KiB write buffer, an 8 KiB read buffer and a 4 KiB HPACK buffer for life) and
/// the connection's task; 40.9 KiB measured. With `monoio_compat`'s two 8 KiB copy buffers
/// it was 58.6 KiB.
const IDLE_H2C_CONN_HEAP_MAX: isize = 48 * 1024;
/// The same over TLS: the rustls session too (48.3 KiB measured). With a pending read's
/// ciphertext buffer, a kept write buffer and the 16 KiB receive buffer protocol detection
/// took it was 82.9 KiB.
const IDLE_H2_TLS_CONN_HEAP_MAX: isize = 56 * 1024;

/// Connections measured (after as many again to warm up).
const CONNS: usize = 200;

/// `n` HTTP/2 connections opened by `hold_h2.py`, one request each, held until dropped.
struct Held {
    child: Child,
    out: std::io::BufReader<ChildStdout>,
}

impl Held {
    fn open(addr: std::net::SocketAddr, n: usize, mode: &str) -> Held {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_idle/hold_h2.py");
        let mut child = Command::new("python3")
            .args([script, &addr.ip().to_string(), &addr.port().to_string()])
            .args([&n.to_string(), mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (a test peer, with `h2`): {e}"));
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut held = Held { child, out };
        assert_eq!(held.line(), format!("ready {n}"), "hold_h2.py failed");
        held
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// One more request on every held connection: how many were answered 200.
    fn again(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"again\n").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Opens `CONNS` idle HTTP/2 connections to `addr` after as many to warm up: the heap each
/// holds. Then checks that every one of them still serves a request.
fn heap_per_idle_conn(addr: std::net::SocketAddr, mode: &str) -> isize {
    let warm = Held::open(addr, CONNS, mode);
    std::thread::sleep(Duration::from_millis(500));
    let before = LIVE.load(Ordering::Relaxed);
    let mut held = Held::open(addr, CONNS, mode);
    // Parking happens once a connection has been quiet for a moment.
    std::thread::sleep(Duration::from_millis(1500));
    let per_conn = (LIVE.load(Ordering::Relaxed) - before) / CONNS as isize;
    assert_eq!(
        held.again(),
        format!("again {CONNS}"),
        "idle connections serve again"
    );
    drop((held, warm));
    per_conn
}

/// One test for both drivers, in turn: the live-byte count is process-wide.
#[test]
fn an_idle_http2_connection_holds_no_buffers() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "an_idle_http2_connection_holds_no_buffers",
    ));
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "idle");
    let cert = pki.server("idle", &["idle.test"]);
    for driver in drivers {
        let b1 = FixedBackend::start("b1", 200, "127.0.0.1:0".parse().unwrap());
        let h2c = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
        let proxy = Proxy::start(driver, h2c, &[("B1", b1.target())]);
        let per_conn = heap_per_idle_conn(proxy.addr(), "h2c");
        println!("{driver:?}: heap per idle h2c connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_H2C_CONN_HEAP_MAX,
            "an idle h2c connection holds {per_conn} bytes of heap (at most {IDLE_H2C_CONN_HEAP_MAX})"
        );
        drop(proxy);
        let tls = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - { cert: $CERT, key: $KEY }\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
        let vars = [
            ("B1", b1.target()),
            ("CERT", cert.cert.display().to_string()),
            ("KEY", cert.key.display().to_string()),
        ];
        let proxy = Proxy::start(driver, tls, &vars);
        let per_conn = heap_per_idle_conn(proxy.addr(), "tls");
        println!("{driver:?}: heap per idle HTTP/2 TLS connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_H2_TLS_CONN_HEAP_MAX,
            "an idle HTTP/2 TLS connection holds {per_conn} bytes of heap (at most {IDLE_H2_TLS_CONN_HEAP_MAX})"
        );
    }
}
