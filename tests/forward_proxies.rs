//! `transport.forward_proxy_url` with credentials, `https://` and `socks5://` proxies: an
//! https:// upstream reached through each kind (test proxies from tests/support), and wrong
//! credentials as a 502 with a log line saying why.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::connect_proxy::{ConnectProxy, Options as ConnectOptions};
use support::socks5::{Options as SocksOptions, Socks5Proxy};
use support::tls::{Pki, TlsBackend};
use support::*;

/// An https:// backend named `localhost` (a name the proxy, not ringway, is asked to reach).
fn https_backend(dir: &TempDir) -> (Pki, TlsBackend) {
    let pki = Pki::new(dir.path(), "fp");
    let backend = TlsBackend::start("tb", &pki.server("tb", &["localhost"]), None);
    (pki, backend)
}

fn yaml(url: &str) -> String {
    one_upstream_yaml(
        "\"https://localhost:$PORT\"",
        &format!(
            "    transport:\n      forward_proxy_url: \"{url}\"\n      tls: {{ ca: [$CA] }}\n"
        ),
    )
}

fn start(url: &str, pki: &Pki, backend: &TlsBackend, proxy: std::net::SocketAddr) -> Proxy {
    let vars = [
        ("PORT", backend.addr.port().to_string()),
        ("FP", proxy.to_string()),
        ("CA", pki.ca_file.display().to_string()),
    ];
    Proxy::start(Driver::any(), &yaml(url), &vars)
}

#[test]
fn an_https_upstream_is_reached_through_an_http_proxy_that_wants_credentials() {
    let dir = TempDir::new();
    let (pki, backend) = https_backend(&dir);
    // RFC 7617's example pair, percent-encoded in the URL (the user has an '@', the password a
    // ':' and a space).
    let forward = ConnectProxy::start_with(ConnectOptions {
        authorization: Some("Basic YWxAaWNlOnA6c3Mgdw==".into()),
        ..ConnectOptions::default()
    });
    let proxy = start(
        "http://al%40ice:p%3Ass%20w@$FP",
        &pki,
        &backend,
        forward.addr,
    );
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert!(r.text().starts_with("tb "), "{}", r.text());
    let port = backend.addr.port();
    assert_eq!(forward.seen(), [format!("localhost:{port}")]);
    for url in ["http://al%40ice:wrong@$FP", "http://$FP"] {
        let proxy = start(url, &pki, &backend, forward.addr);
        assert_eq!(proxy.get("/").status, 502, "{url}");
    }
}

#[test]
fn wrong_proxy_credentials_are_a_502_and_a_log_line_naming_the_407() {
    let dir = TempDir::new();
    let (pki, backend) = https_backend(&dir);
    let forward = ConnectProxy::start_with(ConnectOptions {
        authorization: Some("Basic dTpyaWdodA==".into()),
        ..ConnectOptions::default()
    });
    let vars = [
        ("PORT", backend.addr.port().to_string()),
        ("FP", forward.addr.to_string()),
        ("CA", pki.ca_file.display().to_string()),
    ];
    let config = dir.write(
        "fp.yaml",
        &format!(
            "workers: 1\npin_workers: false\n{}",
            subst(&yaml("http://u:wrong@$FP"), &vars)
        ),
    );
    let mut ringway = support::process::Ringway::start(&config, &[]);
    let addr = ringway.listener("web");
    assert_eq!(get(addr, "/").status, 502);
    let line = ringway
        .wait_line(Duration::from_secs(10), |l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {:#?}", ringway.seen));
    assert!(
        line.contains("407") && line.contains("refused the credentials"),
        "{line}"
    );
    assert!(
        !line.contains("wrong"),
        "the password stays out of the log: {line}"
    );
}

#[test]
fn an_https_upstream_is_reached_through_an_https_proxy() {
    let dir = TempDir::new();
    let (pki, backend) = https_backend(&dir);
    // The proxy's certificate comes from the same CA as the target's: `transport.tls.ca`
    // verifies both.
    let forward = ConnectProxy::start_with(ConnectOptions {
        tls: Some(pki.server("fp", &["127.0.0.1"])),
        ..ConnectOptions::default()
    });
    let proxy = start("https://$FP", &pki, &backend, forward.addr);
    let mut c = proxy.client();
    for _ in 0..3 {
        let r = c.request(get_req("/", ""));
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert!(r.text().starts_with("tb "), "{}", r.text());
    }
    let port = backend.addr.port();
    assert_eq!(
        forward.seen(),
        [format!("localhost:{port}")],
        "one pooled tunnel served the three requests"
    );
    // A proxy whose certificate the roots do not vouch for is a failed dial.
    let other = Pki::new(dir.path(), "other");
    let untrusted = ConnectProxy::start_with(ConnectOptions {
        tls: Some(other.server("fp2", &["127.0.0.1"])),
        ..ConnectOptions::default()
    });
    let proxy = start("https://$FP", &pki, &backend, untrusted.addr);
    assert_eq!(proxy.get("/").status, 502);
    assert!(
        untrusted.seen().is_empty(),
        "no CONNECT before the TLS check"
    );
}

#[test]
fn a_plain_http_upstream_is_reached_through_an_https_proxy() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "fp");
    let backend = Backend::start("plain");
    let forward = ConnectProxy::start_with(ConnectOptions {
        tls: Some(pki.server("fp", &["127.0.0.1"])),
        ..ConnectOptions::default()
    });
    let port = backend.addr().port();
    let yaml = one_upstream_yaml(
        "\"http://localhost:$PORT\"",
        "    transport:\n      forward_proxy_url: \"https://$FP\"\n      tls: { ca: [$CA] }\n",
    );
    let vars = [
        ("PORT", port.to_string()),
        ("FP", forward.addr.to_string()),
        ("CA", pki.ca_file.display().to_string()),
    ];
    let proxy = Proxy::start(Driver::any(), &yaml, &vars);
    let r = proxy.get("/x");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert_eq!(backend.requests(), 1);
    assert_eq!(forward.seen(), [format!("localhost:{port}")]);
}

