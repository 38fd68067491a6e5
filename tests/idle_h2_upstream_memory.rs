//! Heap bytes an idle HTTP/2 connection to an upstream holds, counted exactly as
//! `idle_h2_memory.rs` does for client connections: the proxy runs in this process under a
//! live-bytes counting allocator, the h2c target in a python process (`h2/target.py`, one
//! stream per connection so that requests sent at once take a connection each).

#[macro_use]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

live_bytes_allocator!();

/// What an idle upstream HTTP/2 connection may hold on the heap: the `h2` crate's state and
/// the connection's driver task, no I/O buffer of ours (39.6 KiB measured; 57.5 KiB with
/// `monoio_compat`'s two 8 KiB copy buffers).
const IDLE_H2_UPSTREAM_CONN_HEAP_MAX: isize = 48 * 1024;

/// Measure once the worker has trimmed (its quiet check runs every second): a burst leaves
/// up to `SPARE_MAX` spare buffers behind until then, which are the worker's, not the
/// connections'.
const TRIMMED: Duration = Duration::from_millis(2500);

/// Requests sent at once, each taking an upstream connection of its own.
const CONNS: usize = 50;

/// `target.py --one-stream`, killed when dropped.
struct Target {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Target {
    fn start() -> Target {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/target.py");
        let mut child = Command::new("python3")
            .args([script, "--one-stream"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (a test peer, with `h2`): {e}"));
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = out.next().and_then(Result::ok).unwrap_or_default();
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("target.py port (is python3's `h2` package installed?)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = lines.clone();
        std::thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        Target { child, port, lines }
    }

    fn opened(&self) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with("OPEN ")).count()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` slow requests, a few ms apart so that each new connection has the target's SETTINGS
/// (one stream) before the next request looks for room: all must be answered 200.
fn burst(proxy: &Proxy, n: usize) {
    let addr = proxy.addr();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            std::thread::spawn(move || get(addr, "/slow").status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
}

/// One test for both drivers, in turn: the live-byte count is process-wide.
#[test]
fn an_idle_upstream_http2_connection_holds_no_buffers_and_serves_again() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "an_idle_upstream_http2_connection_holds_no_buffers_and_serves_again",
    ));
    for driver in drivers {
        let target = Target::start();
        let yaml = format!(
            "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [\"h2c://127.0.0.1:{}\"]\n    transport: {{ max_idle_per_worker: 1000, idle_timeout: 1h }}\n",
            target.port
        );
        let proxy = Proxy::start(driver, &yaml, &[]);
        // Warm up: slabs, tables and the connection cache grow to their working size.
        assert_eq!(proxy.get("/").status, 200);
        burst(&proxy, CONNS);
        std::thread::sleep(TRIMMED);
        let (before, opened) = (LIVE.load(Ordering::Relaxed), target.opened());
        // Twice as many: the idle ones are reused, and about as many new ones are dialed.
        burst(&proxy, 2 * CONNS);
        std::thread::sleep(TRIMMED);
        let new = target.opened() - opened;
        // (Requests that meet a connection before its SETTINGS wait on it: how many new
        // connections a burst opens varies, 7 to 22 seen.)
        assert!(new >= 3, "only {new} new connections");
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / new as isize;
        println!("{driver:?}: heap per idle upstream HTTP/2 connection: {per_conn} bytes ({new})");
        assert!(
            per_conn <= IDLE_H2_UPSTREAM_CONN_HEAP_MAX,
            "an idle upstream HTTP/2 connection holds {per_conn} bytes of heap (at most {IDLE_H2_UPSTREAM_CONN_HEAP_MAX})"
        );
        // An idle one serves the next request.
        let opened = target.opened();
        assert_eq!(proxy.get("/again").status, 200);
        assert_eq!(target.opened(), opened, "an idle connection served it");
    }
}
