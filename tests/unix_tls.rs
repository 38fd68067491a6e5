//! TLS over Unix sockets: terminated on a unix listener, and originated to a unix target (a
//! TLS backend listening on a socket file), verified against `server_name`.

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use support::tls::{certs, client_config, key, Issued, Pki};
use support::*;

/// A TLS backend on a Unix socket answering every request with `unix <path>\n`.
fn tls_unix_backend(path: &Path, server: &Issued) {
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(&server.cert_pem), key(&server.key_pem))
        .unwrap(),
    );
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let config = config.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let tls = rustls::ServerConnection::new(config).unwrap();
                let mut s = BufReader::new(rustls::StreamOwned::new(tls, conn));
                loop {
                    let mut path = String::new();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match s.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) if path.is_empty() => path = line.clone(),
                            Ok(_) => {}
                        }
                    }
                    let body = format!("unix {}\n", path.split(' ').nth(1).unwrap_or(""));
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.get_mut().write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn proxy_to_unix_tls(dir: &TempDir, pki: &Pki, server_name: &str) -> Proxy {
    let sock = dir.join("tb.sock");
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes: [{{ upstream: app }}]\n\
         upstreams:\n  app:\n    targets: [\"unix/$SOCK\"]\n    \
         transport:\n      tls: {{ ca: [$CA], server_name: {server_name} }}\n"
    );
    Proxy::start(
        Driver::any(),
        &yaml,
        &[
            ("SOCK", sock.display().to_string()),
            ("CA", pki.ca_file.display().to_string()),
        ],
    )
}

#[test]
fn a_tls_backend_on_a_unix_socket_is_verified_against_server_name() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "ux");
    tls_unix_backend(&dir.join("tb.sock"), &pki.server("tb", &["backend.test"]));
    let proxy = proxy_to_unix_tls(&dir, &pki, "backend.test");
    let mut c = proxy.client();
    for i in 0..3 {
        let r = c.request(get_req(&format!("/r{i}"), ""));
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.text(), format!("unix /r{i}\n"));
    }
    // A name the certificate does not carry fails verification: 502.
    let wrong = proxy_to_unix_tls(&dir, &pki, "other.test");
    assert_eq!(wrong.get("/").status, 502);
}

#[test]
fn a_unix_listener_terminates_tls() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "ul");
    pki.server("a", &["a.test"]);
    let b1 = Backend::start("b1");
    let sock = dir.join("rw.sock");
    let yaml = "listeners:\n  - name: web\n    listen: \"unix/$SOCK\"\n    \
                tls:\n      certificates: [{ cert: $CERT, key: $KEY }]\n    \
                routes:\n      - match: { path: /scheme }\n        respond: { body: \"{scheme}\" }\n      \
                - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n";
    let _proxy = Proxy::start(
        Driver::any(),
        yaml,
        &[
            ("SOCK", sock.display().to_string()),
            ("CERT", dir.join("a.pem").display().to_string()),
            ("KEY", dir.join("a.key").display().to_string()),
            ("B1", b1.target()),
        ],
    );
    let conn = UnixStream::connect(&sock).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let tls = rustls::ClientConnection::new(
        client_config(pki.roots(), None),
        ServerName::try_from("a.test").unwrap(),
    )
    .unwrap();
    let mut s = rustls::StreamOwned::new(tls, conn);
    s.write_all(b"GET /scheme HTTP/1.1\r\nHost: a.test\r\n\r\nGET /up HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("\r\n\r\nhttps"),
        "{{scheme}} is https: {text}"
    );
    assert!(text.ends_with("b1\n"), "{text}");
    assert_eq!(b1.requests(), 1);
}
