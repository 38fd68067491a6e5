//! Small things Caddy and nginx users expect: a method override to GET/HEAD drops the request
//! body, a target without a port is dialed on 80, the cookie policy's cookie is `Secure` on
//! HTTPS, and layer-4 warnings name the target's address.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::Duration;

use support::tls::{client_config, Pki, TlsClient};
use support::*;

fn override_proxy(method: &str) -> (Proxy, Backend) {
    let b = Backend::start("b");
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - method: {method}\n        upstream: app\nupstreams:\n  app:\n    targets: [$B]\n"
    );
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B", b.target())]);
    (proxy, b)
}

#[test]
fn a_method_override_to_get_drops_the_body_and_keeps_the_client_connection() {
    let (proxy, b) = override_proxy("GET");
    let mut c = proxy.client();
    let r = c.request("POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(r.status, 200, "{}", r.head_text());
    let got = b.last_request();
    assert_eq!(got.method, "GET");
    assert!(got.body.is_empty(), "{:?}", got.body);
    assert!(
        !got.has_header("content-length") && !got.has_header("transfer-encoding"),
        "{}",
        got.head_text()
    );
    // The skipped body does not turn into the next request.
    let r = c.request(get_req("/next", ""));
    assert_eq!(r.header("x-path"), Some("/next"));
    assert_eq!(b.requests(), 2);
}

#[test]
fn a_method_override_to_head_drops_a_chunked_body_and_then_closes() {
    let (proxy, b) = override_proxy("HEAD");
    let mut c = proxy.client();
    c.send(
        "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    );
    c.send("4\r\nbody\r\n0\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "{}", r.head_text());
    let got = b.only_request();
    assert_eq!(got.method, "HEAD");
    assert!(got.body.is_empty());
    assert!(
        !got.has_header("transfer-encoding") && !got.has_header("expect"),
        "{}",
        got.head_text()
    );
    assert!(
        r.closes(),
        "an unread body ends the connection: {}",
        r.head_text()
    );
    // Nothing of the chunked body reached the upstream as a request of its own.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.requests(), 1);
}

#[test]
fn an_override_to_put_still_sends_the_body() {
    let (proxy, b) = override_proxy("PUT");
    let r = proxy
        .client()
        .request("POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(r.status, 200);
    assert_eq!(b.only_request().body, b"body");
}

#[test]
fn a_target_without_a_port_is_dialed_on_port_80() {
    // A loopback address of its own so port 80 is free whatever else runs here.
    let n = std::process::id() % 200 + 20;
    let ip = format!("127.0.{}.{}", n % 250, (n * 7) % 250 + 2);
    let listener = TcpListener::bind(format!("{ip}:80")).unwrap_or_else(|e| {
        panic!("this test binds {ip}:80 and needs root or CAP_NET_BIND_SERVICE: {e}")
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nport\n");
    });
    let yaml = one_upstream_yaml("$T", "");
    let proxy = Proxy::start(Driver::any(), &yaml, &[("T", ip.clone())]);
    let r = proxy.get("/");
    assert_eq!((r.status, r.text().as_str()), (200, "port\n"));
    server.join().unwrap();
}

#[test]
fn the_cookie_policy_cookie_is_secure_and_same_site_lax_on_https_only() {
    let dir = TempDir::new();
    let pki = Pki::new(dir.path(), "edge");
    pki.server("a", &["a.test"]);
    let b = Backend::start("b");
    let yaml = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    tls:\n      certificates: [{ cert: $CERT, key: $KEY }]\n    routes: [{ upstream: app }]\n  - name: plain\n    listen: 127.0.0.1:0\n    routes: [{ upstream: app }]\nupstreams:\n  app:\n    targets: [$B]\n    lb: { policy: cookie }\n";
    let vars = [
        ("B", b.target()),
        ("CERT", dir.join("a.pem").display().to_string()),
        ("KEY", dir.join("a.key").display().to_string()),
    ];
    let proxy = Proxy::start(Driver::any(), yaml, &vars);
    let mut c = TlsClient::connect(
        proxy.addr(),
        client_config(pki.roots(), None),
        Some("a.test"),
    )
    .unwrap();
    let r = c.get("a.test", "/").unwrap();
    let set = r.header("set-cookie").expect("a cookie").to_string();
    assert!(set.starts_with("lb="), "{set}");
    assert!(set.ends_with("; Path=/; Secure; SameSite=Lax"), "{set}");
    let plain = proxy.local_addr("plain").unwrap();
    let r = get(plain, "/");
    let set = r.header("set-cookie").expect("a cookie");
    assert!(
        set.ends_with("; Path=/"),
        "plain HTTP cannot carry a Secure cookie: {set}"
    );
}

#[test]
fn a_layer4_warning_names_the_target_address() {
    // The target accepts and resets at once: the tunnel fails before its first byte.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            support::l4::reset_close(conn);
        }
    });
    let dir = TempDir::new();
    let config = dir.write(
        "l4.yaml",
        &format!(
            "workers: 1\npin_workers: false\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    \
             protocol: tcp\n    upstream: db\nupstreams:\n  db:\n    targets: [\"{target}\"]\n"
        ),
    );
    let mut ringway = support::process::Ringway::start(&config, &[]);
    let addr = ringway.listener("web");
    let mut c = support::l4::connect(addr);
    let _ = c.write_all(b"ping");
    let _ = c.shutdown(Shutdown::Write);
    let _ = support::l4::read_to_end_or_error(&mut c);
    let warned = ringway
        .wait_line(Duration::from_secs(10), |l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {:#?}", ringway.seen));
    assert!(
        warned.contains(&target.to_string()),
        "the warning names {target}: {warned}"
    );
}
