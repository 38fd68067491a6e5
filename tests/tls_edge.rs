//! TLS termination on listeners: SNI certificate choice, keep-alive, client authentication,
//! resumption across workers, reload, failed handshakes, a real curl.

#[macro_use]
mod support;

use std::time::Duration;

use support::tls::{client_config, Pki, TlsClient};
use support::*;

/// Certificates for `a.test`, `b.test` and `*.wild.test` (the first one is the default).
struct Edge {
    dir: TempDir,
    pki: Pki,
    backend: Backend,
}

impl Edge {
    fn new() -> Edge {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "edge");
        pki.server("a", &["a.test"]);
        pki.server("b", &["b.test"]);
        pki.server("wild", &["*.wild.test"]);
        Edge {
            dir,
            pki,
            backend: Backend::start("b1"),
        }
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        let p = |n: &str| self.dir.join(n).display().to_string();
        vec![
            ("B1", self.backend.target()),
            ("A_CERT", p("a.pem")),
            ("A_KEY", p("a.key")),
            ("B_CERT", p("b.pem")),
            ("B_KEY", p("b.key")),
            ("W_CERT", p("wild.pem")),
            ("W_KEY", p("wild.key")),
            ("CA", self.pki.ca_file.display().to_string()),
        ]
    }

    fn start(&self, driver: Driver, tls_extra: &str, top: &str) -> Proxy {
        let yaml = format!(
            "{top}listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: $A_CERT, key: $A_KEY }}\n        - {{ cert: $B_CERT, key: $B_KEY }}\n        - {{ cert: $W_CERT, key: $W_KEY }}\n{tls_extra}    routes:\n      - match: {{ path: /scheme }}\n        respond: {{ body: \"{{scheme}}\" }}\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n"
        );
        Proxy::start(driver, &yaml, &self.vars())
    }
}

driver_tests! {
    fn sni_picks_the_certificate_by_name_and_the_first_is_the_default(driver) {
        let edge = Edge::new();
        let proxy = edge.start(driver, "", "");
        let verified = client_config(edge.pki.roots(), None);
        let any = support::tls::accept_any_config();
        for (sni, expect) in [
            (Some("a.test"), "a.test"),
            (Some("b.test"), "b.test"),
            (Some("B.TEST"), "b.test"),
            (Some("x.wild.test"), "*.wild.test"),
            (Some("unknown.test"), "a.test"),
            (None, "a.test"),
        ] {
            // The default certificate does not name unknown.test (nor the no-SNI client's
            // placeholder): what is under test there is the server's choice, not verification.
            let config = if expect.ends_with(".test") && sni.is_some_and(|s| s != "unknown.test") {
                verified.clone()
            } else {
                any.clone()
            };
            let c = TlsClient::connect(proxy.addr(), config, sni)
                .unwrap_or_else(|e| panic!("handshake with SNI {sni:?}: {e}"));
            assert_eq!(c.peer_names(), [expect], "SNI {sni:?}");
        }
    }

    fn keep_alive_over_tls_serves_several_requests_and_forwards_https(driver) {
        let edge = Edge::new();
        let proxy = edge.start(driver, "", "");
        let config = client_config(edge.pki.roots(), None);
        let mut c = TlsClient::connect(proxy.addr(), config, Some("a.test")).unwrap();
        for i in 0..5 {
            let r = c.get("a.test", &format!("/r{i}")).unwrap();
            assert_eq!((r.status, r.body.as_str()), (200, "b1\n"));
        }
        assert_eq!(edge.backend.requests(), 5);
        let req = edge.backend.last_request();
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
        let r = c.get("a.test", "/scheme").unwrap();
        assert_eq!(r.body, "https");
        assert_eq!(c.tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
}

#[test]
fn plain_http_to_a_tls_listener_gets_nginx_400_is_counted_and_disturbs_nobody() {
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "", "");
    let config = client_config(edge.pki.roots(), None);
    let mut good = TlsClient::connect(proxy.addr(), config.clone(), Some("a.test")).unwrap();
    assert_eq!(good.get("a.test", "/").unwrap().status, 200);
    let mut plain = proxy.client();
    plain.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let answer = plain.read_response();
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.text(),
        "The plain HTTP request was sent to HTTPS port\n"
    );
    plain.expect_closed();
    // A client trusting another CA aborts the handshake itself.
    let other = Pki::new(edge.dir.path(), "other");
    assert!(TlsClient::connect(
        proxy.addr(),
        client_config(other.roots(), None),
        Some("a.test")
    )
    .is_err());
    assert!(wait_for(Duration::from_secs(5), || proxy
        .server()
        .tls_handshake_failures()
        >= 2));
    assert_eq!(good.get("a.test", "/again").unwrap().status, 200);
}

