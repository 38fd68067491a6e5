//! Caddy http transport knobs of the dial: `dial_fallback_delay` (RFC 8305 racing of a
//! hostname's addresses, names served by dnsmasq).

#[macro_use]
mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use support::dns::{port_free_on, Dnsmasq};
use support::*;

/// A listening socket whose accept queue is full: a connect to it hangs (its SYN is dropped),
/// as to a black-holed address. The filler connection lives as long as the returned pair.
fn black_hole(addr: SocketAddr) -> (TcpListener, TcpStream) {
    let l = TcpListener::bind(addr).unwrap();
    // SAFETY: listen(2) on our own open socket; a backlog of 0 holds one connection.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let filler = TcpStream::connect(addr).unwrap();
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(probe.is_err(), "the accept queue of {addr} is not full");
    (l, filler)
}

/// A proxy (in process) for upstream `api` with target `web.test:PORT`, resolved by `dns`
/// (two addresses), and `extra` transport keys; waits for discovery to give the target both.
fn hostname_proxy(dns: &Dnsmasq, port: u16, extra: &str) -> ringway::control::Server {
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: api\n\
         upstreams:\n  api:\n    targets: [127.0.0.1:{port}]\n    \
         dynamic: {{ a: {{ name: none.test, port: 1 }}, refresh: 1s, resolvers: [{}] }}\n    \
         transport: {{ keepalive: false, {extra} }}\n\
         workers: 1\npin_workers: false\n",
        dns.resolver(),
    );
    let mut config = ringway::config::Config::parse(&yaml, "t.yaml").unwrap();
    // As validation leaves a hostname target (loading the name from a file would ask the
    // system's resolver, which tests must not use).
    config.upstreams[0].targets[0].addr = ringway::config::TargetAddr::Tcp {
        host: format!("web.test:{port}"),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let server = ringway::control::Server::start(config).expect("start");
    let resolved = wait_for(Duration::from_secs(10), || {
        let c = server.config();
        let t = &c.upstreams[0].targets;
        t.len() == 1 && t[0].fallbacks.len() == 1
    });
    let targets = server.config().upstreams[0].targets.clone();
    assert!(resolved, "one target holding both addresses: {targets:?}");
    let ringway::config::TargetAddr::Tcp { addr, .. } = &targets[0].addr else {
        panic!("{targets:?}")
    };
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.2",
        "the black hole is dialed first"
    );
    server
}

#[test]
fn a_name_whose_first_address_is_dead_is_served_within_the_fallback_delay() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let _hole = black_hole(format!("127.0.0.2:{port}").parse().unwrap());
    let live = FixedBackend::start("live", 200, format!("127.0.0.3:{port}").parse().unwrap());
    let dns = Dnsmasq::start("127.0.0.2 web.test\n127.0.0.3 web.test\n", &[]);
    let server = hostname_proxy(&dns, port, "dial_timeout: 10s, dial_fallback_delay: 300ms");
    let addr = server.local_addr("web").unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let r = get(addr, "/");
        let took = started.elapsed();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend"), Some("live"));
        assert!(
            took >= Duration::from_millis(250),
            "the dead address was tried first: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "served after about the 300ms delay, not the 10s dial timeout: {took:?}"
        );
    }
    assert_eq!(live.requests(), 3);
    server.shutdown();
}

#[test]
fn a_negative_fallback_delay_dials_the_addresses_one_at_a_time() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let _hole = black_hole(format!("127.0.0.2:{port}").parse().unwrap());
    let live = FixedBackend::start("live", 200, format!("127.0.0.3:{port}").parse().unwrap());
    let dns = Dnsmasq::start("127.0.0.2 web.test\n127.0.0.3 web.test\n", &[]);
    // Each address gets its share of the dial timeout (Go's rule, at least 2s): 2s here.
    let server = hostname_proxy(&dns, port, "dial_timeout: 4s, dial_fallback_delay: -1");
    let addr = server.local_addr("web").unwrap();
    let started = Instant::now();
    let r = get(addr, "/");
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_millis(1800),
        "the second address waited for the first one's share: {took:?}"
    );
    assert_eq!(live.requests(), 1);
    server.shutdown();
}
