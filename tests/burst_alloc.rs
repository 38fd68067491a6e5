//! A busy keep-alive connection reuses its buffers from one request to the next: a burst of
//! requests on one connection allocates (almost) nothing per request. A counting global
//! allocator watches the proxy, which runs in this process; the answers come from a `respond`
//! route, so no backend allocates beside it, and the client reads into a fixed buffer.

#[macro_use]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts allocations.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Requests measured per burst; all are sent back to back, far inside `PARK_AFTER`.
const REQUESTS: usize = 400;

/// Allocations per request allowed on average: the buffers (receive, heads written) are
/// reused; a stray allocation somewhere (a timer, a metrics series) stays well below this.
const ALLOCS_PER_REQUEST_MAX: f64 = 0.5;

/// Sends one request and reads its whole answer (`Content-Length: 2`) into `buf`.
fn round_trip(s: &mut TcpStream, buf: &mut [u8; 1024]) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = 0;
    loop {
        if let Some(end) = buf[..got].windows(4).position(|w| w == b"\r\n\r\n") {
            if got >= end + 4 + 2 {
                break;
            }
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("proxy closed a keep-alive connection"),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    assert!(buf.starts_with(b"HTTP/1.1 200"), "answered 200");
}

/// One test for both drivers, in turn: the count is process-wide.
#[test]
fn a_burst_of_keep_alive_requests_reuses_the_connections_buffers() {
    let mut drivers = vec![Driver::Epoll];
    drivers.extend(Driver::io_uring_or_skip(
        "a_burst_of_keep_alive_requests_reuses_the_connections_buffers",
    ));
    for driver in drivers {
        let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes: [{ respond: { status: 200, body: ok } }]\n";
        let proxy = Proxy::start(driver, yaml, &[]);
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 1024];
        // Warm up: the connection's buffers, the worker's slabs and series reach their size.
        for _ in 0..50 {
            round_trip(&mut s, &mut buf);
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        for _ in 0..REQUESTS {
            round_trip(&mut s, &mut buf);
        }
        let per_request = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / REQUESTS as f64;
        println!("{driver:?}: allocations per keep-alive request: {per_request:.2}");
        assert!(
            per_request <= ALLOCS_PER_REQUEST_MAX,
            "{per_request:.2} allocations per request in a busy burst (at most {ALLOCS_PER_REQUEST_MAX})"
        );
        drop(s);
        proxy.shutdown();
    }
}
