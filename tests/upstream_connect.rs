//! The shared upstream connector: what layer 7 has, layer 4 gets. A `protocol: tcp` listener
//! dials TLS targets with the upstream's verification settings, keeps trying for
//! `try_duration`, and feeds passive health from failed tunnels; and a target that hangs after
//! accepting is taken out of rotation after one timed-out round trip.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::{Duration, Instant};

use support::l4::{connect, read_to_end_or_error};
use support::targets::{echo_on, Handshake, Hung, ResetOnAccept, TlsEcho};
use support::tls::Pki;
use support::*;

/// A tcp listener `web` tunnelling to upstream `app` with `targets` (a YAML flow list body);
/// `upstream_extra` is lines indented under `app:`.
fn tcp_yaml(targets: &str, upstream_extra: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    upstream: app\n\
         upstreams:\n  app:\n    targets: [{targets}]\n{upstream_extra}"
    )
}

/// Sends `msg` on a new connection to `proxy`, ends the stream, and reads until the proxy
/// closes: `Ok` with what arrived, or `Err` with the error kind and what arrived before it.
fn exchange(proxy: &Proxy, msg: &[u8]) -> Result<Vec<u8>, (std::io::ErrorKind, Vec<u8>)> {
    let mut c = connect(proxy.addr());
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if let Err(e) = c.write_all(msg) {
        return Err((e.kind(), Vec::new()));
    }
    let _ = c.shutdown(Shutdown::Write);
    read_to_end_or_error(&mut c)
}

/// A TLS echo server whose certificate (issued by `signer`) names backend.test and 127.0.0.1,
/// and a tcp listener dialing it over TLS, trusting `trusted`'s CA, verifying backend.test.
fn tls_tunnel(driver: Driver, trusted: &Pki, signer: &Pki) -> (Proxy, TlsEcho) {
    let server = signer.server("echo", &["backend.test", "127.0.0.1"]);
    let echo = TlsEcho::start(&server);
    let yaml = tcp_yaml(
        "\"$TARGET\"",
        "    transport:\n      tls: { ca: [\"$CA\"], server_name: backend.test }\n",
    );
    let proxy = Proxy::start(
        driver,
        &yaml,
        &[
            ("TARGET", echo.https_target()),
            ("CA", trusted.ca_file.display().to_string()),
        ],
    );
    (proxy, echo)
}

