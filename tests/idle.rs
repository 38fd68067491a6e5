//! Idle keep-alive connections hold no receive buffer: after `PARK_AFTER` (100 ms) of quiet a
//! plain connection waits on readiness alone, counted by `ringway_worker_receive_buffers`, and
//! wakes to serve its next request exactly as before.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::*;

fn receive_buffers(admin: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("ringway_worker_receive_buffers{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn start(driver: Driver, limits: &str) -> (Proxy, Backend, SocketAddr) {
    let b1 = Backend::start("b1");
    let yaml = format!(
        "admin:\n  listen: 127.0.0.1:0\nworkers: 2\n{limits}{}",
        one_upstream_yaml("$B1", "")
    );
    let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
    let admin = proxy.server().admin_addr().expect("admin enabled");
    (proxy, b1, admin)
}

driver_tests! {
    fn idle_keep_alive_connections_give_back_their_receive_buffers_and_still_serve(driver) {
        let (proxy, b1, admin) = start(driver, "");
        let mut clients: Vec<Client> = (0..20).map(|_| proxy.client()).collect();
        for c in &mut clients {
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert!(
            wait_for(Duration::from_secs(10), || receive_buffers(admin) == 0),
            "20 idle connections still hold {} receive buffers",
            receive_buffers(admin)
        );
        // A half-sent head is a busy connection: it holds a buffer while it waits for the rest.
        let mut slow = proxy.client();
        slow.send("GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(
            wait_for(Duration::from_secs(5), || receive_buffers(admin) == 1),
            "one busy connection, {} buffers",
            receive_buffers(admin)
        );
        slow.send("\r\n");
        assert_eq!(slow.read_response().status, 200);
        // Parked connections wake and serve their next request, keep-alive intact.
        for c in &mut clients {
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert_eq!(b1.requests(), 41);
    }

    fn a_parked_connection_is_still_closed_after_idle_timeout(driver) {
        let (proxy, _b1, admin) = start(driver, "limits:\n  idle_timeout: 2500ms\n");
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        let sent = Instant::now();
        assert!(wait_for(Duration::from_secs(2), || receive_buffers(admin) == 0));
        c.expect_closed();
        let took = sent.elapsed();
        assert!(took >= Duration::from_millis(2000), "closed too early: {took:?}");
        assert!(took < Duration::from_secs(6), "closed too late: {took:?}");
    }

    fn a_request_sent_as_the_connection_parks_is_served(driver) {
        // Requests timed around PARK_AFTER race the cancelled read: none may be lost.
        let (proxy, b1, _admin) = start(driver, "");
        let mut c = proxy.client();
        assert_eq!(c.request(get_req("/", "")).status, 200);
        for i in 0..12u64 {
            std::thread::sleep(Duration::from_millis(85 + 5 * i));
            assert_eq!(c.request(get_req("/", "")).status, 200, "request {i}");
        }
        assert_eq!(b1.requests(), 13);
    }
}
