//! Layer-4 (`protocol: tcp`) tunnels: bulk transfer integrity over splice, half-close, resets,
//! idle timeout, failover, max_connections across workers, and the PROXY protocol both ways.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use support::l4::*;
use support::*;

/// A tcp listener `web` tunnelling to upstream `app` with `targets`; `listener_extra` and
/// `upstream_extra` are lines indented for their mapping.
fn tcp_yaml(targets: &str, listener_extra: &str, upstream_extra: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: app\n\
         {listener_extra}upstreams:\n  app:\n    targets: [{targets}]\n{upstream_extra}"
    )
}

fn start(driver: Driver, yaml: &str, backend: &L4Backend) -> Proxy {
    Proxy::start(driver, yaml, &[("B1", backend.target())])
}

/// Sends `msg`, shuts down writing, reads everything back.
fn exchange(proxy: &Proxy, msg: &[u8]) -> Vec<u8> {
    let mut c = connect(proxy.addr());
    c.write_all(msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    read_to_end_or_error(&mut c).expect("clean end")
}

/// The size of each direction of the bulk test.
const BULK: u64 = 256 << 20;

driver_tests! {
    fn bulk_transfer_both_ways_at_once_keeps_every_byte_and_is_spliced(driver) {
        let b1 = L4Backend::start(Mode::Blast { bytes: BULK });
        let proxy = start(driver, &tcp_yaml("$B1", "", ""), &b1);
        let c = connect(proxy.addr());
        let mut writer = c.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let sha = send_stream(&mut writer, BULK, 1).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
            sha
        });
        let (len, got) = within(Duration::from_secs(120), "download", move || {
            let mut c = c;
            hash_until_eof(&mut c).unwrap()
        });
        let sent = sender.join().unwrap();
        assert_eq!(len, BULK, "bytes from the backend");
        assert!(got == stream_sha(BULK, 2), "download hash differs");
        let r = b1.wait_received(1, Duration::from_secs(30)).remove(0);
        assert_eq!(r.len, BULK, "bytes to the backend");
        assert!(r.sha == sent, "upload hash differs");
        // Zero-copy path: past each direction's first copied chunk (16 KiB) the payload went
        // through splice.
        let server = proxy.server();
        let (spliced, copied) = (server.l4_spliced_bytes(), server.l4_copied_bytes());
        assert_eq!(spliced + copied, 2 * BULK);
        assert!(copied < 2 * BULK / 100, "{copied} of {} bytes copied", 2 * BULK);
    }

    fn half_close_is_passed_on_and_the_reply_still_arrives(driver) {
        let b1 = L4Backend::start(Mode::Echo);
        let proxy = start(driver, &tcp_yaml("$B1", "", ""), &b1);
        // The backend sends `bye` 50 ms after it saw our FIN, over the still-open way back.
        for msg in [&b"ping"[..], b"second", b"third tunnel"] {
            assert_eq!(exchange(&proxy, msg), [msg, b"bye"].concat());
        }
        // Each message goes there and back, plus `bye`: small messages are copied, no pipe.
        assert_eq!(proxy.server().l4_copied_bytes(), 2 * (4 + 6 + 12) + 3 * 3);
        assert_eq!(proxy.server().l4_spliced_bytes(), 0);
    }

    fn upstream_reset_reaches_the_client_as_a_reset(driver) {
        let b1 = L4Backend::start(Mode::ResetOnData);
        let proxy = start(driver, &tcp_yaml("$B1", "", ""), &b1);
        let mut c = connect(proxy.addr());
        c.write_all(b"x").unwrap();
        match read_to_end_or_error(&mut c) {
            Err((kind, _)) => assert_eq!(kind, std::io::ErrorKind::ConnectionReset),
            Ok(got) => panic!("expected a reset, got a clean end after {got:?}"),
        }
    }

    fn client_reset_reaches_the_upstream_as_a_reset(driver) {
        let b1 = L4Backend::start(Mode::Record);
        let proxy = start(driver, &tcp_yaml("$B1", "", ""), &b1);
        let mut c = connect(proxy.addr());
        c.write_all(b"hello").unwrap();
        assert!(wait_for(Duration::from_secs(5), || b1.accepted() == 1));
        std::thread::sleep(Duration::from_millis(50));
        reset_close(c);
        let r = b1.wait_received(1, Duration::from_secs(5)).remove(0);
        assert_eq!(r.bytes, b"hello");
        assert!(r.reset, "the backend saw a clean FIN instead of a reset");
    }

    fn idle_tunnel_is_closed_after_idle_timeout_but_a_busy_one_is_not(driver) {
        let b1 = L4Backend::start(Mode::Echo);
        let yaml = tcp_yaml("$B1", "    idle_timeout: 400ms\n", "");
        let proxy = start(driver, &yaml, &b1);
        let mut busy = connect(proxy.addr());
        let mut buf = [0u8; 1];
        for _ in 0..8 {
            busy.write_all(b"k").unwrap();
            busy.read_exact(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut idle = connect(proxy.addr());
        idle.write_all(b"k").unwrap();
        idle.read_exact(&mut buf).unwrap();
        let start = Instant::now();
        // The backend's `bye` is not sent: it never saw a FIN; the proxy just closes.
        let got = read_to_end_or_error(&mut idle).map_err(|(k, _)| k);
        let took = start.elapsed();
        assert_eq!(got, Ok(Vec::new()));
        assert!(took >= Duration::from_millis(300), "closed too early: {took:?}");
        assert!(took < Duration::from_secs(3), "closed too late: {took:?}");
    }

    fn failed_dial_falls_over_to_the_next_target(driver) {
        let b1 = L4Backend::start(Mode::Echo);
        let yaml = tcp_yaml("$DEAD, $B1", "", "    lb: { policy: first, retries: 1, try_interval: 0s }\n");
        let proxy = Proxy::start(
            driver,
            &yaml,
            &[("B1", b1.target()), ("DEAD", refused_addr().to_string())],
        );
        assert_eq!(exchange(&proxy, b"hi"), b"hibye");
        assert_eq!(b1.accepted(), 1);
    }

    fn no_reachable_target_closes_the_client_at_once(driver) {
        let yaml = tcp_yaml("$DEAD", "", "");
        let proxy = Proxy::start(driver, &yaml, &[("DEAD", refused_addr().to_string())]);
        let mut c = connect(proxy.addr());
        let start = Instant::now();
        let got = read_to_end_or_error(&mut c);
        assert!(matches!(got, Ok(ref b) if b.is_empty()), "{got:?}");
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    }

    fn max_connections_holds_across_two_workers(driver) {
        let b1 = L4Backend::start(Mode::Echo);
        let yaml = format!(
            "workers: 2\n{}",
            tcp_yaml("{ address: \"$B1\", max_connections: 2 }", "", "")
        );
        let proxy = start(driver, &yaml, &b1);
        let mut open = Vec::new();
        let mut refused = 0;
        let mut buf = [0u8; 1];
        for _ in 0..6 {
            let mut c = connect(proxy.addr());
            c.write_all(b"k").unwrap();
            match c.read(&mut buf) {
                Ok(1) => open.push(c),
                Ok(_) | Err(_) => refused += 1,
            }
        }
        assert_eq!(open.len(), 2, "tunnels at once");
        assert_eq!(refused, 4);
        assert_eq!(b1.accepted(), 2);
        // A slot frees when a tunnel ends.
        drop(open.pop());
        assert!(wait_for(Duration::from_secs(5), || b1.open() == 1));
        // The proxy releases the slot right after the backend side closed.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(exchange(&proxy, b"z"), b"zbye");
    }

    fn proxy_headers_to_the_upstream_are_byte_exact_for_ipv4_and_ipv6(driver) {
        for version in ["v1", "v2"] {
            for listen in ["127.0.0.1:0", "[::1]:0"] {
                let b1 = L4Backend::start(Mode::Record);
                let yaml = tcp_yaml("$B1", "", &format!("    transport: {{ proxy_protocol: {version} }}\n"))
                    .replace("127.0.0.1:0", &format!("\"{listen}\""));
                let proxy = start(driver, &yaml, &b1);
                let mut c = connect(proxy.addr());
                let (src, dst) = (c.local_addr().unwrap(), proxy.addr());
                c.write_all(b"hello").unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let _ = read_to_end_or_error(&mut c);
                let got = b1.wait_received(1, Duration::from_secs(5)).remove(0).bytes;
                let mut want = if version == "v1" { v1_by_hand(src, dst) } else { v2_by_hand(src, dst) };
                want.extend_from_slice(b"hello");
                assert_eq!(got, want, "{version} on {listen}");
            }
        }
    }

    fn proxy_header_from_a_trusted_peer_becomes_the_client_address(driver) {
        let carried: (SocketAddr, SocketAddr) =
            ("203.0.113.7:5555".parse().unwrap(), "198.51.100.1:443".parse().unwrap());
        let inputs = [
            b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n".to_vec(),
            v2_by_hand(carried.0, carried.1),
        ];
        for input in inputs {
            let b1 = L4Backend::start(Mode::Record);
            let yaml = format!(
                "trusted_proxies: [127.0.0.1]\n{}",
                tcp_yaml("$B1", "    proxy_protocol: true\n", "    transport: { proxy_protocol: v1 }\n")
            );
            let proxy = start(driver, &yaml, &b1);
            let mut c = connect(proxy.addr());
            // Header and payload in one segment, as a front balancer sends them.
            c.write_all(&[&input[..], b"payload"].concat()).unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let _ = read_to_end_or_error(&mut c);
            let got = b1.wait_received(1, Duration::from_secs(5)).remove(0).bytes;
            let mut want = v1_by_hand(carried.0, carried.1);
            want.extend_from_slice(b"payload");
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
        }
    }

    fn v2_local_header_is_accepted_with_the_peer_address(driver) {
        let b1 = L4Backend::start(Mode::Record);
        let yaml = format!(
            "trusted_proxies: [127.0.0.1]\n{}",
            tcp_yaml("$B1", "    proxy_protocol: true\n", "    transport: { proxy_protocol: v1 }\n")
        );
        let proxy = start(driver, &yaml, &b1);
        let mut c = connect(proxy.addr());
        let local = [&V2_SIG[..], &[0x20, 0x00, 0x00, 0x00], b"ok"].concat();
        c.write_all(&local).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let _ = read_to_end_or_error(&mut c);
        let got = b1.wait_received(1, Duration::from_secs(5)).remove(0).bytes;
        let mut want = v1_by_hand(c.local_addr().unwrap(), proxy.addr());
        want.extend_from_slice(b"ok");
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }

    fn proxy_header_from_an_untrusted_peer_or_malformed_closes_the_connection(driver) {
        let good = b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 443\r\n".to_vec();
        let mut bad_v2 = v2_by_hand("1.2.3.4:1".parse().unwrap(), "5.6.7.8:2".parse().unwrap());
        bad_v2[12] = 0x31;
        let cases: [(&str, &str, Vec<u8>); 4] = [
            ("untrusted", "10.0.0.0/8", good),
            ("malformed v1", "127.0.0.1", b"PROXY TCP4 1.2.3.4 nope 1 2\r\n".to_vec()),
            ("malformed v2", "127.0.0.1", bad_v2),
            ("no header", "127.0.0.1", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ];
        for (what, trusted, input) in cases {
            let b1 = L4Backend::start(Mode::Record);
            let yaml = format!(
                "trusted_proxies: [{trusted}]\n{}",
                tcp_yaml("$B1", "    proxy_protocol: true\n", "")
            );
            let proxy = start(driver, &yaml, &b1);
            let mut c = connect(proxy.addr());
            let _ = c.write_all(&[&input[..], b"payload"].concat());
            let got = read_to_end_or_error(&mut c);
            assert!(
                matches!(got, Ok(ref b) if b.is_empty()) || got.is_err(),
                "{what}: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(b1.accepted(), 0, "{what}: the upstream was dialed");
        }
    }

    fn http_listener_behind_proxy_protocol_forwards_the_carried_client_address(driver) {
        let b1 = Backend::start("b1");
        let yaml = format!(
            "trusted_proxies: [127.0.0.1]\n{}",
            one_upstream_yaml("$B1", "")
                .replace("    routes:", "    proxy_protocol: true\n    routes:")
        );
        let proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
        let mut c = proxy.client();
        c.send(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 80\r\n");
        let r = c.request(get_req("/", ""));
        assert_eq!(r.status, 200);
        let got = b1.last_request();
        assert_eq!(got.header("x-forwarded-for"), Some("2001:db8::7"));
        assert_eq!(got.header("x-real-ip"), Some("2001:db8::7"));
    }
}

#[test]
fn proxy_header_that_never_arrives_closes_the_connection_after_the_header_timeout() {
    let b1 = L4Backend::start(Mode::Record);
    let yaml = format!(
        "trusted_proxies: [127.0.0.1]\n{}",
        tcp_yaml("$B1", "    proxy_protocol: true\n", "")
    );
    let proxy = start(Driver::any(), &yaml, &b1);
    let mut c = connect(proxy.addr());
    c.write_all(b"PROXY TCP4 ").unwrap();
    let start = Instant::now();
    let got = read_to_end_or_error(&mut c);
    let took = start.elapsed();
    assert!(matches!(got, Ok(ref b) if b.is_empty()), "{got:?}");
    let limit = ringway::net::proxy_protocol::HEADER_TIMEOUT;
    assert!(took >= limit - Duration::from_millis(200), "{took:?}");
    assert!(took < limit + Duration::from_secs(2), "{took:?}");
    assert_eq!(b1.accepted(), 0);
}

/// proxy-protocol.txt §2.2's signature, typed from the specification's table.
const V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// §2.1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`.
fn v1_by_hand(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// §2.2: signature, 0x21 (v2, PROXY), 0x11 or 0x21 (TCP over IPv4/IPv6), length (big
/// endian), source address, destination address, source port, destination port.
fn v2_by_hand(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIG.to_vec();
    h.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            h.extend_from_slice(&[0x11, 0, 12]);
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            h.extend_from_slice(&[0x21, 0, 36]);
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("mixed families"),
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[test]
fn access_log_has_a_line_per_tcp_connection_with_bytes_each_way_and_how_it_ended() {
    let dir = TempDir::new();
    let path = dir.join("access.log");
    let b1 = L4Backend::start(Mode::Echo);
    let dead = refused_addr().to_string();
    let dead_addr = dead.clone();
    let yaml = format!(
        "log: {{ format: json, access_log: {} }}\n{}",
        path.display(),
        tcp_yaml("$B1", "", "    lb: { policy: first }\n")
    );
    let mut proxy = start(Driver::any(), &yaml, &b1);
    let mut c = connect(proxy.addr());
    let client = c.local_addr().unwrap().to_string();
    c.write_all(b"ping").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end_or_error(&mut c).unwrap(), b"pingbye");
    shutdown_bounded(proxy.take_server()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let l = &lines[0];
    // The same shape as an http line: the IP, and the port beside it.
    let client: std::net::SocketAddr = client.parse().unwrap();
    assert_eq!(l["client"], client.ip().to_string());
    assert_eq!(l["client_port"], client.port());
    assert_eq!(l["protocol"], "tcp");
    assert_eq!(l["upstream"], "app");
    assert_eq!(l["listener"], "web");
    assert_eq!(l["upstream_addr"], b1.target().as_str());
    assert_eq!(
        (l["bytes_in"].as_u64(), l["bytes_out"].as_u64()),
        (Some(4), Some(7))
    );
    assert_eq!(l["end"], "closed");
    for field in ["time", "duration_ms", "worker"] {
        assert!(l.get(field).is_some(), "missing {field}: {l}");
    }
    // No reachable target: the line says so.
    let path2 = dir.join("access2.log");
    let yaml = format!(
        "log: {{ format: json, access_log: {} }}\n{}",
        path2.display(),
        tcp_yaml("$DEAD", "", "")
    );
    let mut proxy = Proxy::start(Driver::any(), &yaml, &[("DEAD", dead)]);
    let mut c = connect(proxy.addr());
    let _ = read_to_end_or_error(&mut c);
    shutdown_bounded(proxy.take_server()).unwrap();
    let text = std::fs::read_to_string(&path2).unwrap();
    let l: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(l["end"], "no_target");
    // The target whose dial failed is named.
    assert_eq!(l["upstream_addr"], dead_addr.as_str(), "{l}");
}

driver_tests! {
    fn tcp_listener_terminates_tls_and_tunnels_plaintext_to_the_target(driver) {
        use std::io::Read;
        let dir = TempDir::new();
        let pki = support::tls::Pki::new(dir.path(), "l4");
        let cert = pki.server("edge", &["edge.test"]);
        let backend = L4Backend::start(Mode::Echo);
        let listener_extra = format!(
            "    tls:\n      certificates:\n        - cert: {}\n          key: {}\n",
            cert.cert.display(),
            cert.key.display()
        );
        let proxy = start(driver, &tcp_yaml("$B1", &listener_extra, ""), &backend);
        let config = support::tls::client_config(pki.roots(), None);
        let name = rustls::pki_types::ServerName::try_from("edge.test").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let sock = connect(proxy.addr());
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"hello over tls").unwrap();
        let mut got = [0u8; 14];
        tls.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello over tls", "the plaintext echo came back through TLS");
        assert!(backend.accepted() >= 1);
        // No splice on a TLS side: the bytes went through the buffered relay.
        assert_eq!(proxy.server().l4_spliced_bytes(), 0);
    }
}
