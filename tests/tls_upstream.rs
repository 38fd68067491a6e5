//! TLS to upstreams: verification (ca, server_name, IP names), mutual TLS, failure modes,
//! pooled connection reuse and session resumption, https_ports / except_ports.

#[macro_use]
mod support;

use std::time::Duration;
use support::tls::{Pki, TlsBackend};
use support::*;

fn proxy_to(driver: Driver, target: &str, transport: &str) -> Proxy {
    let mut extra = String::new();
    if !transport.is_empty() {
        extra.push_str("    transport:\n");
        for line in transport.lines() {
            extra.push_str("      ");
            extra.push_str(line);
            extra.push('\n');
        }
    }
    Proxy::start(
        driver,
        &one_upstream_yaml(&format!("\"{target}\""), &extra),
        &[],
    )
}

struct Setup {
    _dir: TempDir,
    pki: Pki,
    backend: TlsBackend,
}

/// A TLS backend whose certificate (from a fresh test CA) names backend.test and 127.0.0.1.
fn setup(client_ca: bool) -> Setup {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "up");
    let server = pki.server("backend", &["backend.test", "127.0.0.1"]);
    let backend = TlsBackend::start("tb", &server, client_ca.then_some(&pki));
    Setup {
        _dir: dir,
        pki,
        backend,
    }
}

driver_tests! {
    fn https_target_is_verified_with_the_ca_and_server_name(driver) {
        let s = setup(false);
        let ca = s.pki.ca_file.display();
        let proxy = proxy_to(
            driver,
            &format!("https://{}", s.backend.addr),
            &format!("tls:\n  ca: [{ca}]\n  server_name: backend.test"),
        );
        let r = proxy.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "tb sni=backend.test client_cert=no\n");
    }

    fn keep_alive_requests_reuse_one_pooled_tls_connection(driver) {
        let s = setup(false);
        let ca = s.pki.ca_file.display();
        let proxy = proxy_to(driver, &format!("https://{}", s.backend.addr), &format!("tls: {{ ca: [{ca}] }}"));
        let mut c = proxy.client();
        for i in 0..5 {
            let r = c.request(get_req(&format!("/r{i}"), ""));
            assert_eq!(r.status, 200);
        }
        for _ in 0..3 {
            assert_eq!(proxy.get("/fresh-client").status, 200);
        }
        assert_eq!(s.backend.requests(), 8);
        assert_eq!((s.backend.connections(), s.backend.handshakes()), (1, 1));
    }
}

#[test]
fn an_ip_target_is_verified_against_its_ip_address() {
    let s = setup(false);
    let ca = s.pki.ca_file.display();
    let proxy = proxy_to(
        Driver::any(),
        &format!("https://{}", s.backend.addr),
        &format!("tls: {{ ca: [{ca}] }}"),
    );
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    // No SNI is sent for an IP address.
    assert_eq!(r.text(), "tb sni=- client_cert=no\n");
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let s = setup(true);
    let client = s.pki.client("proxy-client");
    let ca = s.pki.ca_file.display();
    let with = format!(
        "tls:\n  ca: [{ca}]\n  client_cert: {}\n  client_key: {}",
        client.cert.display(),
        client.key.display()
    );
    let target = format!("https://{}", s.backend.addr);
    let proxy = proxy_to(Driver::any(), &target, &with);
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tb sni=- client_cert=yes\n");
    drop(proxy);
    let without = proxy_to(Driver::any(), &target, &format!("tls: {{ ca: [{ca}] }}"));
    assert_eq!(without.get("/").status, 502);
}

#[test]
fn certificate_problems_are_502_and_insecure_skip_verify_lets_them_through() {
    let s = setup(false);
    let ca = s.pki.ca_file.display();
    let target = format!("https://{}", s.backend.addr);
    for (why, transport) in [
        ("unknown issuer", String::new()),
        (
            "name mismatch",
            format!("tls: {{ ca: [{ca}], server_name: other.test }}"),
        ),
    ] {
        let proxy = proxy_to(Driver::any(), &target, &transport);
        let r = proxy.get("/");
        assert_eq!(r.status, 502, "{why}: {}", r.text());
    }
    let proxy = proxy_to(
        Driver::any(),
        &target,
        "tls: { insecure_skip_verify: true, server_name: other.test }",
    );
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tb sni=other.test client_cert=no\n");
    assert_eq!(s.backend.requests(), 1);
}