#[test]
fn an_https_upstream_is_reached_through_a_socks5_proxy_that_resolves_its_name() {
    let dir = TempDir::new();
    let (pki, backend) = https_backend(&dir);
    let names = HashMap::from([("localhost".to_string(), "127.0.0.1".parse().unwrap())]);
    let socks = Socks5Proxy::start(SocksOptions {
        credentials: Some(("bob".into(), "s3cret".into())),
        names: names.clone(),
    });
    let proxy = start("socks5://bob:s3cret@$FP", &pki, &backend, socks.addr);
    let r = proxy.get("/");
    assert_eq!(r.status, 200, "{}", r.head_text());
    assert!(r.text().starts_with("tb "), "{}", r.text());
    let port = backend.addr.port();
    assert_eq!(
        socks.seen(),
        [format!("localhost:{port}")],
        "sent as a name"
    );
    for url in ["socks5://bob:wrong@$FP", "socks5://$FP"] {
        let proxy = start(url, &pki, &backend, socks.addr);
        assert_eq!(proxy.get("/").status, 502, "{url}");
    }
    // Without authentication.
    let open = Socks5Proxy::start(SocksOptions {
        credentials: None,
        names,
    });
    let proxy = start("socks5://$FP", &pki, &backend, open.addr);
    assert_eq!(proxy.get("/").status, 200);
}

#[test]
fn active_health_probes_go_through_http_and_socks5_proxies() {
    let dir = TempDir::new();
    let (pki, backend) = https_backend(&dir);
    let names = HashMap::from([("localhost".to_string(), "127.0.0.1".parse().unwrap())]);
    let connect = ConnectProxy::start_with(ConnectOptions {
        authorization: Some("Basic dTpw".into()),
        ..ConnectOptions::default()
    });
    let socks = Socks5Proxy::start(SocksOptions {
        credentials: Some(("u".into(), "p".into())),
        names,
    });
    let health = "    health: { active: { uri: /, interval: 100ms, timeout: 2s } }\n";
    let port = backend.addr.port();
    for (url, addr) in [
        ("http://u:p@$FP", connect.addr),
        ("socks5://u:p@$FP", socks.addr),
    ] {
        let vars = [
            ("PORT", port.to_string()),
            ("FP", addr.to_string()),
            ("CA", pki.ca_file.display().to_string()),
        ];
        let proxy = Proxy::start(Driver::any(), &format!("{}{health}", yaml(url)), &vars);
        let seen = || match url.starts_with("http") {
            true => connect.seen().len(),
            false => socks.seen().len(),
        };
        assert!(
            wait_for(Duration::from_secs(10), || seen() >= 3),
            "{url}: probes open tunnels through the proxy"
        );
        assert_eq!(proxy.get("/").status, 200, "{url}");
    }
    assert!(connect
        .seen()
        .iter()
        .all(|a| *a == format!("localhost:{port}")));
}
