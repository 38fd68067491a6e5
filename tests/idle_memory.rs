//! Heap bytes an idle keep-alive connection holds, counted exactly: a global allocator that
//! tracks live bytes watches the proxy (it runs in this process) while connections park. RSS
//! per connection (loadtest `idle-http`) adds the allocator's own slack to this figure.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::*;

live_bytes_allocator!();

/// What an idle plain HTTP connection may hold on the heap (the bar is 1.5 KiB of RSS).
const IDLE_CONN_HEAP_MAX: isize = 1024;

/// Opens `n` connections with one request each into `held` (capacity reserved by the caller, so
/// the test itself allocates nothing per connection).
fn open_idle(addr: std::net::SocketAddr, n: usize, held: &mut Vec<TcpStream>) {
    const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(REQ).unwrap();
        // The answer's head is enough: the proxy has finished with the request once it is sent.
        let mut got = 0;
        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf[got..]) {
                Ok(0) => panic!("proxy closed a fresh connection"),
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(buf.starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
}

/// One test for both drivers, in turn: the live-byte count is process-wide, so nothing else
/// may run beside a measurement.
#[test]
fn an_idle_keep_alive_connection_holds_under_a_kib_of_heap() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "an_idle_keep_alive_connection_holds_under_a_kib_of_heap",
    ));
    for driver in drivers {
        let b1 = FixedBackend::start("b1", 200, "127.0.0.1:0".parse().unwrap());
        let yaml = format!(
            "admin:\n  listen: 127.0.0.1:0\n{}",
            one_upstream_yaml("$B1", "")
        );
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let admin = proxy.server().admin_addr().unwrap();
        let mut held = Vec::with_capacity(2000);
        // Warm up first: slabs, pools and the clock's slot table grow to their working size.
        open_idle(proxy.addr(), 500, &mut held);
        assert!(wait_for(Duration::from_secs(10), || receive_buffers(admin) == 0));
        let before = LIVE.load(Ordering::Relaxed);
        open_idle(proxy.addr(), 1000, &mut held);
        assert!(wait_for(Duration::from_secs(10), || receive_buffers(admin) == 0));
        let per_conn = (LIVE.load(Ordering::Relaxed) - before) / 1000;
        println!("{driver:?}: heap per idle connection: {per_conn} bytes");
        assert!(
            per_conn <= IDLE_CONN_HEAP_MAX,
            "an idle connection holds {per_conn} bytes of heap (at most {IDLE_CONN_HEAP_MAX})"
        );
        drop(held);
    }
}
