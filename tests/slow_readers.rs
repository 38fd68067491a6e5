//! Slow readers (a slow-read attack, slowhttptest -X): clients that ask for a large response and
//! then read nothing. A stalled transfer must not keep a splice pipe (two more descriptors and a
//! pipe's pages) while it waits, other clients must be served meanwhile, and the stalled body
//! must still arrive intact once its reader comes back. Alone in this test binary, and its two
//! driver halves run one at a time, so that the descriptors counted are this test's.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use socket2::{Domain, Protocol, Socket, Type};
use support::streaming::*;
use support::wait_for;

/// Slow readers opened one after another; each stalls before the next comes.
const READERS: usize = 12;
/// Each one's response: far more than the socket buffers on the way can hold.
const BODY: u64 = 4 << 20;
/// Descriptors one stalled transfer may hold in this process: the test's client socket, the
/// proxy's client and upstream sockets, and the backend's two (a reader and a writer clone of
/// its socket). A pipe would add two.
const FDS_PER_READER: usize = 5;
/// Pipes a loaded machine may leave pooled beyond the one that serves every reader in turn.
const PIPE_SLACK: usize = 3;
/// Slack for the pooled pipes and the like (a few descriptors, not some per reader).
const FD_SLACK: usize = 2 * PIPE_SLACK + 2;
/// Between two slow readers: several times the proxy's stall grace (250 ms).
const STALL_WAIT: Duration = Duration::from_secs(1);
/// Generous: the machine running the tests is shared and loaded.
const SETTLE: Duration = Duration::from_secs(10);

/// The io_uring and epoll halves would otherwise count each other's descriptors.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn fds_of_kind(pipes: bool) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| !pipes || t.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0)
}

/// A client like a remote one reading slowly: Ethernet's segment size (on loopback the proxy's
/// send buffer would otherwise autotune to megabytes and take the whole body) and a tiny
/// receive window, set before connecting as slowhttptest does.
fn slow_reader(proxy: &support::Proxy) -> Retry {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.set_mss(1460).unwrap();
    s.connect(&proxy.addr().into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = Retry(s);
    write!(s, "GET /source/{BODY} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

fn read_body_sha(s: &mut Retry, len: u64) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = s.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "body cut short with {left} bytes to go");
        h.update(&buf[..n]);
        left -= n as u64;
    }
    hex(&h.finalize())
}

driver_tests! {
    fn stalled_slow_readers_give_their_pipes_back_and_other_clients_are_served_meanwhile(driver) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let (proxy, _bulk) = bulk_proxy(driver, "");
        // Warm up: a spliced download leaves a pooled pipe and a pooled upstream connection.
        let mut warm = connect(&proxy);
        write!(warm, "GET /source/{BODY} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_head(&mut warm);
        assert_eq!(read_body_sha(&mut warm, BODY), Payload::new().sha256(BODY));
        drop(warm);
        assert!(wait_for(SETTLE, || proxy.server().spliced_bytes().1 > 0), "nothing was spliced");
        std::thread::sleep(Duration::from_millis(300));
        let (fds0, pipes0) = (fds_of_kind(false), fds_of_kind(true));

        let mut readers = Vec::new();
        for i in 0..READERS {
            readers.push(slow_reader(&proxy));
            // A pooled pipe serves the next reader; a transfer that kept its pipe would add
            // two descriptors per reader. Each stalls well within a second.
            std::thread::sleep(STALL_WAIT);
            let settled = wait_for(SETTLE, || fds_of_kind(true) <= pipes0 + 2 * PIPE_SLACK);
            assert!(
                settled,
                "{} slow readers: pipe descriptors went from {pipes0} to {}",
                i + 1,
                fds_of_kind(true)
            );
        }
        let bound = fds0 + READERS * FDS_PER_READER + FD_SLACK;
        let fds = fds_of_kind(false);
        assert!(
            fds <= bound,
            "{READERS} stalled readers: {fds0} descriptors became {fds} (bound {bound}; pipes {pipes0} -> {})",
            fds_of_kind(true)
        );

        // Another client on the same (single) worker is served meanwhile, at full speed.
        let started = Instant::now();
        let res = proxy.get("/source/1000");
        assert_eq!(res.status, 200);
        let mut fast = connect(&proxy);
        let n = 16u64 << 20;
        write!(fast, "GET /source/{n} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        read_head(&mut fast);
        assert_eq!(read_body_sha(&mut fast, n), Payload::new().sha256(n));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(20), "the other client took {took:?}");

        // The stalled bodies were not lost or reordered: each arrives whole once read.
        let want = Payload::new().sha256(BODY);
        for (i, r) in readers.iter_mut().enumerate() {
            assert_eq!(read_body_sha(r, BODY), want, "slow reader {i}'s body differs");
        }
    }
}