#[test]
fn a_silent_client_is_dropped_after_handshake_timeout_without_holding_up_others() {
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "      handshake_timeout: 2s\n", "");
    let mut silent = proxy.client();
    // The stalled handshake runs in its own task: the accept loop takes the next client.
    let started = std::time::Instant::now();
    let config = client_config(edge.pki.roots(), None);
    let mut other = TlsClient::connect(proxy.addr(), config, Some("a.test")).unwrap();
    assert_eq!(other.get("a.test", "/").unwrap().status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert!(silent.is_closed_within(Duration::from_secs(5)));
    assert_eq!(proxy.server().tls_handshake_failures(), 1);
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client() {
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "      min_version: \"1.3\"\n", "");
    let mut c12 = (*client_config(edge.pki.roots(), None)).clone();
    c12 = rustls::ClientConfig::builder_with_provider(c12.crypto_provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(edge.pki.roots())
        .with_no_client_auth();
    assert!(TlsClient::connect(proxy.addr(), c12.into(), Some("a.test")).is_err());
    let c13 = client_config(edge.pki.roots(), None);
    let mut c = TlsClient::connect(proxy.addr(), c13, Some("a.test")).unwrap();
    assert_eq!(
        c.tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(c.get("a.test", "/").unwrap().status, 200);
}

#[test]
fn required_client_auth_admits_only_clients_with_a_certificate_from_the_ca() {
    let edge = Edge::new();
    let clients = Pki::new(edge.dir.path(), "clients");
    let alice = clients.client("alice");
    let strangers = Pki::new(edge.dir.path(), "strangers");
    let mallory = strangers.client("mallory");
    let extra = format!(
        "      client_auth:\n        ca: [{}]\n        required: true\n",
        clients.ca_file.display()
    );
    let proxy = edge.start(Driver::any(), &extra, "");
    let with = client_config(edge.pki.roots(), Some(&alice));
    let mut c = TlsClient::connect(proxy.addr(), with, Some("a.test")).unwrap();
    assert_eq!(c.get("a.test", "/").unwrap().status, 200);
    // TLS 1.3 client certificates are checked after the client's handshake completes: the
    // refusal shows as a failed request.
    for client in [None, Some(&mallory)] {
        let cfg = client_config(edge.pki.roots(), client);
        let refused = TlsClient::connect(proxy.addr(), cfg, Some("a.test"))
            .and_then(|mut c| c.get("a.test", "/"))
            .is_err();
        assert!(
            refused,
            "client cert {:?} was let in",
            client.map(|c| &c.cert)
        );
    }
}

#[test]
fn optional_client_auth_admits_clients_without_a_certificate() {
    let edge = Edge::new();
    let clients = Pki::new(edge.dir.path(), "clients");
    let alice = clients.client("alice");
    let extra = format!(
        "      client_auth: {{ ca: [{}], required: false }}\n",
        clients.ca_file.display()
    );
    let proxy = edge.start(Driver::any(), &extra, "");
    for client in [None, Some(&alice)] {
        let cfg = client_config(edge.pki.roots(), client);
        let mut c = TlsClient::connect(proxy.addr(), cfg, Some("a.test")).unwrap();
        assert_eq!(c.get("a.test", "/").unwrap().status, 200);
    }
}

#[test]
fn sessions_resume_across_workers() {
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "", "workers: 2\n");
    let config = client_config(edge.pki.roots(), None);
    let mut first = TlsClient::connect(proxy.addr(), config.clone(), Some("a.test")).unwrap();
    // The session ticket arrives with the first response (TLS 1.3 sends it after the handshake).
    assert_eq!(first.get("a.test", "/").unwrap().status, 200);
    let mut resumed = 0;
    for _ in 0..6 {
        let mut c = TlsClient::connect(proxy.addr(), config.clone(), Some("a.test")).unwrap();
        assert_eq!(c.get("a.test", "/").unwrap().status, 200);
        resumed += c.resumed() as usize;
    }
    // SO_REUSEPORT spreads the connections over both workers; every one resumes.
    assert_eq!(resumed, 6);
}

#[test]
fn reload_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "", "");
    let config = client_config(edge.pki.roots(), None);
    let mut open = TlsClient::connect(proxy.addr(), config.clone(), Some("a.test")).unwrap();
    assert_eq!(open.get("a.test", "/").unwrap().status, 200);
    // Replace a.test's files with a certificate that also names renewed.test.
    edge.pki.server("a", &["a.test", "renewed.test"]);
    assert_eq!(proxy.server().reload_tls(), Ok(1));
    // A fresh client config: a resumed session would show the certificate it was made with.
    let fresh_config = || client_config(edge.pki.roots(), None);
    let fresh = TlsClient::connect(proxy.addr(), fresh_config(), Some("a.test")).unwrap();
    assert_eq!(fresh.peer_names(), ["a.test", "renewed.test"]);
    assert_eq!(open.peer_names(), ["a.test"]);
    assert_eq!(open.get("a.test", "/still-open").unwrap().status, 200);
    // A broken file keeps the running certificates.
    std::fs::write(edge.dir.join("a.key"), "not a key").unwrap();
    let e = proxy.server().reload_tls().unwrap_err();
    assert!(e.contains("certificates[0].key"), "{e}");
    let again = TlsClient::connect(proxy.addr(), fresh_config(), Some("a.test")).unwrap();
    assert_eq!(again.peer_names(), ["a.test", "renewed.test"]);
}

