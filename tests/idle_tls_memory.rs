//! Heap bytes an idle keep-alive TLS connection holds, counted exactly as `idle_memory.rs`
//! does for plain ones: the proxy runs in this process under a live-bytes counting allocator,
//! and the TLS clients run in a python process (`tls_idle/hold.py`) so their state is not
//! counted.

#[macro_use]
mod support;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::tls::Pki;
use support::*;

live_bytes_allocator!();

/// What an idle TLS connection may hold on the heap: its rustls session (about 11 KiB: keys,
/// state, the record reader's 4 KiB floor) and the parked connection's state, but no
/// ciphertext buffer (16 KiB each; with monoio-rustls's two it was over 50 KiB).
const IDLE_TLS_CONN_HEAP_MAX: isize = 14 * 1024;

/// `n` TLS connections opened by `hold.py`, one request each, held until dropped.
struct Held(Child);

impl Held {
    /// `body`: bytes of a POST body per request (0: a GET).
    fn open(addr: std::net::SocketAddr, n: usize, body: usize) -> Held {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_idle/hold.py");
        let mut child = Command::new("python3")
            .args([script, &addr.ip().to_string(), &addr.port().to_string()])
            .args([n.to_string(), body.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (a test peer): {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("ready {n}"), "hold.py failed");
        Held(child)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// One test for both drivers, in turn: the live-byte count is process-wide.
#[test]
fn an_idle_keep_alive_tls_connection_holds_no_buffers() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "an_idle_keep_alive_tls_connection_holds_no_buffers",
    ));
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "idle");
    let cert = pki.server("idle", &["idle.test"]);
    for driver in drivers {
        let b1 = FixedBackend::start("b1", 200, "127.0.0.1:0".parse().unwrap());
        let yaml = "admin:\n  listen: 127.0.0.1:0\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - { cert: $CERT, key: $KEY }\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
        let vars = [
            ("B1", b1.target()),
            ("CERT", cert.cert.display().to_string()),
            ("KEY", cert.key.display().to_string()),
        ];
        let proxy = Proxy::start(driver, yaml, &vars);
        let admin = proxy.server().admin_addr().unwrap();
        // Warm up first: slabs, pools, the session cache and the clock's slot table grow.
        let warm = Held::open(proxy.addr(), 300, 0);
        assert!(wait_for(Duration::from_secs(10), || receive_buffers(admin) == 0));
        let before = LIVE.load(Ordering::Relaxed);
        // Each sends a 20 KiB body first: full 16 KiB records grow rustls's record reader, which
        // must shrink back before the connection parks.
        let held = Held::open(proxy.addr(), 500, 20 * 1024);
        assert!(
            wait_for(Duration::from_secs(10), || receive_buffers(admin) == 0),
            "idle TLS connections still hold receive buffers: {}",
            receive_buffers(admin)
        );
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / 500;
        println!("{driver:?}: heap per idle TLS connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_TLS_CONN_HEAP_MAX,
            "an idle TLS connection holds {per_conn} bytes of heap (at most {IDLE_TLS_CONN_HEAP_MAX})"
        );
        drop((held, warm));
    }
}
