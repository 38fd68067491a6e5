//! Idle layer-4 tunnels hold their two sockets and nothing else: a tunnel that moved a bulk
//! transfer gives its splice pipes (two descriptors each) back to the worker's pool once it goes
//! quiet, so many idle tunnels do not hold a pipe each way. Alone in this test binary, and its
//! two driver halves run one at a time, so that the descriptors counted are this test's.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

use support::l4::*;
use support::*;

/// Tunnels opened one after another, each left idle after its transfer.
const TUNNELS: usize = 8;
/// Between two tunnels: several times the proxy's grace (250 ms) before a quiet direction gives
/// its pipe back.
const QUIET: Duration = Duration::from_secs(1);
/// Each tunnel's transfer (echoed back): far more than the copy path's 16 KiB, so it splices.
const BULK: usize = 1 << 20;
/// Pipes a tunnel moving bulk both ways uses at once (one per direction).
const PIPES_PER_TUNNEL: usize = 2;
/// Generous: the machine running the tests is shared and loaded (the proxy's grace is 250 ms).
const SETTLE: Duration = Duration::from_secs(10);

/// The io_uring and epoll halves would otherwise count each other's descriptors.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn pipe_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0)
}

/// Sends `len` bytes through the tunnel and reads the echo back, checking it.
fn echo(c: &TcpStream, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 977) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut got = vec![0u8; len];
    let mut r = c.try_clone().unwrap();
    r.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    r.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data, "the echo differs");
}

driver_tests! {
    fn idle_tunnels_give_their_splice_pipes_back_and_still_carry_bytes_later(driver) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let backend = L4Backend::start(Mode::Echo);
        let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    \
                    upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
        let proxy = Proxy::start(driver, yaml, &[("B1", backend.target())]);
        let pipes0 = pipe_fds();
        let mut idle = Vec::new();
        for i in 0..TUNNELS {
            let c = connect(proxy.addr());
            echo(&c, BULK);
            idle.push(c);
            std::thread::sleep(QUIET);
            // One tunnel at a time uses at most a pipe each way; once quiet it gives them back
            // to the pool, where the next tunnel finds them. A tunnel that kept its pipes would
            // add four descriptors per tunnel.
            let settled = wait_for(SETTLE, || pipe_fds() <= pipes0 + 2 * PIPES_PER_TUNNEL);
            assert!(
                settled,
                "{} idle tunnels: pipe descriptors went from {pipes0} to {}",
                i + 1,
                pipe_fds()
            );
        }
        assert!(proxy.server().l4_spliced_bytes() > 0, "nothing was spliced");
        // Every idle tunnel still carries bytes both ways (small ones copied, big ones spliced).
        for (i, c) in idle.iter().enumerate() {
            echo(c, 100 + i);
        }
        echo(&idle[0], BULK);
    }
}
