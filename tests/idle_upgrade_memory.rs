//! Heap bytes an idle upgraded connection (a WebSocket, say) holds, counted exactly: a global
//! allocator that tracks live bytes watches the proxy (it runs in this process). A quiet tunnel
//! direction parks: it waits for input holding no buffer (over TLS, no ciphertext buffer
//! either), not the receive buffer of the HTTP exchange that upgraded it. Bytes still cross a
//! parked tunnel both ways, and its ends still pass on.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

live_bytes_allocator!();

/// What an idle upgraded connection may hold on the heap: the tunnel's tasks and both
/// sockets' state (7.5 KiB measured in a debug build; 8.3 KiB while each direction kept a
/// 1 KiB pending read). Copy buffers of 16 KiB each way alone would be 32 KiB; so was the
/// tunnel's state while every tunnel was sized for the largest (TLS) pairing.
const IDLE_TUNNEL_HEAP_MAX: isize = 8000;

/// The same for a client's TLS connection: its rustls session too, but no ciphertext buffer
/// (18.3 KiB measured; 36.0 KiB while a pending read kept its 16 KiB).
const IDLE_TLS_TUNNEL_HEAP_MAX: isize = 24 * 1024;

/// Connections measured (after as many again to warm up).
const CONNS: usize = 300;

/// Reads until a head's end into a fixed buffer: the head's length.
fn read_head(s: &mut TcpStream, buf: &mut [u8; 1024]) -> usize {
    let mut got = 0;
    loop {
        if let Some(end) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n") {
            return end + 4;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("closed inside a head"),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A backend that switches every connection to a silent tunnel and holds it. Its list has
/// room reserved up front, so it allocates nothing per connection.
fn start_upgrading_backend() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::with_capacity(4 * CONNS)));
    let list = held.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            read_head(&mut conn, &mut buf);
            conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
            .unwrap();
            list.lock().unwrap().push(conn);
        }
    });
    (addr, held)
}

fn open_tunnels(addr: SocketAddr, n: usize, held: &mut Vec<TcpStream>) {
    const REQ: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut buf = [0u8; 1024];
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(REQ).unwrap();
        read_head(&mut s, &mut buf);
        assert!(buf.starts_with(b"HTTP/1.1 101"), "switched");
        // A small message through, then quiet.
        s.write_all(&[7u8; 100]).unwrap();
        held.push(s);
    }
}

/// Bytes written on one end of a parked tunnel arrive at the other.
fn relays(from: &mut TcpStream, to: &mut TcpStream, msg: &[u8]) {
    from.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    to.read_exact(&mut got).unwrap();
    assert!(got == msg, "relayed bytes differ");
}

/// `n` upgraded TLS connections held by `tls_idle/hold_ws.py`, until dropped.
struct HeldTls(std::process::Child);

impl HeldTls {
    fn open(addr: SocketAddr, n: usize) -> HeldTls {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls_idle/hold_ws.py");
        let mut child = std::process::Command::new("python3")
            .args([
                script,
                &addr.ip().to_string(),
                &addr.port().to_string(),
                &n.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (a test peer): {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("ready {n}"), "hold_ws.py failed");
        HeldTls(child)
    }
}

impl Drop for HeldTls {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// One test for both drivers, in turn: the live-byte count is process-wide.
#[test]
fn an_idle_upgraded_connection_holds_no_receive_buffer_and_still_relays_and_closes() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "an_idle_upgraded_connection_holds_no_receive_buffer_and_still_relays_and_closes",
    ));
    let dir = TempDir::new();
    let pki = support::tls::Pki::new(dir.path(), "ws");
    let cert = pki.server("ws", &["idle.test"]);
    for driver in drivers {
        let (backend, backend_held) = start_upgrading_backend();
        let proxy = Proxy::start(
            driver,
            &one_upstream_yaml("$B1", ""),
            &[("B1", backend.to_string())],
        );
        let mut held = Vec::with_capacity(2 * CONNS);
        open_tunnels(proxy.addr(), CONNS, &mut held);
        std::thread::sleep(Duration::from_millis(500));
        let before = LIVE.load(Ordering::Relaxed);
        open_tunnels(proxy.addr(), CONNS, &mut held);
        // Every tunnel's small message has been relayed and both directions have parked.
        std::thread::sleep(Duration::from_millis(1000));
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / CONNS as isize;
        println!("{driver:?}: heap per idle upgraded connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_TUNNEL_HEAP_MAX,
            "an idle upgraded connection holds {per_conn} bytes of heap (at most {IDLE_TUNNEL_HEAP_MAX})"
        );
        // Parked tunnels still relay both ways, then pass each end on.
        let mut ups: Vec<TcpStream> = backend_held.lock().unwrap().drain(..).collect();
        for (i, (down, up)) in held.iter_mut().zip(ups.iter_mut()).enumerate().step_by(50) {
            up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut first = [0u8; 100];
            up.read_exact(&mut first).unwrap();
            relays(down, up, format!("to the backend {i}").as_bytes());
            relays(up, down, &[9u8; 40_000]);
            down.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(
                up.read(&mut first).unwrap(),
                0,
                "the client's end reaches the backend"
            );
            up.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(
                down.read(&mut first).unwrap(),
                0,
                "the backend's end reaches the client"
            );
        }
        drop((held, ups));
        drop(proxy);

        // A client's TLS connection, upgraded and quiet.
        let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - { cert: $CERT, key: $KEY }\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
        let vars = [
            ("B1", backend.to_string()),
            ("CERT", cert.cert.display().to_string()),
            ("KEY", cert.key.display().to_string()),
        ];
        let proxy = Proxy::start(driver, yaml, &vars);
        let warm = HeldTls::open(proxy.addr(), CONNS);
        std::thread::sleep(Duration::from_millis(500));
        let before = LIVE.load(Ordering::Relaxed);
        let tls_held = HeldTls::open(proxy.addr(), CONNS);
        std::thread::sleep(Duration::from_millis(1000));
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / CONNS as isize;
        println!("{driver:?}: heap per idle upgraded TLS connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_TLS_TUNNEL_HEAP_MAX,
            "an idle upgraded TLS connection holds {per_conn} bytes of heap (at most {IDLE_TLS_TUNNEL_HEAP_MAX})"
        );
        drop((tls_held, warm));
        drop(proxy);
        backend_held.lock().unwrap().clear();
    }
}