#[test]
fn curl_gets_a_response_over_tls() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED curl_gets_a_response_over_tls: curl is not installed");
        return;
    }
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "", "");
    let port = proxy.addr().port();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&edge.pki.ca_file)
        .args(["--resolve", &format!("b.test:{port}:127.0.0.1")])
        .arg(format!("https://b.test:{port}/scheme"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "https");
}

#[test]
fn rsa_pkcs1_ecdsa_sec1_and_ed25519_keys_are_served() {
    let edge = Edge::new();
    let ed = edge.pki.server_with_key(
        "ed",
        &["ed.test"],
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
    );
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(edge.dir.path())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    // rcgen (ring) cannot make RSA keys; openssl writes PKCS#1 and SEC1 for us when present.
    let have_openssl = openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"])
        && openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ]);
    let mut certs = format!(
        "        - {{ cert: {}, key: {} }}\n",
        ed.cert.display(),
        ed.key.display()
    );
    let mut expect = vec![("ed.test", "ed.test")];
    if have_openssl {
        let ca_key = edge.pki.write_ca_key();
        for (stem, name) in [("rsa", "rsa.test"), ("ec", "ec.test")] {
            std::fs::write(
                edge.dir.join("ext.cnf"),
                format!("subjectAltName=DNS:{name}\n"),
            )
            .unwrap();
            let (key, csr, pem) = (
                format!("{stem}.key"),
                format!("{stem}.csr"),
                format!("{stem}.pem"),
            );
            assert!(openssl(&[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={name}"),
                "-out",
                &csr
            ]));
            assert!(openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &edge.pki.ca_file.display().to_string(),
                "-CAkey",
                &ca_key.display().to_string(),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                &pem,
            ]));
            let text = std::fs::read_to_string(edge.dir.join(&key)).unwrap();
            let header = if stem == "rsa" {
                "BEGIN RSA PRIVATE KEY"
            } else {
                "BEGIN EC PRIVATE KEY"
            };
            assert!(text.contains(header), "{stem}: {text}");
            certs.push_str(&format!(
                "        - {{ cert: {0}/{pem}, key: {0}/{key} }}\n",
                edge.dir.path().display()
            ));
            expect.push((name, name));
        }
    } else {
        eprintln!("SKIPPED the RSA/SEC1 half of rsa_pkcs1_ecdsa_sec1_and_ed25519_keys_are_served: no openssl");
    }
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates:\n{certs}    routes: [{{ respond: {{ body: ok }} }}]\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[]);
    for (sni, name) in expect {
        let config = client_config(edge.pki.roots(), None);
        let mut c = TlsClient::connect(proxy.addr(), config, Some(sni))
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(c.peer_names(), [name]);
        assert_eq!(c.get(sni, "/").unwrap().body, "ok");
    }
}

