//! Caddy http transport knobs: `max_response_header`, `local_address`, `keepalive_interval`,
//! `forward_proxy_url` (through a CONNECT proxy from tests/support), `keepalive_idle_conns`,
//! and `stream_timeout` / `stream_close_delay` for upgraded connections (proxy credentials,
//! https:// and socks5:// proxies: tests/forward_proxies.rs; the other dial knobs:
//! tests/dial_knobs.rs).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::streaming::{bulk_proxy, connect, read_head};
use support::*;

/// A backend that answers each request on its connection with `head_extra` in the head,
/// reports each accepted peer address, and keeps connections open.
fn raw_backend(head_extra: String) -> (SocketAddr, mpsc::Receiver<(SocketAddr, TcpStream)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let peer = conn.peer_addr().unwrap();
            let _ = tx.send((peer, conn.try_clone().unwrap()));
            let extra = head_extra.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let reply =
                            format!("HTTP/1.1 200 OK\r\n{extra}Content-Length: 3\r\n\r\nok\n");
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

driver_tests! {
    fn max_response_header_bounds_the_upstream_response_head(driver) {
        let big = format!("X-Big: {}\r\n", "a".repeat(8 * 1024));
        let (addr, _rx) = raw_backend(big);
        let small = one_upstream_yaml("$B", "    transport: { max_response_header: 4KiB }\n");
        let proxy = Proxy::start(driver, &small, &[("B", addr.to_string())]);
        assert_eq!(proxy.get("/").status, 502);
        let roomy = one_upstream_yaml("$B", "    transport: { max_response_header: 16KiB }\n");
        let proxy = Proxy::start(driver, &roomy, &[("B", addr.to_string())]);
        let r = proxy.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-big").map(str::len), Some(8 * 1024));
    }

    fn local_address_is_where_upstream_connections_come_from(driver) {
        let (addr, rx) = raw_backend(String::new());
        let yaml = one_upstream_yaml("$B", "    transport: { local_address: 127.0.0.3 }\n");
        let proxy = Proxy::start(driver, &yaml, &[("B", addr.to_string())]);
        assert_eq!(proxy.get("/").status, 200);
        let (peer, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.0.3");
    }

    fn stream_timeout_closes_an_upgraded_connection(driver) {
        let (proxy, _bulk) = bulk_proxy(driver, "    stream_timeout: 400ms\n");
        let mut s = connect(&proxy);
        s.write_all(b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").unwrap();
        let started = Instant::now();
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        s.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "closed after {took:?}");
        assert!(took < Duration::from_secs(5), "closed only after {took:?}");
    }
}

/// /proc/net/tcp's form of an IPv4 socket address.
fn proc_addr(a: SocketAddr) -> String {
    let SocketAddr::V4(v4) = a else {
        panic!("IPv4 only: {a}");
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    )
}

/// The `tr` (timer) column of /proc/net/tcp for the established connection `local` -> `remote`
/// (a TIME_WAIT entry of an earlier connection may share the local port).
fn tcp_timer(local: SocketAddr, remote: SocketAddr) -> Option<String> {
    let (local, remote) = (proc_addr(local), proc_addr(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let established = cols.get(3) == Some(&"01");
        (established
            && cols.get(1) == Some(&local.as_str())
            && cols.get(2) == Some(&remote.as_str()))
        .then(|| cols[5].split(':').next().unwrap().to_string())
    })
}

#[test]
fn keepalive_interval_turns_on_tcp_keepalive_probes_on_upstream_connections() {
    for (extra, want) in [
        ("    transport: { keepalive_interval: 30s }\n", "02"),
        ("", "00"),
    ] {
        let (addr, rx) = raw_backend(String::new());
        let yaml = one_upstream_yaml("$B", extra);
        let proxy = Proxy::start(Driver::any(), &yaml, &[("B", addr.to_string())]);
        assert_eq!(proxy.get("/").status, 200);
        // The proxy's end of the pooled connection: the backend's peer.
        let (peer, _conn) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Timer 02 is the keep-alive timer (proc(5)); 00 is none.
        assert_eq!(tcp_timer(peer, addr).as_deref(), Some(want), "{extra:?}");
    }
}

#[test]
fn an_https_upstream_is_reached_through_a_forward_proxy() {
    use support::connect_proxy::ConnectProxy;
    use support::tls::{Pki, TlsBackend};
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "fp");
    let backend = TlsBackend::start("tb", &pki.server("tb", &["127.0.0.1"]), None);
    let forward = ConnectProxy::start(200);
    let yaml = one_upstream_yaml(
        "\"https://$B\"",
        "    transport:\n      forward_proxy_url: \"http://$FP\"\n      tls: { ca: [$CA] }\n",
    );
    let vars = [
        ("B", backend.addr.to_string()),
        ("FP", forward.addr.to_string()),
        ("CA", pki.ca_file.display().to_string()),
    ];
    let proxy = Proxy::start(Driver::any(), &yaml, &vars);
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert!(r.text().starts_with("tb "), "{}", r.text());
    assert_eq!(forward.seen(), [backend.addr.to_string()]);
    // A proxy refusing the tunnel is a failed dial: 502.
    let refusing = ConnectProxy::start(403);
    let vars = [
        ("B", backend.addr.to_string()),
        ("FP", refusing.addr.to_string()),
        ("CA", pki.ca_file.display().to_string()),
    ];
    let proxy = Proxy::start(Driver::any(), &yaml, &vars);
    assert_eq!(proxy.get("/").status, 502);
    assert_eq!(refusing.seen().len(), 1);
}

#[test]
fn keepalive_idle_conns_caps_the_idle_connections_of_all_targets_together() {
    for (cap, b_conns) in [("    transport: { keepalive_idle_conns: 1 }\n", 2), ("", 1)] {
        let a = Backend::start("a");
        let b = Backend::start("b");
        let yaml = format!(
            "workers: 1\n{}",
            one_upstream_yaml(
                "$A, $B",
                &format!("    lb: {{ policy: round_robin }}\n{cap}")
            )
        );
        let proxy = Proxy::start(
            Driver::any(),
            &yaml,
            &[("A", a.target()), ("B", b.target())],
        );
        let mut c = proxy.client();
        for _ in 0..4 {
            assert_eq!(c.request(get_req("/", "")).status, 200);
        }
        assert_eq!((a.requests(), b.requests()), (2, 2));
        // With a total of one idle connection, the second target's is closed each time.
        assert_eq!(a.connections() + b.connections(), 1 + b_conns, "{cap:?}");
    }
}

#[test]
fn stream_close_delay_ends_upgraded_connections_after_a_reload() {
    let (proxy, bulk) = bulk_proxy(Driver::any(), "    stream_close_delay: 300ms\n");
    let mut s = connect(&proxy);
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut s).starts_with("HTTP/1.1 101"));
    s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    // Open for longer than the delay while the configuration stands.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"pong").unwrap();
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    proxy.rewrite_config(
        &one_upstream_yaml("$B", "    stream_close_delay: 300ms\n"),
        &[("B", bulk.target())],
    );
    let reloaded = Instant::now();
    proxy.server().reload().expect("reload");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = reloaded.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed {took:?} after the reload"
    );
    assert!(
        took < Duration::from_secs(5),
        "closed only {took:?} after the reload"
    );
}

#[test]
fn a_client_leaving_right_after_its_request_does_not_cancel_it_upstream() {
    // Caddy cancels the upstream request when the client leaves unless flush_interval is -1;
    // ringway never watches the client while the upstream works, so the request completes.
    let b1 = Backend::start("b1");
    let yaml = one_upstream_yaml("$B1", "    flush_interval: -1\n");
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B1", b1.target())]);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.write_all(b"POST /sleep?ms=300 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    drop(s);
    assert!(
        b1.wait_for_requests(1, Duration::from_secs(5)),
        "the request never reached the upstream"
    );
    assert_eq!(b1.only_request().body, b"hello");
}
