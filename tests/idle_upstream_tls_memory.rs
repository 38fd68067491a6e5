//! Heap bytes a pooled idle TLS connection to an upstream holds, counted exactly as
//! `idle_tls_memory.rs` does: the proxy runs in this process under a live-bytes counting
//! allocator, the TLS backend in a python process (`tls_idle/slow_backend.py`) so its state is
//! not counted. Then the pooled connections serve again, and ones the upstream closed while
//! pooled are not used.

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::tls::Pki;
use support::*;

live_bytes_allocator!();

/// What a pooled idle TLS upstream connection may hold on the heap: its rustls session and
/// socket, no ciphertext buffer (8.3 KiB measured; 25.0 KiB while it kept its 16 KiB read
/// buffer and its write buffer).
const POOLED_TLS_CONN_HEAP_MAX: isize = 12 * 1024;

/// Measure once the worker has trimmed (its quiet check runs every second): a burst leaves
/// up to `SPARE_MAX` spare buffers behind until then, which are the worker's, not the
/// connections'.
const TRIMMED: Duration = Duration::from_millis(2500);

/// Requests sent at once, each taking an upstream connection of its own.
const CONNS: usize = 100;

/// `slow_backend.py`: answers every request after 300 ms.
struct SlowBackend {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SlowBackend {
    fn start(cert: &support::tls::Issued) -> SlowBackend {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/tls_idle/slow_backend.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .args([&cert.cert, &cert.key])
            .arg("300")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (a test peer): {e}"));
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().and_then(Result::ok).unwrap_or_default();
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("slow_backend.py port");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = lines.clone();
        std::thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        SlowBackend { child, port, lines }
    }

    /// Connections accepted so far.
    fn opened(&self) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with("OPEN ")).count()
    }

    /// Closes every connection it holds (a FIN from the upstream while they are pooled).
    fn close_all(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"close\n").unwrap();
        stdin.flush().unwrap();
        let said = wait_for(Duration::from_secs(10), || {
            let lines = self.lines.lock().unwrap();
            lines.iter().any(|l| l.starts_with("closed "))
        });
        assert!(said, "slow_backend.py did not close its connections");
    }
}

impl Drop for SlowBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` requests at once, each on a connection of its own: all must be answered 200.
fn burst(proxy: &Proxy, n: usize) {
    let addr = proxy.addr();
    let threads: Vec<_> = (0..n)
        .map(|i| std::thread::spawn(move || get(addr, &format!("/{i}")).status))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
}

/// One test for both drivers, in turn: the live-byte count is process-wide.
#[test]
fn a_pooled_idle_tls_upstream_connection_holds_no_buffers_and_serves_again() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "a_pooled_idle_tls_upstream_connection_holds_no_buffers_and_serves_again",
    ));
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "pool");
    let cert = pki.server("up", &["up.test"]);
    for driver in drivers {
        let mut backend = SlowBackend::start(&cert);
        let yaml = format!(
            "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [\"https://127.0.0.1:{}\"]\n    transport:\n      max_idle_per_worker: 1000\n      tls: {{ ca: [{}], server_name: up.test }}\n",
            backend.port,
            pki.ca_file.display()
        );
        let proxy = Proxy::start(driver, &yaml, &[]);
        // Warm up: the pool, slabs and the session cache grow to their working size.
        burst(&proxy, CONNS);
        std::thread::sleep(TRIMMED);
        let before = LIVE.load(Ordering::Relaxed);
        // As many again as are pooled: those are reused, and CONNS new ones are dialed.
        burst(&proxy, 2 * CONNS);
        std::thread::sleep(TRIMMED);
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / CONNS as isize;
        println!("{driver:?}: heap per pooled idle TLS upstream connection: {per_conn} bytes");
        assert_eq!(
            backend.opened(),
            2 * CONNS,
            "the second burst reused the first's"
        );
        assert!(
            per_conn <= POOLED_TLS_CONN_HEAP_MAX,
            "a pooled idle TLS upstream connection holds {per_conn} bytes of heap (at most {POOLED_TLS_CONN_HEAP_MAX})"
        );
        // The next request reuses one, its buffers taken again.
        assert_eq!(proxy.get("/again").status, 200);
        assert_eq!(backend.opened(), 2 * CONNS, "a pooled connection served it");
        // The upstream closes them all while pooled: none is used, not even for a request
        // that cannot be replayed.
        backend.close_all();
        let mut c = proxy.client();
        let r = c.request("POST /after HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            backend.opened(),
            2 * CONNS + 1,
            "a new connection served it"
        );
    }
}