#[test]
fn an_expired_upstream_certificate_is_a_502() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "old");
    let expired = pki.expired_server("expired", &["127.0.0.1"]);
    let backend = TlsBackend::start("old", &expired, None);
    let ca = pki.ca_file.display();
    let proxy = proxy_to(
        Driver::any(),
        &format!("https://{}", backend.addr),
        &format!("tls: {{ ca: [{ca}] }}"),
    );
    assert_eq!(proxy.get("/").status, 502);
    assert_eq!(backend.requests(), 0);
}

#[test]
fn new_upstream_connections_resume_the_tls_session() {
    let s = setup(false);
    let ca = s.pki.ca_file.display();
    let proxy = proxy_to(
        Driver::any(),
        &format!("https://{}", s.backend.addr),
        &format!("keepalive: false\ntls: {{ ca: [{ca}] }}"),
    );
    for _ in 0..4 {
        assert_eq!(proxy.get("/").status, 200);
    }
    assert_eq!(s.backend.connections(), 4);
    assert!(s.backend.resumed() >= 2, "resumed {}", s.backend.resumed());
}

#[test]
fn https_ports_dial_tls_and_keep_verification_on() {
    let s = setup(false);
    let port = s.backend.addr.port();
    let target = s.backend.addr.to_string();
    // Detected as TLS, verified against the webpki roots: the test CA is unknown there.
    let proxy = proxy_to(Driver::any(), &target, &format!("https_ports: [{port}]"));
    assert_eq!(proxy.get("/").status, 502);
    assert_eq!(s.backend.requests(), 0);
    assert!(s.backend.connections() >= 1);
    drop(proxy);
    let ca = s.pki.ca_file.display();
    let proxy = proxy_to(
        Driver::any(),
        &target,
        &format!("https_ports: [{port}]\ntls: {{ ca: [{ca}] }}"),
    );
    assert_eq!(proxy.get("/").status, 200);
}

#[test]
fn except_ports_dial_those_targets_without_tls() {
    let plain = Backend::start("plain");
    let port = plain.addr().port();
    let proxy = proxy_to(
        Driver::any(),
        &plain.target(),
        &format!("tls: {{ insecure_skip_verify: true, except_ports: [{port}] }}"),
    );
    let r = proxy.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "plain\n"));
}

#[test]
fn a_large_response_from_a_tls_upstream_arrives_whole_without_splice() {
    let s = setup(false);
    let ca = s.pki.ca_file.display();
    let proxy = proxy_to(
        Driver::any(),
        &format!("https://{}", s.backend.addr),
        &format!("tls: {{ ca: [{ca}], server_name: backend.test }}"),
    );
    let n = 2 << 20;
    let r = proxy.get(&format!("/big?n={n}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), n);
    assert!(r.body.iter().all(|&b| b == b'x'));
    assert_eq!(proxy.server().spliced_bytes(), (0, 0));
}

#[test]
fn active_health_probes_tls_targets_over_verified_tls() {
    let s = setup(false);
    let ca = s.pki.ca_file.display();
    let target = format!("https://{}", s.backend.addr);
    let health = "    health:\n      active: { uri: /health, interval: 50ms, timeout: 1s, fails: 1, passes: 1 }\n";
    let ok = Proxy::start(
        Driver::any(),
        &one_upstream_yaml(
            &format!("\"{target}\""),
            &format!(
                "    transport:\n      tls: {{ ca: [{ca}], server_name: backend.test }}\n{health}"
            ),
        ),
        &[],
    );
    // The probes complete TLS handshakes against the backend, and the target stays up.
    assert!(
        wait_for(Duration::from_secs(3), || s.backend.handshakes() >= 2),
        "no TLS probes"
    );
    assert_eq!(ok.get("/").status, 200);
    ok.shutdown();
    // Verified as the data path verifies: a name the certificate lacks marks the target down.
    let bad = Proxy::start(
        Driver::any(),
        &one_upstream_yaml(
            &format!("\"{target}\""),
            &format!(
                "    transport:\n      tls: {{ ca: [{ca}], server_name: other.test }}\n{health}"
            ),
        ),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(3), || bad.get("/").status == 503),
        "a target failing TLS verification in its probes is never marked down"
    );
}
