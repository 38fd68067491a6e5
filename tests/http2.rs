//! HTTP/2 from clients: ALPN `h2` on TLS listeners, prior-knowledge `h2c` on plaintext ones,
//! every stream served by the HTTP/1 data path (routes, bodies, trailers, limits), many streams
//! at once (h2load), graceful drain, and the defences of `listeners[].http2` exercised with raw
//! frames (the Python `h2` package, `tests/h2/probe.py`).

#[macro_use]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `curl -sS --max-time 20 ARGS`, which must succeed.
fn curl<S: AsRef<str>>(args: &[S]) -> String {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let mut all = vec!["-sS", "--max-time", "20"];
    all.extend_from_slice(&args);
    let o = peer("curl", &all);
    assert!(o.status.success(), "curl {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

fn probe_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h2/probe.py")
}

/// Runs one scenario of `tests/h2/probe.py` against `addr`; its last stdout line is the
/// verdict the test checks. Fails with a clear message when python3 or its `h2` package is
/// missing.
fn probe(addr: std::net::SocketAddr, scenario: &str, extra: &[&str]) -> String {
    python_h2(probe_script(), addr, scenario, extra)
}

/// Runs one scenario of `tests/h2/websocket.py` (RFC 8441 extended CONNECT) against `addr`.
fn websocket(addr: std::net::SocketAddr, scenario: &str, extra: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h2/websocket.py");
    python_h2(script, addr, scenario, extra)
}

fn python_h2(
    script: PathBuf,
    addr: std::net::SocketAddr,
    scenario: &str,
    extra: &[&str],
) -> String {
    let check = peer("python3", &["-c", "import h2"]);
    assert!(
        check.status.success(),
        "test peer python3 with the `h2` package is missing (pip install h2): {}",
        stderr(&check)
    );
    let port = addr.port().to_string();
    let mut args = vec![script.to_str().unwrap(), scenario, "127.0.0.1", &port];
    args.extend_from_slice(extra);
    let o = peer("python3", &args);
    assert!(
        o.status.success(),
        "probe {scenario} failed: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    // Shown when the test fails: every event the probe saw.
    eprintln!("--- probe {scenario} ---\n{}{}", stdout(&o), stderr(&o));
    stdout(&o).lines().last().unwrap_or_default().to_string()
}

/// An h2c listener with a WebSocket echo upstream on /ws, a `respond` route on /local and the
/// test backend elsewhere; and a listener that only answers locally.
const WEBSOCKET: &str = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - match: { path: /ws }\n        upstream: ws\n      - match: { path: /local }\n        respond: { status: 200, body: \"not a websocket\" }\n      - upstream: app\n  - name: local\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n    routes:\n      - respond: { status: 200 }\nupstreams:\n  ws:\n    targets: [$WS]\n  app:\n    targets: [$B1]\n";

const H2C: &str = "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    protocols: [h1, h2c]\n$HTTP2    routes:\n      - match: { path: /local }\n        respond: { status: 201, body: \"local {method} {path} {scheme}\" }\n      - match: { path: /strip }\n        strip_prefix: /strip\n        upstream: app\n      - upstream: app\n$TOP\nupstreams:\n  app:\n    targets: [$B1]\n";

fn h2c_proxy(driver: Driver, backend: &Backend, http2: &str, top: &str) -> Proxy {
    Proxy::start(
        driver,
        H2C,
        &[
            ("B1", backend.target()),
            ("HTTP2", http2.to_string()),
            ("TOP", top.to_string()),
        ],
    )
}

/// A TLS listener for `a.test` with its CA, for curl.
struct TlsEdge {
    dir: TempDir,
    pki: Pki,
}

impl TlsEdge {
    fn new() -> TlsEdge {
        let dir = TempDir::new();
        let pki = Pki::new(dir.path(), "edge");
        pki.server("a", &["a.test"]);
        TlsEdge { dir, pki }
    }

    fn proxy(&self, driver: Driver, backend: &Backend, extra: &str) -> Proxy {
        let yaml = format!("listeners:\n  - name: web\n    listen: 127.0.0.1:0\n{extra}    tls:\n      certificates: [{{ cert: $CERT, key: $KEY }}]\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n");
        Proxy::start(
            driver,
            &yaml,
            &[
                ("B1", backend.target()),
                ("CERT", self.dir.join("a.pem").display().to_string()),
                ("KEY", self.dir.join("a.key").display().to_string()),
            ],
        )
    }

    fn url(&self, proxy: &Proxy, path: &str) -> String {
        format!("https://a.test:{}{path}", proxy.addr().port())
    }

    /// curl arguments that trust the CA and resolve a.test to 127.0.0.1.
    fn args(&self, rest: &[&str]) -> Vec<String> {
        let port = rest
            .iter()
            .find_map(|a| a.strip_prefix("https://a.test:"))
            .and_then(|a| a.split('/').next())
            .expect("an https://a.test:PORT url")
            .to_string();
        let mut v = vec![
            "--cacert".to_string(),
            self.pki.ca_file.display().to_string(),
            "--resolve".to_string(),
            format!("a.test:{port}:127.0.0.1"),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    }
}

fn url(proxy: &Proxy, path: &str) -> String {
    format!("http://{}{path}", proxy.addr())
}

driver_tests! {
    fn curl_gets_http2_over_tls_by_alpn_and_http11_still_works(driver) {
        let backend = Backend::start("b1");
        let tls = TlsEdge::new();
        let proxy = tls.proxy(driver, &backend, "");
        let u = tls.url(&proxy, "/hello?x=1");
        let out = curl(&tls.args(&["--http2", "-w", " %{http_version}", &u]));
        assert_eq!(out, "b1\n 2");
        let req = backend.last_request();
        assert_eq!(req.target, "/hello?x=1");
        assert_eq!(req.header("host"), Some(&*format!("a.test:{}", proxy.addr().port())));
        assert_eq!(req.header("x-forwarded-proto"), Some("https"));
        let out = curl(&tls.args(&["--http1.1", "-w", " %{http_version}", &u]));
        assert_eq!(out, "b1\n 1.1");
    }

    fn protocols_decide_what_tls_clients_are_offered(driver) {
        let backend = Backend::start("b1");
        let tls = TlsEdge::new();
        let h1_only = tls.proxy(driver, &backend, "    protocols: [h1]\n");
        let u = tls.url(&h1_only, "/");
        assert_eq!(curl(&tls.args(&["--http2", "-w", " %{http_version}", &u])), "b1\n 1.1");
        let h2_only = tls.proxy(driver, &backend, "    protocols: [h2]\n");
        let u = tls.url(&h2_only, "/");
        assert_eq!(curl(&tls.args(&["--http2", "-w", " %{http_version}", &u])), "b1\n 2");
        // A client that cannot speak h2 there is closed, not served.
        let mut args = vec!["-sS", "--max-time", "10", "--http1.1"];
        let t = tls.args(&[&u]);
        args.extend(t.iter().map(String::as_str));
        let o = peer("curl", &args);
        assert!(!o.status.success(), "an http/1.1-only client was served: {}", stdout(&o));
    }

    fn curl_gets_h2c_with_prior_knowledge_and_http11_on_the_same_listener(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let out = curl(&["--http2-prior-knowledge", "-w", " %{http_version}", &url(&proxy, "/a")]);
        assert_eq!(out, "b1\n 2");
        assert_eq!(backend.last_request().header("x-forwarded-proto"), Some("http"));
        let out = curl(&["--http1.1", "-w", " %{http_version}", &url(&proxy, "/a")]);
        assert_eq!(out, "b1\n 1.1");
    }

    fn each_stream_is_routed_rewritten_and_answered_like_http1(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let out = curl(&["--http2-prior-knowledge", "-i", &url(&proxy, "/local")]);
        assert!(out.starts_with("HTTP/2 201"), "{out}");
        assert!(out.ends_with("local GET /local http"), "{out}");
        let out = curl(&["--http2-prior-knowledge", &url(&proxy, "/strip/x/y")]);
        assert_eq!(out, "b1\n");
        assert_eq!(backend.last_request().path(), "/x/y");
        let out = curl(&["--http2-prior-knowledge", "-i", &url(&proxy, "/status/503")]);
        assert!(out.starts_with("HTTP/2 503"), "{out}");
        // Interim responses are passed on.
        let out = curl(&["--http2-prior-knowledge", "-i", &url(&proxy, "/early-hints")]);
        assert!(out.starts_with("HTTP/2 103"), "{out}");
        assert!(out.to_ascii_lowercase().contains("link:") && out.contains("HTTP/2 200"), "{out}");
        assert!(out.ends_with("after hints\n"), "{out}");
        // Connection-specific response fields never reach an HTTP/2 client.
        let out = curl(&["--http2-prior-knowledge", "-i", &url(&proxy, "/hop")]);
        assert!(out.starts_with("HTTP/2 200"), "{out}");
        let lower = out.to_ascii_lowercase();
        assert!(!lower.contains("keep-alive") && !lower.contains("\nconnection:"), "{out}");
    }

    fn each_stream_gets_its_own_access_log_line(driver) {
        let backend = Backend::start("b1");
        let dir = TempDir::new();
        let log = dir.join("access.log");
        let top = format!("log: {{ format: json, access_log: {} }}", log.display());
        let mut proxy = h2c_proxy(driver, &backend, "", &top);
        // (One curl per request: curl 7.88 fails reusing a prior-knowledge connection with
        // error 16 before sending anything; h2load and probe.py cover many streams on one.)
        assert_eq!(curl(&["--http2-prior-knowledge", &url(&proxy, "/one?x=1")]), "b1\n");
        curl(&["--http2-prior-knowledge", &url(&proxy, "/status/404")]);
        shutdown_bounded(proxy.take_server()).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!((lines[0]["method"].as_str(), lines[0]["uri"].as_str(), lines[0]["status"].as_u64()), (Some("GET"), Some("/one?x=1"), Some(200)));
        assert_eq!(lines[0]["client"], "127.0.0.1");
        assert_eq!(lines[0]["protocol"], "HTTP/2.0");
        assert_eq!(lines[0]["upstream_addr"], backend.target().as_str());
        assert_eq!(lines[1]["status"], 404);
    }

    fn requests_are_counted_and_timed_by_protocol(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "admin:\n  listen: 127.0.0.1:0");
        let admin = proxy.server().admin_addr().expect("admin enabled");
        curl(&["--http2-prior-knowledge", &url(&proxy, "/a")]);
        curl(&["--http2-prior-knowledge", &url(&proxy, "/status/404")]);
        curl(&["--http1.1", &url(&proxy, "/a")]);
        let series = |proto: &str, code: &str| {
            format!("ringway_requests_total{{listener=\"web\",protocol=\"{proto}\",code=\"{code}\"}} 1\n")
        };
        let want = [series("h2", "2xx"), series("h2", "4xx"), series("h1", "2xx")];
        let metrics = || curl(&[format!("http://{admin}/metrics")]);
        // A request is counted just after its response went out: give the last one a moment.
        assert!(wait_for(Duration::from_secs(5), || {
            let page = metrics();
            want.iter().all(|w| page.contains(w.as_str()))
        }), "{}", metrics());
        let page = metrics();
        assert!(page.contains("ringway_requests_total{listener=\"web\",protocol=\"h1\",code=\"4xx\"} 0\n"), "{page}");
        for (proto, code) in [("h2", "2xx"), ("h2", "4xx"), ("h1", "2xx")] {
            let count = format!("ringway_request_duration_seconds_count{{listener=\"web\",protocol=\"{proto}\",upstream=\"app\",code=\"{code}\"}} 1\n");
            assert!(page.contains(&count), "{count}\n{page}");
        }
    }

    fn a_websocket_opened_by_extended_connect_reaches_an_http11_websocket_upstream(driver) {
        let backend = Backend::start("b1");
        let ws = support::streaming::start_ws_echo();
        let proxy = Proxy::start(driver, WEBSOCKET, &[("B1", backend.target()), ("WS", ws.to_string())]);
        // SETTINGS_ENABLE_CONNECT_PROTOCOL, a 200, every message (one of 70 KB) echoed through
        // the tunnel both ways, then the close handshake and END_STREAM.
        let verdict = websocket(proxy.addr(), "echo", &["/ws", "5"]);
        assert_eq!(verdict, "settings=1 status=200 echoes=all close=1000 end_stream");
        // The stream was logged as one request that switched protocols, and HTTP/1 still works.
        assert_eq!(curl(&["--http2-prior-knowledge", &url(&proxy, "/a")]), "b1\n");
    }

    fn a_websocket_upgrade_the_upstream_does_not_make_gets_its_status_or_502(driver) {
        let backend = Backend::start("b1");
        let ws = support::streaming::start_ws_echo();
        let proxy = Proxy::start(driver, WEBSOCKET, &[("B1", backend.target()), ("WS", ws.to_string())]);
        // A refusal passes on as it is.
        assert_eq!(websocket(proxy.addr(), "answer", &["/status/403"]), "settings=1 status=403 reset=None");
        assert_eq!(websocket(proxy.addr(), "answer", &["/status/404"]), "settings=1 status=404 reset=None");
        // A 2xx that did not switch protocols would tell the client its tunnel is open: 502.
        assert_eq!(websocket(proxy.addr(), "answer", &["/hello"]), "settings=1 status=502 reset=None");
        assert_eq!(websocket(proxy.addr(), "answer", &["/local"]), "settings=1 status=502 reset=None");
        // A listener whose routes all answer locally does not offer extended CONNECT.
        let local = proxy.local_addr("local").unwrap();
        assert_eq!(websocket(local, "settings", &[]), "settings=0");
    }

    fn request_and_response_bodies_stream_both_ways(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let dir = TempDir::new();
        let body = pattern(3 * 1024 * 1024 + 17);
        let file = dir.join("body");
        std::fs::write(&file, &body).unwrap();
        let at = format!("@{}", file.display());
        // With content-length.
        let o = peer("curl", &["-sS", "--max-time", "30", "--http2-prior-knowledge", "--data-binary", &at, &url(&proxy, "/echo-body")]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(o.stdout == body, "echoed {} bytes of {}", o.stdout.len(), body.len());
        // Without: the stream's DATA becomes a chunked HTTP/1.1 body.
        let o = peer("curl", &["-sS", "--max-time", "30", "--http2-prior-knowledge", "-T", &file.display().to_string(), "-X", "POST", "-H", "content-length:", &url(&proxy, "/echo-body")]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(o.stdout == body, "echoed {} bytes of {}", o.stdout.len(), body.len());
        // Large, chunked and close-delimited responses.
        let o = peer("curl", &["-sS", "--max-time", "30", "--http2-prior-knowledge", &url(&proxy, "/big?n=5000000")]);
        assert!(o.stdout == pattern(5_000_000), "got {} bytes", o.stdout.len());
        let o = peer("curl", &["-sS", "--max-time", "30", "--http2-prior-knowledge", &url(&proxy, "/chunked?n=300000")]);
        assert!(o.stdout == pattern(300_000), "got {} bytes", o.stdout.len());
        let o = peer("curl", &["-sS", "--max-time", "30", "--http2-prior-knowledge", &url(&proxy, "/close?n=200000")]);
        assert!(o.stdout == pattern(200_000), "got {} bytes", o.stdout.len());
    }

    fn bodies_of_several_mib_and_many_streams_cross_an_http2_tls_connection_whole(driver) {
        // The TLS stream is driven by readiness and nonblocking reads and writes (`http2::io`):
        // full records, partial ones, a socket that fills up, and many streams at once.
        let backend = Backend::start("b1");
        let tls = TlsEdge::new();
        let proxy = tls.proxy(driver, &backend, "");
        let dir = TempDir::new();
        let body = pattern(3 * 1024 * 1024 + 17);
        let file = dir.join("body");
        std::fs::write(&file, &body).unwrap();
        let at = format!("@{}", file.display());
        let u = tls.url(&proxy, "/echo-body");
        let args = tls.args(&["-sS", "--max-time", "30", "--http2", "--data-binary", &at, &u]);
        let o = peer("curl", &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(o.stdout == body, "echoed {} bytes of {}", o.stdout.len(), body.len());
        let u = tls.url(&proxy, "/big?n=5000000");
        let args = tls.args(&["-sS", "--max-time", "30", "--http2", &u]);
        let o = peer("curl", &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.stdout == pattern(5_000_000), "got {} bytes", o.stdout.len());
        let h2load_url = format!("https://127.0.0.1:{}/", proxy.addr().port());
        let o = peer("h2load", &["-c", "4", "-m", "10", "-n", "2000", &h2load_url]);
        let out = stdout(&o);
        assert!(o.status.success(), "h2load failed: {out}{}", stderr(&o));
        assert!(
            out.contains("2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
            "{out}"
        );
    }

    fn h2load_runs_many_concurrent_streams_without_an_error(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let o = peer("h2load", &["-c", "4", "-m", "10", "-n", "2000", &url(&proxy, "/")]);
        let out = stdout(&o);
        assert!(o.status.success(), "h2load failed: {out}{}", stderr(&o));
        assert!(
            out.contains("2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
            "{out}"
        );
        assert!(out.contains("status codes: 2000 2xx"), "{out}");
    }

    fn chunked_response_trailers_arrive_as_http2_trailers(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let verdict = probe(proxy.addr(), "trailers", &["/chunked"]);
        assert_eq!(verdict, "status=200 body=hello, chunked world trailers=x-trailer:done");
    }

    fn limits_apply_to_each_stream_as_to_an_http1_request(driver) {
        let backend = Backend::start("b1");
        let top = "limits: { max_request_body: 1KiB, max_header_bytes: 4KiB }";
        let proxy = h2c_proxy(driver, &backend, "", top);
        let big = "x".repeat(2000);
        let out = curl(&["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", &big, &url(&proxy, "/echo-body")]);
        assert_eq!(out, "413");
        let header = format!("X-Big: {}", "y".repeat(5000));
        let out = curl(&["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", "-H", &header, &url(&proxy, "/a")]);
        assert_eq!(out, "431");
        assert_eq!(backend.requests(), 0);
        let out = curl(&["--http2-prior-knowledge", "--data-binary", "small", &url(&proxy, "/echo-body")]);
        assert_eq!(out, "small");
    }

    fn a_request_in_flight_finishes_when_the_server_drains_and_gets_a_goaway(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let addr = proxy.addr();
        let client = std::thread::spawn(move || probe(addr, "drain", &["/sleep?ms=1500"]));
        assert!(backend.wait_for_requests(1, Duration::from_secs(10)), "the request never reached the backend");
        proxy.shutdown();
        let verdict = client.join().unwrap();
        assert_eq!(verdict, "status=200 body=slept goaway=NO_ERROR");
    }

    fn a_reload_sends_goaway_and_the_request_in_flight_finishes(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let addr = proxy.addr();
        let client = std::thread::spawn(move || probe(addr, "drain", &["/sleep?ms=2500"]));
        assert!(backend.wait_for_requests(1, Duration::from_secs(10)), "the request never reached the backend");
        let vars = [
            ("B1", backend.target()),
            ("HTTP2", String::new()),
            ("TOP", String::new()),
        ];
        proxy.rewrite_config(&H2C.replace("local {method}", "reloaded {method}"), &vars);
        proxy.server().reload().expect("reload");
        let verdict = client.join().unwrap();
        assert_eq!(verdict, "status=200 body=slept goaway=NO_ERROR");
        let out = curl(&["--http2-prior-knowledge", &url(&proxy, "/local")]);
        assert_eq!(out, "reloaded GET /local http");
    }

    fn rapid_reset_gets_goaway_enhance_your_calm(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "    http2: { max_resets_per_s: 10 }\n", "");
        assert_eq!(probe(proxy.addr(), "rapid-reset", &["500"]), "goaway=ENHANCE_YOUR_CALM");
        // A browser's occasional cancellations stay well inside the limit.
        assert_eq!(probe(proxy.addr(), "few-resets", &["3"]), "status=200 goaway=none");
    }

    fn a_client_reset_abandons_the_upstream_request_at_once(driver) {
        // An upstream that reads the request and never answers, then reports whether the
        // proxy closed its connection.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let Ok((mut s, _)) = listener.accept() else { return };
            let (mut buf, mut head) = ([0u8; 4096], Vec::new());
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
            let verdict = match s.read(&mut buf) {
                Ok(0) => "closed".to_string(),
                Ok(n) => format!("{n} more bytes"),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => "still open".to_string(),
                Err(_) => "closed".to_string(),
            };
            let _ = tx.send(verdict);
        });
        let vars = [("B1", addr.to_string()), ("HTTP2", String::new()), ("TOP", String::new())];
        let proxy = Proxy::start(driver, H2C, &vars);
        // The stream is reset 300 ms in; the connection goes on serving.
        assert_eq!(probe(proxy.addr(), "reset-after", &["300"]), "status=201 body=local GET /local http");
        let head = rx.recv_timeout(Duration::from_secs(5)).expect("the request reached the upstream");
        assert!(head.starts_with("GET /held HTTP/1.1\r\n"), "{head}");
        // The data path is dropped with the stream: its upstream connection closes (it would
        // otherwise wait for an answer that never comes).
        let verdict = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(verdict, "closed");
    }

    fn a_continuation_flood_is_cut_off(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let verdict = probe(proxy.addr(), "continuation-flood", &[]);
        assert!(verdict.starts_with("goaway=ENHANCE_YOUR_CALM"), "{verdict}");
        assert_eq!(backend.requests(), 0);
        // The server is unharmed.
        assert_eq!(curl(&["--http2-prior-knowledge", &url(&proxy, "/a")]), "b1\n");
    }

    fn ping_settings_and_window_update_floods_do_not_disturb_other_clients(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        // h2 answers one PING / SETTINGS at a time and stops reading while the answer cannot
        // be written, so a flooder that does not read stalls itself with bounded memory (or is
        // sent GOAWAY); window increments past 2^31-1 are a connection error. What matters
        // here: everyone else is served meanwhile.
        for kind in ["ping", "settings", "window-update"] {
            let verdict = probe(proxy.addr(), "flood", &[kind, "3000000"]);
            let (other, flooder) = verdict.split_once(' ').expect(&verdict);
            assert_eq!(other, "other=200", "{kind}: {verdict}");
            assert!(flooder.starts_with("flooder="), "{kind}: {verdict}");
        }
    }

    fn a_header_list_past_max_header_list_is_refused_and_the_connection_lives_on(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "    http2: { max_header_list: 16KiB }\n", "");
        // An HPACK bomb: a small block that decodes past the limit is refused on its stream.
        let verdict = probe(proxy.addr(), "bomb-headers", &[]);
        assert_eq!(verdict, "first=status:431 then=200");
        // A block past the limit on the wire ends the connection (h2 will not buffer it).
        let verdict = probe(proxy.addr(), "literal-headers", &[]);
        assert_eq!(verdict, "first=goaway:COMPRESSION_ERROR then=None");
        assert!(backend.recorded().iter().all(|r| r.path() != "/big-headers"));
        assert_eq!(curl(&["--http2-prior-knowledge", &url(&proxy, "/a")]), "b1\n");
    }

    fn malformed_and_connection_specific_fields_never_reach_the_upstream(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let verdict = probe(proxy.addr(), "malformed", &[]);
        for name in [
            "connection-header", "transfer-encoding", "te-gzip", "upgrade", "crlf-in-value",
            "nul-in-value", "uppercase-name", "unknown-pseudo", "pseudo-after-regular", "missing-path",
        ] {
            let refused = ["reset:PROTOCOL_ERROR", "goaway:PROTOCOL_ERROR", "status:400"]
                .iter()
                .any(|o| verdict.contains(&format!("{name}={o}")));
            assert!(refused, "{name}: {verdict}");
        }
        // CONNECT (and so RFC 8441 WebSocket over HTTP/2) is not offered.
        assert!(verdict.contains("connect=status:501"), "{verdict}");
        assert!(verdict.ends_with("then=200"), "{verdict}");
        assert!(backend.recorded().iter().all(|r| !r.path().starts_with("/m/")), "a malformed request reached the backend");
        assert_eq!(backend.requests(), 1, "only the good request reached the backend");
    }

    fn content_length_must_match_the_data_sent(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "");
        let verdict = probe(proxy.addr(), "length-mismatch", &[]);
        assert_eq!(verdict, "cl10/data5=reset:PROTOCOL_ERROR cl3/data5=reset:PROTOCOL_ERROR");
        assert!(backend.recorded().iter().all(|r| r.path() != "/echo-body"), "a mismatched body reached the backend");
    }

    fn settings_announce_the_limits_and_streams_past_the_maximum_are_refused(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "    http2: { max_concurrent_streams: 3, initial_window: 128KiB, max_header_list: 32KiB }\n", "");
        let verdict = probe(proxy.addr(), "settings", &["/sleep?ms=500", "5"]);
        assert_eq!(verdict, "max_streams=3 header_list=32768 window=131072 ok=3 refused=2");
    }

    fn a_client_that_never_opens_its_window_is_timed_out(driver) {
        let backend = Backend::start("b1");
        let proxy = h2c_proxy(driver, &backend, "", "limits: { idle_timeout: 2s }");
        let verdict = probe(proxy.addr(), "zero-window", &["/big?n=3000000"]);
        assert_eq!(verdict, "outcome=reset:CANCEL within=20s");
        // The stream's upstream connection was let go, not pinned.
        assert!(
            backend.wait_for_no_open_connections(Duration::from_secs(10)),
            "the upstream connection of the timed-out stream stayed open"
        );
    }
}
