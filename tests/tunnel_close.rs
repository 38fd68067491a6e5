//! How layer-4 tunnels close their sockets: one that ends cleanly closes both with close(2)
//! (no ring entries), one that gave a wait up or failed goes through the runtime. Either way
//! every socket is closed and the tunnel is logged as it ended. Alone in this test binary, and
//! its two driver halves run one at a time, so that the descriptors counted are this test's.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use support::l4::*;
use support::*;

/// Short tunnels (connect, a byte each way, close), as the tcp-short load test makes them.
const SHORT: usize = 40;
/// Generous: the machine running the tests is shared and loaded.
const SETTLE: Duration = Duration::from_secs(10);
/// Past the proxy's 250 ms grace, after which a quiet bulk direction gives its wait up.
const QUIET: Duration = Duration::from_millis(800);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn socket_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

fn short_tunnel(proxy: &Proxy) {
    let mut c = connect(proxy.addr());
    c.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    // The client closes first, the proxy passes the FIN on, the backend answers `bye` + FIN.
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end_or_error(&mut c).unwrap(), b"bye");
}

/// A bulk echo, then quiet past the grace (each direction gives up its wait on the pipe it
/// held), then a clean end.
fn bulk_then_quiet_tunnel(proxy: &Proxy) {
    let c = connect(proxy.addr());
    let len = 1 << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 13 + i / 509) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
    let mut got = vec![0u8; len];
    let mut r: TcpStream = c.try_clone().unwrap();
    r.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    r.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data, "the echo differs");
    std::thread::sleep(QUIET);
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end_or_error(&mut r).unwrap(), b"bye");
}

driver_tests! {
    fn tunnels_that_end_cleanly_close_both_sockets_and_are_logged_closed(driver) {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new();
        let log = dir.join("access.log");
        let backend = L4Backend::start(Mode::Echo);
        let yaml = format!(
            "log: {{ format: json, access_log: {} }}\nlisteners:\n  - name: web\n    \
             listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: app\nupstreams:\n  app:\n    \
             targets: [$B1]\n",
            log.display()
        );
        let mut proxy = Proxy::start(driver, &yaml, &[("B1", backend.target())]);
        let fds0 = socket_fds();
        for _ in 0..SHORT {
            short_tunnel(&proxy);
        }
        bulk_then_quiet_tunnel(&proxy);
        short_tunnel(&proxy);
        // Both sockets of every tunnel are closed: the backend saw each connection end, and
        // the process holds no more sockets than before the first tunnel.
        let closed = wait_for(SETTLE, || backend.open() == 0 && socket_fds() <= fds0);
        assert!(
            closed,
            "after {} tunnels: {} backend connections open, sockets went from {fds0} to {}",
            SHORT + 2,
            backend.open(),
            socket_fds()
        );
        shutdown_bounded(proxy.take_server()).unwrap();
        // A tunnel whose close went wrong (a panic in its task) would have no line.
        let text = std::fs::read_to_string(&log).unwrap();
        let ends: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["end"].to_string())
            .collect();
        assert_eq!(ends.len(), SHORT + 2, "{text}");
        assert!(ends.iter().all(|e| e == "\"closed\""), "{ends:?}");
    }
}
