//! HTTP/2 to upstreams with nginx as the target: `h2c://` (cleartext, prior knowledge), TLS
//! with `transport.versions: ["2", "1.1"]` (ALPN h2, and the fall back to HTTP/1.1 when the
//! target only speaks that), `["2"]` alone refusing an HTTP/1.1-only target, many concurrent
//! streams over one upstream connection, and a connection the target closed being replaced.
//! With a raw h2 target (`tests/h2/target.py`): the pool keys on idle HTTP/2 connections and
//! their gauge, trailers on a response with a length, a chunked upload's DATA and trailers, 103
//! Early Hints, the free replay of a refused stream or one past a graceful GOAWAY, and
//! WebSockets by extended CONNECT.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use support::nginx::{free_port, Nginx};
use support::tls::Pki;
use support::*;

/// Runs a test peer; a missing one fails the test with its name.
fn peer(peer: &str, args: &[&str]) -> Output {
    Command::new(peer).args(args).output().unwrap_or_else(|e| {
        panic!(
            "test peer `{peer}` could not run ({e}); install it (tests/support/install-peers.sh)"
        )
    })
}

/// `curl -sS ARGS`, which must succeed.
fn curl(args: &[&str]) -> String {
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(args);
    let o = peer("curl", &all);
    assert!(
        o.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An nginx on 127.0.0.1 answering `<protocol> <connection number>` for every request, its
/// listener configured by `listen` (e.g. `http2`, `ssl http2`, `ssl`). Stopped when dropped.
fn nginx(listen: &str, tls: Option<&Pki>) -> Nginx {
    nginx_on(free_port(), listen, tls, "")
}

/// `extra`: more `http` block directives (http2_max_concurrent_streams 128 unless given).
fn nginx_on(port: u16, listen: &str, pki: Option<&Pki>, extra: &str) -> Nginx {
    let extra = if extra.contains("http2_max_concurrent_streams") {
        extra.to_string()
    } else {
        format!("http2_max_concurrent_streams 128; {extra}")
    };
    let certs = match pki {
        Some(pki) => {
            let issued = pki.server("n", &["n.test"]);
            format!(
                "    ssl_certificate {};\n    ssl_certificate_key {};\n",
                issued.cert.display(),
                issued.key.display()
            )
        }
        None => String::new(),
    };
    Nginx::start(port, |dir| {
        let d = dir.display();
        format!(
            "  log_format c '$connection $server_protocol';\n  access_log {d}/access.log c;\n  \
             {extra}\n  server {{\n    listen 127.0.0.1:{port} {listen};\n{certs}    \
             location / {{ return 200 \"$server_protocol $connection\\n\"; }}\n  }}"
        )
    })
}

/// The connections an nginx's requests came on, from its access log.
fn connections(nginx: &Nginx) -> HashSet<String> {
    std::fs::read_to_string(nginx.dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect()
}

/// `tests/grpc/reset_server.py`: a raw h2c target that resets streams; killed when dropped.
struct Resetter {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Resetter {
    fn start() -> Resetter {
        use std::io::BufRead;
        let check = peer("python3", &["-c", "import h2"]);
        assert!(
            check.status.success(),
            "test peer python3 with the `h2` package is missing (pip install h2)"
        );
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc/reset_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start reset_server.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("reset_server.py port");
        Resetter {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        }
    }
}

impl Drop for Resetter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/h2/target.py`: a raw h2c target (trailers with a length, 103, REFUSED_STREAM once,
/// a GOAWAY the stream is past) that reports its connections opening and closing; killed when
/// dropped.
struct RawTarget {
    child: std::process::Child,
    addr: SocketAddr,
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawTarget {
    fn start() -> RawTarget {
        RawTarget::start_with(&[])
    }

    fn start_with(args: &[&str]) -> RawTarget {
        use std::io::BufRead;
        let check = peer("python3", &["-c", "import h2"]);
        assert!(
            check.status.success(),
            "test peer python3 with the `h2` package is missing (pip install h2)"
        );
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2/target.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start target.py");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let port: u16 = first
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .expect("target.py port");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = events.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        RawTarget {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            events,
        }
    }

    /// Connection events so far ("OPEN 1", "CLOSED 1 goaway", ...).
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.starts_with(prefix))
            .count()
    }
}

impl Drop for RawTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ringway_upstream_http2_connections` gauge of upstream `app`, from the admin listener.
fn h2_conns_gauge(proxy: &Proxy) -> Option<u64> {
    let admin = proxy.server().admin_addr().expect("admin enabled");
    let page = curl(&[&format!("http://{admin}/metrics")]);
    page.lines()
        .find_map(|l| l.strip_prefix("ringway_upstream_http2_connections{upstream=\"app\"} "))
        .and_then(|v| v.trim().parse().ok())
}

fn proxy(driver: Driver, targets: &str, transport: &str) -> Proxy {
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: {targets}\n{transport}"
    );
    Proxy::start(driver, &yaml, &[])
}

/// `transport` for TLS targets named n.test, verified against `pki`'s CA.
fn tls_transport(pki: &Pki, versions: &str) -> String {
    format!(
        "    transport:\n      versions: {versions}\n      tls: {{ ca: [{}], server_name: n.test }}\n",
        pki.ca_file.display()
    )
}

/// Opens a WebSocket through the proxy at `addr` with an HTTP/1.1 handshake (RFC 6455's example
/// key): the connection and the answer's head, lowercased.
fn ws_handshake(addr: SocketAddr, path: &str) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap().to_ascii_lowercase())
}

driver_tests! {
    fn curl_reaches_an_nginx_h2c_target_over_one_http2_connection(driver) {
        let nginx = nginx("http2", None);
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", nginx.addr), "");
        let url = format!("http://{}/x", proxy.addr());
        for flag in ["--http1.1", "--http2-prior-knowledge", "--http1.1"] {
            let out = curl(&[flag, &url]);
            assert!(out.starts_with("HTTP/2.0 "), "{flag}: {out}");
        }
        // A request body goes up as DATA (nginx answers without reading it, which h2 allows).
        let out = curl(&["--http1.1", "-d", "hello", &url]);
        assert!(out.starts_with("HTTP/2.0 "), "{out}");
        assert_eq!(connections(&nginx).len(), 1, "one upstream connection for every request");
    }

    fn versions_2_and_1_1_speak_h2_to_a_tls_http2_target_and_http11_to_one_without(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let h2 = nginx("ssl http2", Some(&pki));
        let h1 = nginx("ssl", Some(&pki));
        let transport = tls_transport(&pki, "[\"2\", \"1.1\"]");
        let p2 = proxy(driver, &format!("[\"https://{}\"]", h2.addr), &transport);
        let p1 = proxy(driver, &format!("[\"https://{}\"]", h1.addr), &transport);
        for _ in 0..3 {
            let out = curl(&["--http1.1", &format!("http://{}/", p2.addr())]);
            assert!(out.starts_with("HTTP/2.0 "), "{out}");
            let out = curl(&["--http2-prior-knowledge", &format!("http://{}/", p1.addr())]);
            assert!(out.starts_with("HTTP/1.1 "), "{out}");
        }
        // Both kept their one connection: the h2 one shared, the 1.1 one pooled.
        assert_eq!(connections(&h2).len(), 1);
        assert_eq!(connections(&h1).len(), 1);
        // The default (["1.1"]) never offers h2, even to a target that speaks it.
        let p = proxy(driver, &format!("[\"https://{}\"]", h2.addr), &tls_transport(&pki, "[\"1.1\"]"));
        let out = curl(&["--http1.1", &format!("http://{}/", p.addr())]);
        assert!(out.starts_with("HTTP/1.1 "), "{out}");
    }

    fn versions_2_alone_answers_502_for_a_target_that_only_speaks_http11(driver) {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "up");
        let h1 = nginx("ssl", Some(&pki));
        let p = proxy(driver, &format!("[\"https://{}\"]", h1.addr), &tls_transport(&pki, "[\"2\"]"));
        let r = p.get("/");
        assert_eq!(r.status, 502, "{}", r.text());
    }

    fn concurrent_streams_fill_an_upstream_connection_up_to_its_limit_before_another(driver) {
        // nginx allows 16 streams per connection.
        let nginx = nginx_on(free_port(), "http2", None, "http2_max_concurrent_streams 16;");
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", nginx.addr), "");
        let url = format!("http://{}/", proxy.addr());
        // 8 client connections x 25 streams at once, 800 requests.
        let o = peer("h2load", &["-n", "800", "-c", "8", "-m", "25", &url]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("800 succeeded, 0 failed, 0 errored"), "{out}");
        assert!(out.contains("status codes: 800 2xx"), "{out}");
        let conns = connections(&nginx).len();
        eprintln!("800 requests used {conns} upstream connections");
        // Up to 200 streams at once need more than one connection, never one per request.
        assert!((2..=20).contains(&conns), "800 requests used {conns} upstream connections");
    }

    fn a_connection_the_target_closed_is_replaced_by_a_new_one(driver) {
        let nginx = nginx("http2", None);
        let port = nginx.addr.port();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", nginx.addr), "");
        let url = format!("http://{}/", proxy.addr());
        let first = curl(&["--http1.1", &url]);
        drop(nginx);
        let nginx = nginx_on(port, "http2", None, "");
        // The dead connection is dropped from the cache; the next request dials again.
        let ok = wait_for(Duration::from_secs(5), || proxy.get("/").status == 200);
        assert!(ok, "no request succeeded after the target restarted");
        let second = curl(&["--http1.1", &url]);
        assert!(first.starts_with("HTTP/2.0 ") && second.starts_with("HTTP/2.0 "), "{first} {second}");
        assert_eq!(connections(&nginx).len(), 1);
    }

    fn an_upstream_reset_after_the_response_began_resets_the_clients_stream(driver) {
        let target = Resetter::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        let url = format!("http://{}/reset", proxy.addr());
        // An h2 client sees its stream reset, not a complete response.
        let o = peer("curl", &["-sS", "--max-time", "10", "--http2-prior-knowledge", &url]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a reset response looked complete: {}", String::from_utf8_lossy(&o.stdout));
        assert!(err.contains("INTERNAL_ERROR") || err.contains("stream"), "{err}");
        // An HTTP/1.1 client sees its connection closed before the chunked body ended.
        let o = peer("curl", &["-sS", "--max-time", "10", "--http1.1", &url]);
        assert!(!o.status.success(), "a reset response looked complete: {}", String::from_utf8_lossy(&o.stdout));
    }

    fn a_refused_stream_is_retried_on_another_target_even_for_a_post(driver) {
        let target = Resetter::start();
        let nginx = nginx("http2", None);
        let proxy = proxy(
            driver,
            &format!("[\"h2c://{}\", \"h2c://{}\"]", target.addr, nginx.addr),
            "    lb: { policy: first, retries: 1 }\n",
        );
        // REFUSED_STREAM says the first target never processed it: a POST may go elsewhere.
        let out = curl(&["--http1.1", "-d", "once", &format!("http://{}/post", proxy.addr())]);
        assert!(out.starts_with("HTTP/2.0 "), "{out}");
        assert_eq!(connections(&nginx).len(), 1);
    }

    fn handle_response_rules_apply_to_responses_from_an_h2_target(driver) {
        let nginx = nginx("http2", None);
        let yaml = format!(
            "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - match: {{ path: /respond }}\n        upstream: app\n        handle_response:\n          - match: {{ status: [200] }}\n            respond: {{ status: 203, body: \"shaped {{rp.status_code}}\\n\" }}\n      - upstream: app\n        handle_response:\n          - match: {{ status: [200] }}\n            replace_status: 202\nupstreams:\n  app:\n    targets: [\"h2c://{}\"]\n",
            nginx.addr
        );
        let proxy = Proxy::start(driver, &yaml, &[]);
        let r = proxy.get("/respond");
        assert_eq!((r.status, r.text().as_str()), (203, "shaped 200\n"));
        let r = proxy.get("/other");
        assert_eq!(r.status, 202);
        assert!(r.text().starts_with("HTTP/2.0 "), "{}", r.text());
    }

    fn a_connection_the_target_sent_goaway_on_takes_no_new_streams(driver) {
        // nginx sends GOAWAY after 5 requests on a connection (keepalive_requests).
        let nginx = nginx_on(free_port(), "http2", None, "keepalive_requests 5;");
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", nginx.addr), "");
        let url = format!("http://{}/", proxy.addr());
        for i in 0..20 {
            let out = curl(&["--http1.1", &url]);
            assert!(out.starts_with("HTTP/2.0 "), "request {i}: {out}");
        }
        let conns = connections(&nginx).len();
        assert!((4..=5).contains(&conns), "20 requests, GOAWAY every 5: {conns} connections");
    }

    fn http10_clients_and_upgrades_meet_an_h2_target_as_http1_allows(driver) {
        let nginx = nginx("http2", None);
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", nginx.addr), "");
        // An HTTP/1.0 client gets the answer in HTTP/1.1 framing it can read, then the close.
        let r = proxy.client().request("GET /old HTTP/1.0\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("HTTP/2.0 "), "{}", r.text());
        // nginx does not announce extended CONNECT (RFC 8441): an Upgrade gets 502, not a hang.
        let r = proxy.client().request(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        assert_eq!(r.status, 502);
    }

    fn an_idle_h2_upstream_connection_is_closed_by_a_timer_after_idle_timeout(driver) {
        let target = RawTarget::start();
        let proxy = proxy(
            driver,
            &format!("[\"h2c://{}\"]", target.addr),
            "    transport: { idle_timeout: 1s }\nadmin:\n  listen: 127.0.0.1:0\n",
        );
        assert_eq!(proxy.get("/a").text(), "ok 1 0");
        assert_eq!(proxy.get("/b").text(), "ok 1 0", "one connection for both");
        assert_eq!(h2_conns_gauge(&proxy), Some(1));
        // No request follows: the driver's timer closes it, with a GOAWAY first.
        let closed = wait_for(Duration::from_secs(10), || target.count("CLOSED") == 1);
        assert!(closed, "the idle connection stayed open: {:?}", target.events());
        assert_eq!(target.events().last().map(String::as_str), Some("CLOSED 1 goaway"));
        assert!(wait_for(Duration::from_secs(5), || h2_conns_gauge(&proxy) == Some(0)));
        // The next request dials again.
        assert_eq!(proxy.get("/c").text(), "ok 2 0");
    }

    fn keepalive_false_closes_an_h2_upstream_connection_when_its_last_stream_ends(driver) {
        let target = RawTarget::start();
        let proxy = proxy(
            driver,
            &format!("[\"h2c://{}\"]", target.addr),
            "    transport: { keepalive: false, idle_timeout: 1h }\n",
        );
        assert_eq!(proxy.get("/a").text(), "ok 1 0");
        let closed = wait_for(Duration::from_secs(10), || target.count("CLOSED 1 goaway") == 1);
        assert!(closed, "{:?}", target.events());
        assert_eq!(proxy.get("/b").text(), "ok 2 0");
    }

    fn idle_h2_connections_past_max_idle_per_worker_close_after_a_short_grace(driver) {
        let target = RawTarget::start();
        let proxy = proxy(
            driver,
            &format!("[\"h2c://{}\"]", target.addr),
            "    transport: { max_idle_per_worker: 0, idle_timeout: 1h }\n",
        );
        assert_eq!(proxy.get("/a").status, 200);
        // The pool's grace for surplus connections is 1 s; idle_timeout is an hour.
        let closed = wait_for(Duration::from_secs(10), || target.count("CLOSED") == 1);
        assert!(closed, "{:?}", target.events());
        // The default (32) keeps it.
        let target = RawTarget::start();
        let keeps = self::proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        assert_eq!(keeps.get("/a").status, 200);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(target.count("CLOSED"), 0, "{:?}", target.events());
    }

    fn keepalive_idle_conns_caps_idle_h2_connections_across_an_upstreams_targets(driver) {
        let (t1, t2) = (RawTarget::start(), RawTarget::start());
        let proxy = proxy(
            driver,
            &format!("[\"h2c://{}\", \"h2c://{}\"]", t1.addr, t2.addr),
            "    lb: { policy: round_robin }\n    transport: { keepalive_idle_conns: 1, idle_timeout: 1h }\n",
        );
        assert_eq!(proxy.get("/a").status, 200);
        assert_eq!(proxy.get("/b").status, 200);
        let both = wait_for(Duration::from_secs(5), || (t1.count("OPEN"), t2.count("OPEN")) == (1, 1));
        assert!(both, "{:?} {:?}", t1.events(), t2.events());
        // Two idle connections, one allowed: one closes after the grace, the other stays.
        let closed = || t1.count("CLOSED") + t2.count("CLOSED");
        assert!(wait_for(Duration::from_secs(10), || closed() == 1), "{:?} {:?}", t1.events(), t2.events());
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(closed(), 1, "{:?} {:?}", t1.events(), t2.events());
    }

    fn trailers_of_an_h2_response_with_a_length_reach_clients_that_take_them(driver) {
        let target = RawTarget::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        for path in ["/trailers", "/trailers-quiet"] {
            // An HTTP/1.1 client that sent TE: trailers gets them in a chunked body.
            let r = proxy.client().request(format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n"
            ));
            assert_eq!((r.status, r.text().as_str()), (200, "hello"));
            assert!(r.chunked, "{path}: {}", r.head_text());
            assert_eq!(r.trailers, [("x-sum".to_string(), "42".to_string())], "{path}");
            // Without TE: trailers the length stays and the trailers are dropped.
            let r = proxy.client().request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!((r.status, r.text().as_str()), (200, "hello"));
            assert!(!r.chunked && r.trailers.is_empty(), "{path}: {r:?}");
            assert_eq!(r.header("content-length"), Some("5"));
        }
        // HTTP/2 clients: an_h2_client_gets_an_h2_targets_trailers_announced_or_not_….
    }

    fn an_h2_client_gets_an_h2_targets_trailers_announced_or_not_with_the_length_kept(driver) {
        let target = RawTarget::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        // No TE: trailers and, for /trailers-quiet, no Trailer field either: the DATA and the
        // trailers go to the h2 client as the target sent them, content-length included.
        // (A raw client: curl stops reading once it has content-length bytes.)
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/probe.py");
        let port = proxy.addr().port().to_string();
        for path in ["/trailers", "/trailers-quiet"] {
            let o = peer("python3", &[script, "trailers-length", "127.0.0.1", &port, path]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success(),
                "probe.py (needs python3 with the `h2` package): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                out.lines().last(),
                Some("status=200 length=5 body=hello trailers=x-sum:42 reset=None"),
                "{path}: {out}"
            );
        }
    }

    fn an_h2_clients_upload_reaches_an_h2_target_as_its_data_and_trailers(driver) {
        let target = RawTarget::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/probe.py");
        let port = proxy.addr().port().to_string();
        let o = peer("python3", &[script, "upload-trailers", "127.0.0.1", &port, "/up"]);
        assert!(o.status.success(), "probe.py (needs python3 with the `h2` package): {}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(out.lines().last(), Some("status=200 body=ok 1 15 reset=None"), "{out}");
        assert!(
            wait_for(Duration::from_secs(5), || target.count("TRAILERS /up x-sum: 15") == 1),
            "{:?}",
            target.events()
        );
    }

    fn a_chunked_http11_upload_reaches_an_h2_target_as_data_and_trailers(driver) {
        let target = RawTarget::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        // Sent in 3-byte pieces, so reads end inside sizes, extensions and CRLFs.
        let body = "5;ext=1\r\nhello\r\nA\r\n, h2 world\r\n0\r\nx-sum: 15\r\n\r\n";
        let mut c = proxy.client();
        c.send_split(
            format!("POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}"),
            3,
            Duration::from_millis(2),
        );
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, "ok 1 15"), "{}", r.head_text());
        assert!(
            wait_for(Duration::from_secs(5), || target.count("TRAILERS /up x-sum: 15") == 1),
            "{:?}",
            target.events()
        );
        // A malformed chunk is the client's fault: 400, and the target's stream never ends (reset).
        let r = proxy.client().request(
            "POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        );
        assert_eq!(r.status, 400, "{}", r.head_text());
        assert_eq!(target.count("REQ /bad"), 0, "{:?}", target.events());
    }

    fn early_hints_from_an_h2_target_reach_http11_and_http2_clients(driver) {
        let target = RawTarget::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        let mut c = proxy.client();
        let hint = c.request("GET /hints HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(hint.status, 103, "{}", hint.head_text());
        assert_eq!(hint.header("link"), Some("</s.css>; rel=preload"));
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, "hinted"));
        // An HTTP/1.0 client gets no 1xx (RFC 9110 §15.2).
        let r = proxy.client().request("GET /hints HTTP/1.0\r\nHost: x\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "hinted"));
        // An HTTP/2 client gets it as an interim HEADERS.
        let out = curl(&["--http2-prior-knowledge", "-D", "-", &format!("http://{}/hints", proxy.addr())]);
        assert!(out.starts_with("HTTP/2 103"), "{out}");
        assert!(out.contains("link: </s.css>; rel=preload") && out.contains("HTTP/2 200"), "{out}");
    }

    fn a_refused_stream_or_one_past_a_graceful_goaway_is_replayed_once_even_with_retries_0(driver) {
        let target = RawTarget::start();
        // One target, retries 0 (the default): the replay goes to the same target.
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        let url = format!("http://{}", proxy.addr());
        let out = curl(&["--http1.1", "-d", "once", &format!("{url}/refuse-once")]);
        assert_eq!(out, "second");
        // Past the GOAWAY's last stream id: never processed, so replayed on a new connection.
        assert_eq!(curl(&["--http1.1", "-d", "once", &format!("{url}/goaway-once")]), "after goaway");
        let reopened = wait_for(Duration::from_secs(5), || target.count("OPEN") >= 2);
        assert!(reopened, "{:?}", target.events());
        // At or below the GOAWAY's last stream id it may have been processed: the connection
        // closing before an answer is a 502, never a replay.
        let o = peer("curl", &["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "--http1.1", "-d", "x", &format!("{url}/goaway-processed")]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "502");
        // (The target's events are read by a thread of ours: the line may trail the 502.)
        let seen = wait_for(Duration::from_secs(5), || target.count("REQ /goaway-processed") == 1);
        assert!(seen, "{:?}", target.events());
        // The request body went whole the second time.
        assert_eq!(curl(&["--http1.1", "-d", "12345", &format!("{url}/echo")]).split(' ').nth(2), Some("5"));
    }

    fn the_access_log_shows_the_502_an_h2_websocket_client_got_for_an_unswitched_2xx(driver) {
        let backend = Backend::start("b1");
        let dir = TempDir::new();
        let log = dir.join("access.log");
        let yaml = format!(
            "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - match: {{ path: /local }}\n        respond: {{ status: 200 }}\n      - upstream: app\nupstreams:\n  app:\n    targets: [{}]\nlog: {{ format: json, access_log: {} }}\n",
            backend.target(),
            log.display()
        );
        let mut proxy = Proxy::start(driver, &yaml, &[]);
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2/websocket.py");
        let port = proxy.addr().port().to_string();
        let o = peer("python3", &[script.to_str().unwrap(), "answer", "127.0.0.1", &port, "/hello"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(out.lines().last(), Some("settings=1 status=502 reset=None"), "{out}");
        // A `respond` route's 2xx is no switch either.
        let o = peer("python3", &[script.to_str().unwrap(), "answer", "127.0.0.1", &port, "/local"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(out.lines().last(), Some("settings=1 status=502 reset=None"), "{out}");
        shutdown_bounded(proxy.take_server()).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            assert_eq!(line["status"], 502, "{text}");
            assert_eq!(line["protocol"], "HTTP/2.0", "{text}");
        }
    }

    fn a_websocket_reaches_an_h2_target_by_extended_connect_when_it_allows_it(driver) {
        use std::io::{Read, Write};
        let target = RawTarget::start();
        let proxy = proxy(driver, &format!("[\"h2c://{}\"]", target.addr), "");
        let handshake = |path: &str| ws_handshake(proxy.addr(), path);
        // The target's 200 is the client's 101, with the accept its key calls for (RFC 6455's
        // example) and the target's subprotocol; then bytes go both ways through the stream.
        let (mut s, head) = handshake("/ws");
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");
        assert!(head.contains("sec-websocket-protocol: echo\r\n") && head.contains("upgrade: websocket\r\n"), "{head}");
        for msg in [&b"hello tunnel"[..], &[7u8; 70_000][..]] {
            s.write_all(msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).unwrap();
            assert!(back == msg, "echo of {} bytes differs", msg.len());
        }
        // The client's end reaches the target (END_STREAM), whose end closes the tunnel.
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        // A refusal passes on with its status.
        let (mut s, head) = handshake("/other");
        assert!(head.starts_with("http/1.1 403 "), "{head}");
        let mut body = [0u8; 2];
        s.read_exact(&mut body).unwrap();
        assert_eq!(&body, b"no");
        // An h2 client's own extended CONNECT goes through the HTTP/1.1 handshake of the data
        // path and up as one again: messages (one of 70 KB) echoed, the close handshake, the end.
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/h2/websocket.py");
        let port = proxy.addr().port().to_string();
        let o = peer("python3", &[script.to_str().unwrap(), "echo", "127.0.0.1", &port, "/ws-frames", "3"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(out.lines().last(), Some("settings=1 status=200 echoes=all close=1000 end_stream"), "{out}");
        // A target that does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL: 502, as before.
        let plain = RawTarget::start_with(&["--no-connect"]);
        let p = self::proxy(driver, &format!("[\"h2c://{}\"]", plain.addr), "");
        let r = p.client().request(
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        assert_eq!(r.status, 502);
    }

    fn a_reload_closes_the_replaced_configurations_h2_connection_once_idle(driver) {
        let target = RawTarget::start();
        let proxy = proxy(
            driver,
            &format!("[\"h2c://{}\"]", target.addr),
            "    transport: { idle_timeout: 1h }\n",
        );
        assert_eq!(proxy.get("/a").text(), "ok 1 0");
        proxy.rewrite_config(&proxy.config_text(), &[]);
        proxy.server().reload().expect("reload");
        // The new configuration dials its own; the old one's connection goes (GOAWAY) rather
        // than lingering for its hour of idle_timeout.
        let closed = wait_for(Duration::from_secs(10), || target.count("CLOSED 1 goaway") == 1);
        assert!(closed, "{:?}", target.events());
        assert_eq!(proxy.get("/b").text(), "ok 2 0");
    }

    fn a_websocket_to_an_h2_target_takes_a_connection_slot_only_below_max_connections(driver) {
        use std::io::{Read, Write};
        let target = RawTarget::start();
        let proxy = proxy(
            driver,
            &format!("[{{ address: \"h2c://{}\", max_connections: 2 }}]", target.addr),
            "",
        );
        // The HTTP/2 connection holds one slot and the tunnel on it the other.
        let (mut first, head) = ws_handshake(proxy.addr(), "/ws");
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        first.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        first.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        // A second WebSocket would be a third connection: refused as a request needing a new
        // connection is when the target is full, never sent up.
        let (_, head) = ws_handshake(proxy.addr(), "/ws");
        assert!(head.starts_with("http/1.1 503 "), "{head}");
        assert_eq!(target.count("OPEN"), 1, "{:?}", target.events());
        // Plain requests still ride the connection's streams: they need no slot of their own.
        assert_eq!(proxy.get("/a").text(), "ok 1 0");
        // Once the first tunnel ends, its slot takes the next WebSocket.
        first.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap();
        let mut next = None;
        let switched = wait_for(Duration::from_secs(10), || {
            let (s, head) = ws_handshake(proxy.addr(), "/ws");
            next = Some(s);
            head.starts_with("http/1.1 101 ")
        });
        assert!(switched, "the freed slot never took a WebSocket");
        let mut s = next.unwrap();
        s.write_all(b"pong").unwrap();
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"pong");
        assert_eq!(target.count("OPEN"), 1, "{:?}", target.events());
    }

    fn a_websocket_to_a_full_h2_target_waits_in_the_queue_for_a_slot(driver) {
        use std::io::{Read, Write};
        let target = RawTarget::start();
        let proxy = proxy(
            driver,
            &format!("[{{ address: \"h2c://{}\", max_connections: 2 }}]", target.addr),
            "    transport: { queue_timeout: 10s }\n",
        );
        let (mut first, head) = ws_handshake(proxy.addr(), "/ws");
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        // With a queue, a WebSocket finding the target full waits as a request would...
        let addr = proxy.addr();
        let waiting = std::thread::spawn(move || ws_handshake(addr, "/ws"));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!waiting.is_finished(), "a second WebSocket was let past max_connections");
        // ...and takes the slot the first one's end frees.
        first.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap();
        let (mut s, head) = waiting.join().unwrap();
        assert!(head.starts_with("http/1.1 101 "), "{head}");
        s.write_all(b"late").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"late");
    }
}
