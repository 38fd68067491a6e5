//! TLS to upstreams as Caddy users expect it: the operating system's trust store by default
//! (webpki's roots when it is empty), `curves`, and `renegotiation: never`.

#[macro_use]
mod support;

use std::time::Duration;

use support::process::Ringway;
use support::tls::{Pki, TlsBackend};
use support::*;

/// A config whose one http listener `web` proxies to `https://127.0.0.1:PORT` with no `ca`.
fn https_config(dir: &TempDir, backend: &TlsBackend, tls: &str) -> std::path::PathBuf {
    dir.write(
        "up.yaml",
        &format!(
            "workers: 1\npin_workers: false\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    \
             routes: [{{ upstream: app }}]\nupstreams:\n  app:\n    targets: [\"https://{}\"]\n{tls}",
            backend.addr
        ),
    )
}

#[test]
fn the_system_trust_store_verifies_an_upstream_without_ca() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "sys");
    let backend = TlsBackend::start("tb", &pki.server("tb", &["127.0.0.1"]), None);
    let config = https_config(&dir, &backend, "");
    // SSL_CERT_FILE is how the system store is pointed at a bundle (as OpenSSL reads it).
    let ca = pki.ca_file.display().to_string();
    let mut trusted = Ringway::start(&config, &[("SSL_CERT_FILE", &ca)]);
    let r = get(trusted.listener("web"), "/");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert!(r.text().starts_with("tb "), "{}", r.text());
    // An empty system store falls back to webpki's roots, which do not know this CA.
    let empty = TempDir::new();
    let mut fallback = Ringway::start(
        &config,
        &[
            ("SSL_CERT_DIR", &empty.path().display().to_string()),
            (
                "SSL_CERT_FILE",
                &empty.join("none.pem").display().to_string(),
            ),
        ],
    );
    let r = get(fallback.listener("web"), "/");
    assert_eq!(r.status, 502, "{}", r.head_text());
    let why = fallback
        .wait_line(Duration::from_secs(5), |l| l.contains("WARN"))
        .unwrap_or_default();
    assert!(
        why.contains("issuer") || why.contains("certificate"),
        "{why}"
    );
}

#[test]
fn curves_limit_the_key_exchange_groups_offered() {
    use rustls::crypto::ring::kx_group;
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "cv");
    let server = pki.server("tb", &["127.0.0.1"]);
    let backend = TlsBackend::start_with_groups("tb", &server, vec![kx_group::SECP384R1]);
    let ca = pki.ca_file.display().to_string();
    for (curves, want) in [
        ("[x25519]", 502),
        ("[P-384]", 200),
        ("[x25519, secp384r1]", 200),
    ] {
        let yaml = format!(
            "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes: [{{ upstream: app }}]\n\
             upstreams:\n  app:\n    targets: [\"https://$B\"]\n    \
             transport:\n      tls: {{ ca: [$CA], curves: {curves}, renegotiation: never }}\n"
        );
        let proxy = Proxy::start(
            Driver::any(),
            &yaml,
            &[("B", backend.addr.to_string()), ("CA", ca.clone())],
        );
        let r = proxy.get("/");
        assert_eq!(r.status, want, "curves {curves}: {}", r.head_text());
    }
}

#[test]
fn renegotiation_other_than_never_and_unknown_curves_are_refused_with_a_reason() {
    let dir = TempDir::new();
    for (tls, message) in [
        ("renegotiation: freely", "rustls never renegotiates"),
        ("curves: [secp521r1]", "not available in this build"),
        ("curves: [brainpool]", "unknown curve"),
    ] {
        let path = dir.write(
            "bad.yaml",
            &format!(
                "listeners:\n  - listen: 127.0.0.1:0\n    routes: [{{ upstream: app }}]\nupstreams:\n  \
                 app:\n    targets: [\"https://127.0.0.1:9443\"]\n    transport:\n      tls:\n        {tls}\n"
            ),
        );
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
            .args(["validate", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{tls}");
        assert!(err.contains("bad.yaml:9:"), "line 9: {err}");
        assert!(err.contains(message), "{tls}: {err}");
    }
}