driver_tests! {
    fn tcp_listener_in_front_of_a_tls_echo_server_echoes_through_tls(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let (proxy, echo) = tls_tunnel(driver, &pki, &pki);
        let msg = b"plaintext in, TLS to the target, plaintext back";
        let mut c = connect(proxy.addr());
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        let read = c.read_exact(&mut back);
        let seen = echo.wait_handshakes(1, Duration::from_secs(3));
        assert!(
            read.is_ok(),
            "no echo through the tunnel ({:?}); the echo server saw {seen:?}",
            read.unwrap_err()
        );
        assert_eq!(back, msg);
        // The echo server completed exactly one TLS handshake, with the configured name.
        match &seen[..] {
            [Handshake::Done { sni }] => assert_eq!(sni, "backend.test"),
            other => panic!("expected one completed handshake with SNI backend.test: {other:?}"),
        }
        assert_eq!(echo.echoed_bytes(), msg.len());
        // The client's end of stream reaches the target, whose close comes back as a clean end.
        c.shutdown(Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let rest = within(Duration::from_secs(5), "the tunnel's end", move || {
            read_to_end_or_error(&mut c).map_err(|(k, _)| k)
        });
        assert_eq!(rest, Ok(Vec::new()));
    }

    fn idle_tunnel_to_a_tls_target_is_closed_after_idle_timeout(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let echo = TlsEcho::start(&pki.server("echo", &["backend.test", "127.0.0.1"]));
        let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocol: tcp\n    \
                    upstream: app\n    idle_timeout: 400ms\n\
                    upstreams:\n  app:\n    targets: [\"$TARGET\"]\n    \
                    transport:\n      tls: { ca: [\"$CA\"], server_name: backend.test }\n";
        let proxy = Proxy::start(
            driver,
            yaml,
            &[
                ("TARGET", echo.https_target()),
                ("CA", pki.ca_file.display().to_string()),
            ],
        );
        let mut c = connect(proxy.addr());
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        c.write_all(b"k").unwrap();
        c.read_exact(&mut buf).unwrap();
        let start = Instant::now();
        let got = read_to_end_or_error(&mut c).map_err(|(k, _)| k);
        let took = start.elapsed();
        assert_eq!(got, Ok(Vec::new()), "the idle TLS tunnel did not end cleanly");
        assert!(took >= Duration::from_millis(300), "closed too early: {took:?}");
        assert!(took < Duration::from_secs(3), "closed too late: {took:?}");
    }

    fn tcp_listener_refuses_a_tls_target_whose_certificate_the_ca_did_not_sign(driver) {
        let dir = TempDir::new();
        let signer = Pki::new(dir.path(), "up");
        let other = Pki::new(dir.path(), "other");
        let (proxy, echo) = tls_tunnel(driver, &other, &signer);
        let start = Instant::now();
        let got = exchange(&proxy, b"must not arrive");
        let took = start.elapsed();
        let seen = echo.wait_handshakes(1, Duration::from_secs(3));
        // The proxy spoke TLS and refused the certificate (the client side of the handshake
        // sent an alert), rather than sending the client's bytes in plaintext.
        match &seen[..] {
            [Handshake::Failed(why)] => assert!(
                why.to_ascii_lowercase().contains("alert"),
                "the handshake failed, but not on a certificate alert from the proxy: {why}"
            ),
            other => panic!("expected one handshake the proxy refused: {other:?}"),
        }
        assert_eq!(echo.echoed_bytes(), 0);
        let arrived = match got {
            Ok(b) | Err((_, b)) => b,
        };
        assert!(arrived.is_empty(), "the client got bytes back: {arrived:?}");
        assert!(took < Duration::from_secs(3), "the client was closed only after {took:?}");
    }

    fn hung_target_is_skipped_after_one_timed_out_round_trip(driver) {
        let good = Backend::start("good");
        let hung = Hung::start();
        let yaml = format!(
            "workers: 2\n{}",
            one_upstream_yaml(
                "$GOOD, $HUNG",
                "    lb: { policy: round_robin }\n    \
                 health: { passive: { fail_duration: 30s, max_fails: 1 } }\n    \
                 transport: { response_header_timeout: 300ms }\n",
            )
        );
        let proxy = Proxy::start(
            driver,
            &yaml,
            &[("GOOD", good.target()), ("HUNG", hung.target())],
        );
        let started = Instant::now();
        let statuses: Vec<u16> = (0..20).map(|_| proxy.get("/").status).collect();
        let failed: Vec<(usize, u16)> = statuses
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, s)| *s != 200)
            .collect();
        // One timed-out round trip per worker at most (each may meet the target once before
        // the shared failure memory has it down).
        assert!(
            failed.len() <= 2,
            "{} of 20 requests failed (index, status): {failed:?}; all: {statuses:?}; \
             the hung target accepted {} connections",
            failed.len(),
            hung.accepted()
        );
        assert!(failed.iter().all(|(_, s)| *s == 504), "{statuses:?}");
        assert!(hung.accepted() <= 2, "the hung target got {} connections", hung.accepted());
        assert!(good.requests() >= 18);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    fn tcp_listener_fails_over_for_try_duration_until_a_target_comes_up(driver) {
        let port = refused_addr();
        let yaml = tcp_yaml("$T", "    lb: { try_duration: 2s, try_interval: 100ms }\n");
        let proxy = Proxy::start(driver, &yaml, &[("T", port.to_string())]);
        let addr = proxy.addr();
        let client = std::thread::spawn(move || {
            let mut c = connect(addr);
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let start = Instant::now();
            c.write_all(b"wait for me").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            (read_to_end_or_error(&mut c), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let listener = TcpListener::bind(port).expect("rebind the target port");
        let accepted = echo_on(listener);
        let (got, took) = client.join().unwrap();
        assert_eq!(
            got.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            Ok("wait for me".to_string()),
            "after {took:?}"
        );
        assert!(took >= Duration::from_millis(250), "echoed before the target was up: {took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    fn tunnel_that_fails_at_once_marks_its_target_down(driver) {
        let a = ResetOnAccept::start();
        let b = support::l4::L4Backend::start(support::l4::Mode::Echo);
        let yaml = tcp_yaml(
            "$A, $B",
            "    lb: { policy: round_robin }\n    \
             health: { passive: { fail_duration: 30s, max_fails: 1 } }\n",
        );
        let proxy = Proxy::start(driver, &yaml, &[("A", a.target()), ("B", b.target())]);
        // B echoes and then says `bye`; A's tunnels end in a reset.
        let results: Vec<Result<String, std::io::ErrorKind>> = (0..8)
            .map(|_| {
                exchange(&proxy, b"ping")
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .map_err(|(k, _)| k)
            })
            .collect();
        let failed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_deref() != Ok("pingbye"))
            .map(|(i, _)| i)
            .collect();
        assert!(
            failed.len() <= 1,
            "tunnels {failed:?} of 8 failed; target A (resetting) accepted {}: {results:?}",
            a.accepted()
        );
        assert!(a.accepted() <= 1, "A accepted {} tunnels", a.accepted());
        assert_eq!(b.accepted(), 8 - failed.len());
    }
}

/// The TLS echo server the tests above rely on, met by a plain rustls client: it echoes after
/// a verified handshake and records the SNI, and a client refusing its certificate shows up as
/// a failed handshake naming the alert (so the tests above can tell that from plaintext).
#[test]
fn tls_echo_server_echoes_for_a_verifying_client_and_records_a_refusal_as_an_alert() {
    use support::tls::{client_config, TlsClient};
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "up");
    let other = Pki::new(dir.path(), "other");
    let echo = TlsEcho::start(&pki.server("echo", &["backend.test", "127.0.0.1"]));

    let mut c = TlsClient::connect(
        echo.addr,
        client_config(pki.roots(), None),
        Some("backend.test"),
    )
    .expect("handshake with the right CA");
    c.tls.write_all(b"hello").unwrap();
    c.tls.flush().unwrap();
    let mut back = [0u8; 5];
    c.tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    drop(c);

    let refused = TlsClient::connect(
        echo.addr,
        client_config(other.roots(), None),
        Some("backend.test"),
    );
    assert!(
        refused.is_err(),
        "a client trusting another CA completed the handshake"
    );
    let seen = echo.wait_handshakes(2, Duration::from_secs(3));
    match &seen[..] {
        [Handshake::Done { sni }, Handshake::Failed(why)] => {
            assert_eq!(sni, "backend.test");
            assert!(why.to_ascii_lowercase().contains("alert"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(echo.echoed_bytes(), 5);
}
