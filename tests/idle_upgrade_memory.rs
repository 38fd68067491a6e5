//! Heap bytes an idle upgraded connection (a WebSocket, say) holds, counted exactly: a global
//! allocator that tracks live bytes watches the proxy (it runs in this process). A quiet tunnel
//! keeps one small pending read per direction, not a full copy buffer each, and not the
//! receive buffer of the HTTP exchange that upgraded it.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

live_bytes_allocator!();

/// What an idle upgraded connection may hold on the heap: two 1 KiB pending reads, the
/// tunnel's tasks and both sockets' state (8.4 KiB measured in a debug build). Copy buffers of
/// 16 KiB each way alone would be 32 KiB; so was the tunnel's state while every tunnel was
/// sized for the largest (TLS) pairing.
const IDLE_TUNNEL_HEAP_MAX: isize = 12 * 1024;

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

/// One test for both drivers, in turn: the live-byte count is process-wide.
#[test]
fn an_idle_upgraded_connection_holds_no_full_copy_buffers() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "an_idle_upgraded_connection_holds_no_full_copy_buffers",
    ));
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
        // Every tunnel's small message has been relayed and its read re-armed.
        std::thread::sleep(Duration::from_millis(500));
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / CONNS as isize;
        println!("{driver:?}: heap per idle upgraded connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_TUNNEL_HEAP_MAX,
            "an idle upgraded connection holds {per_conn} bytes of heap (at most {IDLE_TUNNEL_HEAP_MAX})"
        );
        drop(held);
        drop(proxy);
        backend_held.lock().unwrap().clear();
    }
}
