//! Caddy http transport knobs of the dial and the request: `dial_fallback_delay` (RFC 8305
//! racing of a hostname's addresses, names served by dnsmasq), `expect_continue_timeout`
//! (raw-socket backends that answer 100 late, 417, or never), and `read_buffer` /
//! `write_buffer` (SO_RCVBUF / SO_SNDBUF of upstream sockets, read back with `ss`).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
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
    hostname_proxy_with(dns, port, extra, "")
}

/// `hostname_proxy` with `upstream_extra` lines in the upstream (indented 4).
fn hostname_proxy_with(
    dns: &Dnsmasq,
    port: u16,
    extra: &str,
    upstream_extra: &str,
) -> ringway::control::Server {
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: api\n\
         upstreams:\n  api:\n    targets: [127.0.0.1:{port}]\n    \
         dynamic: {{ a: {{ name: none.test, port: 1 }}, refresh: 1s, resolvers: [{}] }}\n    \
         transport: {{ keepalive: false, {extra} }}\n{upstream_extra}\
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
fn active_health_probes_of_a_raced_name_reach_its_live_address() {
    let port = port_free_on(&["127.0.0.2", "127.0.0.3"]);
    let _hole = black_hole(format!("127.0.0.2:{port}").parse().unwrap());
    let live = FixedBackend::start("live", 200, format!("127.0.0.3:{port}").parse().unwrap());
    let dns = Dnsmasq::start("127.0.0.2 web.test\n127.0.0.3 web.test\n", &[]);
    let server = hostname_proxy_with(
        &dns,
        port,
        "dial_fallback_delay: 300ms",
        "    health: { active: { uri: /health, interval: 200ms, timeout: 5s, fails: 1 } }\n",
    );
    assert!(
        wait_for(Duration::from_secs(15), || live.requests() >= 3),
        "probes reach the live address"
    );
    let addr = server.local_addr("web").unwrap();
    let r = get(addr, "/");
    assert_eq!(r.status, 200, "the target was never probed down");
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

/// What a raw backend does with a request that expects 100-continue.
#[derive(Clone, Copy)]
enum Continue {
    /// Sends 100 after this long, then reads the body and answers 200 with it.
    Late(Duration),
    /// Answers 417 at once without reading the body.
    Refuse,
    /// Never sends 100: reads the body whenever it comes and answers 200 with it.
    Never,
}

/// A backend acting out `how`; reports per request whether body bytes had arrived before it
/// would have sent its 100.
fn continue_backend(how: Continue) -> (SocketAddr, mpsc::Receiver<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).ok() != Some(1) {
                        return;
                    }
                    head.push(byte[0]);
                }
                let len = head_content_length(&head);
                match how {
                    Continue::Refuse => {
                        let _ = conn.write_all(
                            b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n",
                        );
                        return;
                    }
                    Continue::Late(after) => {
                        std::thread::sleep(after);
                        conn.set_nonblocking(true).unwrap();
                        let mut peek = [0u8; 1];
                        let early = conn.peek(&mut peek).is_ok_and(|n| n > 0);
                        conn.set_nonblocking(false).unwrap();
                        let _ = tx.send(early);
                        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    Continue::Never => {}
                }
                let mut body = vec![0u8; len];
                if conn.read_exact(&mut body).is_err() {
                    return;
                }
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
    (addr, rx)
}

/// Sends a POST expecting 100-continue; waits for an interim or final answer, sends the body
/// after a 100, and returns everything the proxy sent until the final response's body.
fn post_expecting_continue(proxy: &Proxy) -> (String, Duration) {
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    s.write_all(
        b"POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut body_sent = false;
    loop {
        let n = match s.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            res => res.unwrap_or(0),
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if !body_sent && text.starts_with("HTTP/1.1 100") && text.contains("\r\n\r\n") {
            s.write_all(b"hello").unwrap();
            body_sent = true;
        }
        // Done once a final response's head and (short) body are in.
        let finals: Vec<&str> = text
            .split("HTTP/1.1 ")
            .filter(|p| !p.starts_with("100"))
            .collect();
        if let Some(last) = finals.iter().rev().find(|p| !p.is_empty()) {
            if last.starts_with("417") && last.contains("\r\n\r\n") {
                break;
            }
            if last.starts_with("200") && last.ends_with("hello") {
                break;
            }
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn an_upstream_slow_to_say_100_gets_the_body_after_expect_continue_timeout() {
    let (b, seen) = continue_backend(Continue::Late(Duration::from_millis(1500)));
    let yaml = one_upstream_yaml("$B", "    transport: { expect_continue_timeout: 200ms }\n");
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B", b.to_string())]);
    let (got, _) = post_expecting_continue(&proxy);
    assert_eq!(got.matches("100 Continue").count(), 1, "{got:?}");
    assert!(got.ends_with("hello"), "{got:?}");
    assert_eq!(
        seen.recv_timeout(Duration::from_secs(5)),
        Ok(true),
        "the body reached the upstream before its late 100"
    );
    // Without the key the body waits for the upstream's 100.
    let (b, seen) = continue_backend(Continue::Late(Duration::from_millis(500)));
    let proxy = Proxy::start(
        Driver::any(),
        &one_upstream_yaml("$B", ""),
        &[("B", b.to_string())],
    );
    let (got, _) = post_expecting_continue(&proxy);
    assert_eq!(got.matches("100 Continue").count(), 1, "{got:?}");
    assert!(got.ends_with("hello"), "{got:?}");
    assert_eq!(seen.recv_timeout(Duration::from_secs(5)), Ok(false));
}

#[test]
fn an_upstream_refusing_the_expectation_has_its_417_relayed_and_gets_no_body() {
    let (b, _) = continue_backend(Continue::Refuse);
    let yaml = one_upstream_yaml("$B", "    transport: { expect_continue_timeout: 10s }\n");
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B", b.to_string())]);
    let (got, took) = post_expecting_continue(&proxy);
    assert!(got.starts_with("HTTP/1.1 417"), "{got:?}");
    assert!(!got.contains("100 Continue"), "{got:?}");
    assert!(took < Duration::from_secs(5), "answered at once: {took:?}");
}

#[test]
fn an_upstream_that_never_says_100_is_served_after_expect_continue_timeout() {
    let (b, _) = continue_backend(Continue::Never);
    let yaml = one_upstream_yaml("$B", "    transport: { expect_continue_timeout: 300ms }\n");
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B", b.to_string())]);
    let (got, took) = post_expecting_continue(&proxy);
    assert!(
        got.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
        "{got:?}"
    );
    assert!(got.ends_with("hello"), "{got:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// `ss`'s socket memory line of the established connection from the proxy to `backend`:
/// (rb, tb), the receive and send buffer sizes the kernel applies.
fn socket_buffers(backend: SocketAddr) -> Option<(u64, u64)> {
    let out = std::process::Command::new("ss")
        .args(["-tmnH", "state", "established", "dst", &backend.to_string()])
        .output()
        .expect("ss is not installed (iproute2): run tests/support/install-peers.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let skmem = text.split("skmem:(").nth(1)?;
    let field = |name: &str| -> Option<u64> {
        skmem
            .split(',')
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.trim_end_matches(')').parse().ok())
    };
    Some((field("rb")?, field("tb")?))
}

/// A backend that answers every request on a kept-alive connection with a `head_kib` KiB
/// response head and a `body_kib` KiB body.
fn big_backend(head_kib: usize, body_kib: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: {}\r\n\r\n",
                            "h".repeat(head_kib * 1024),
                            body_kib * 1024
                        );
                        let body = vec![b'b'; body_kib * 1024];
                        if conn.write_all(head.as_bytes()).is_err()
                            || conn.write_all(&body).is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn read_and_write_buffer_size_the_upstream_sockets_and_big_responses_still_flow() {
    let b = big_backend(40, 2048);
    let yaml = one_upstream_yaml(
        "$B",
        "    transport: { read_buffer: 1KiB, write_buffer: 8KiB }\n",
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B", b.to_string())]);
    let mut c = proxy.client();
    for _ in 0..2 {
        let r = c.request(get_req("/", ""));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-big").map(str::len), Some(40 * 1024));
        assert_eq!(r.body.len(), 2048 * 1024);
    }
    // The pooled connection: the kernel doubles what SO_RCVBUF/SO_SNDBUF ask (for its
    // bookkeeping) and keeps a floor of about 2 KiB for the receive side.
    let (rb, tb) = socket_buffers(b).expect("the pooled upstream connection");
    assert!((2048..=2560).contains(&rb), "rb {rb}");
    assert_eq!(tb, 16 * 1024, "tb");
    // Without the keys the kernel autotunes (far larger buffers).
    let b = big_backend(1, 1);
    let proxy = Proxy::start(
        Driver::any(),
        &one_upstream_yaml("$B", ""),
        &[("B", b.to_string())],
    );
    assert_eq!(proxy.get("/").status, 200);
    let (rb, _) = socket_buffers(b).expect("the pooled upstream connection");
    assert!(rb > 16 * 1024, "rb {rb}");
}