/// A TLS listener in front of the streaming tests' bulk backend.
fn tls_to_bulk(edge: &Edge) -> (Proxy, support::streaming::BulkServer) {
    let bulk = support::streaming::BulkServer::start();
    let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates: [{ cert: $A_CERT, key: $A_KEY }]\n    routes: [{ upstream: app }]\nupstreams:\n  app:\n    targets: [$BULK]\n";
    let mut vars = edge.vars();
    vars.push(("BULK", bulk.target()));
    (Proxy::start(Driver::any(), yaml, &vars), bulk)
}

fn read_head(r: &mut impl std::io::Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(r.read(&mut byte).unwrap(), 1, "closed inside a head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn an_upgrade_tunnels_through_a_tls_listener() {
    use std::io::{Read, Write};
    let edge = Edge::new();
    let (proxy, _bulk) = tls_to_bulk(&edge);
    let config = client_config(edge.pki.roots(), None);
    let mut c = TlsClient::connect(proxy.addr(), config, Some("a.test")).unwrap();
    c.tls
        .write_all(
            b"GET /raw HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nearly",
        )
        .unwrap();
    let head = read_head(&mut c.tls);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut got = [0u8; 5];
    c.tls.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early");
    for _ in 0..3 {
        c.tls.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.tls.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
}

#[test]
fn large_bodies_cross_a_tls_listener_intact_without_splice() {
    use std::io::{Read, Write};
    let edge = Edge::new();
    let (proxy, _bulk) = tls_to_bulk(&edge);
    let len: u64 = 3 << 20;
    let config = client_config(edge.pki.roots(), None);
    let mut c = TlsClient::connect(proxy.addr(), config, Some("a.test")).unwrap();
    write!(c.tls, "GET /source/{len} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let head = read_head(&mut c.tls);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; len as usize];
    c.tls.read_exact(&mut body).unwrap();
    let mut payload = support::streaming::Payload::new();
    let got = support::streaming::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));
    assert_eq!(got, payload.sha256(len));
    // And upward: the sink answers with the hash of what it received.
    write!(
        c.tls,
        "POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    c.tls.write_all(&body).unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim(), format!("{} {len}", payload.sha256(len)));
    assert_eq!(proxy.server().spliced_bytes(), (0, 0));
}

/// One request to the admin endpoint; (status, body).
fn admin(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn post_reload_swaps_certificates_and_metrics_count_failed_handshakes() {
    let edge = Edge::new();
    let proxy = edge.start(Driver::any(), "", "admin:\n  listen: 127.0.0.1:0\n");
    let admin_addr = proxy.server().admin_addr().unwrap();
    edge.pki.server("a", &["a.test", "posted.test"]);
    let (status, body) = admin(admin_addr, "POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"generation\":2"), "{body}");
    let c = TlsClient::connect(
        proxy.addr(),
        client_config(edge.pki.roots(), None),
        Some("a.test"),
    )
    .unwrap();
    assert_eq!(c.peer_names(), ["a.test", "posted.test"]);
    // A broken key: 500 naming it, and the running certificates stay.
    std::fs::write(edge.dir.join("a.key"), "garbage").unwrap();
    let (status, body) = admin(admin_addr, "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("certificates[0].key"), "{body}");
    // A plain-HTTP client fails its handshake: counted in /metrics.
    let mut plain = proxy.client();
    plain.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let _ = plain.read_until_close();
    let (_, metrics) = admin(admin_addr, "GET", "/metrics");
    assert!(
        metrics.contains("ringway_tls_handshake_failures_total{side=\"downstream\"} 1"),
        "{metrics}"
    );
}

#[test]
fn failed_handshakes_and_plain_http_get_their_own_access_log_lines() {
    let edge = Edge::new();
    let log = edge.dir.join("access.log");
    let mut proxy = edge.start(
        Driver::any(),
        "",
        &format!("log: {{ format: json, access_log: {} }}\n", log.display()),
    );
    let other = Pki::new(edge.dir.path(), "other");
    assert!(TlsClient::connect(
        proxy.addr(),
        client_config(other.roots(), None),
        Some("a.test")
    )
    .is_err());
    let mut plain = proxy.client();
    plain.send("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(plain.read_response().status, 400);
    shutdown_bounded(proxy.take_server()).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for l in &lines {
        assert_eq!(l["event"], "tls_handshake_failed", "{l}");
        assert_eq!(l["client"], "127.0.0.1", "{l}");
        assert_eq!(l["listener"], "web", "{l}");
    }
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("plain HTTP")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| !r.contains("plain HTTP")),
        "{reasons:?}"
    );
}
