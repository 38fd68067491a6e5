//! The access log: one JSON (or text) line per request with the documented fields, written to
//! the configured file by the writer thread, complete once the server has shut down.

#[macro_use]
mod support;

use support::*;

fn run_with_access_log(driver: Driver, format: &str) -> (Vec<String>, String) {
    let dir = TempDir::new();
    let path = dir.join("access.log");
    let b1 = Backend::start("b1");
    let yaml = format!(
        "log: {{ format: {format}, access_log: {} }}\n{}",
        path.display(),
        one_upstream_yaml("$B1", "")
    );
    let mut proxy = Proxy::start(driver, &yaml, &[("B1", b1.target())]);
    let mut c = proxy.client();
    assert_eq!(c.request(get_req("/first?x=1", "")).status, 200);
    let r = c.request("POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 200);
    drop(c);
    let target = b1.target();
    shutdown_bounded(proxy.take_server()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    (text.lines().map(str::to_string).collect(), target)
}

driver_tests! {
    fn access_log_lines_are_json_with_the_documented_fields(driver) {
        let (lines, target) = run_with_access_log(driver, "json");
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        for field in ["time", "client", "method", "uri", "status", "bytes_in", "bytes_out", "duration_ms", "upstream", "worker"] {
            assert!(first.get(field).is_some(), "missing {field}: {first}");
        }
        assert_eq!(first["method"], "GET");
        assert_eq!(first["uri"], "/first?x=1");
        assert_eq!(first["status"], 200);
        assert_eq!(first["client"], "127.0.0.1");
        assert_eq!(first["upstream"], "app");
        assert_eq!(first["upstream_addr"], target.as_str());
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["method"], "POST");
        let head_and_body = "POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".len();
        assert_eq!(second["bytes_in"], head_and_body as u64);
        assert!(second["bytes_out"].as_u64().unwrap() > 5);
    }
}

#[test]
fn text_access_log_has_one_readable_line_per_request() {
    let (lines, _) = run_with_access_log(Driver::any(), "text");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("\"GET /first?x=1\" 200"), "{}", lines[0]);
    assert!(
        lines[1].contains("\"POST /echo-body\" 200 in="),
        "{}",
        lines[1]
    );
}

/// Starts a proxy logging `format` to a file; `routes` and `upstreams` are YAML bodies that may
/// use `$B1` and `$DEAD`. Returns the proxy, the log path and the backend.
fn logging_proxy(format: &str, extra: &str, routes: &str) -> (Proxy, TempDir, Backend) {
    let dir = TempDir::new();
    let path = dir.join("access.log");
    let b1 = Backend::start("b1");
    let yaml = format!(
        "log: {{ access_log: {{ path: {}, format: '{format}' }} }}\n{extra}listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n{routes}upstreams:\n  app:\n    targets: [$B1]\n  gone:\n    targets: [$DEAD]\n",
        path.display(),
    );
    let dead = refused_addr().to_string();
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B1", b1.target()), ("DEAD", dead)]);
    (proxy, dir, b1)
}

/// Shuts the proxy down (so every line is written) and returns the log's lines.
fn lines_after_shutdown(mut proxy: Proxy, dir: &TempDir) -> Vec<String> {
    shutdown_bounded(proxy.take_server()).unwrap();
    let text = std::fs::read_to_string(dir.join("access.log")).unwrap();
    text.lines().map(str::to_string).collect()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

const ROUTES: &str =
    "      - match: { path: /gone }\n        upstream: gone\n      - name: main\n        upstream: app\n";

#[test]
fn json_lines_carry_request_headers_names_and_upstream_timings() {
    let (proxy, dir, b1) = logging_proxy("json", "", ROUTES);
    let mut c = proxy.client();
    let r = c.request(
        "GET /x?y=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: tester/1.0\r\nReferer: http://ref.test/\r\nX-Request-Id: req-42\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let r = c.request("GET /gone HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    assert_eq!(r.status, 502);
    drop(c);
    let lines = lines_after_shutdown(proxy, &dir);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = json(&lines[0]);
    assert_eq!(ok["host"], "shop.test");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["user_agent"], "tester/1.0");
    assert_eq!(ok["referer"], "http://ref.test/");
    assert_eq!(ok["request_id"], "req-42");
    assert_eq!(ok["listener"], "web");
    assert_eq!(ok["route"], "main", "a named route logs its name");
    assert_eq!(ok["upstream"], "app");
    assert_eq!(ok["upstream_addr"], b1.target().as_str());
    let connect = ok["upstream_connect_ms"].as_f64().unwrap();
    let response = ok["upstream_response_ms"].as_f64().unwrap();
    let total = ok["duration_ms"].as_f64().unwrap();
    assert!(connect <= response && response <= total, "{ok}");
    assert!(ok["client_port"].as_u64().unwrap() > 0, "{ok}");
    // A 502 still names the upstream and the address that refused.
    let bad = json(&lines[1]);
    assert_eq!(bad["status"], 502);
    assert_eq!(bad["route"], "0", "an unnamed route logs its index");
    assert_eq!(bad["upstream"], "gone");
    assert!(bad["upstream_addr"].as_str().is_some(), "{bad}");
    assert_eq!(bad["user_agent"], serde_json::Value::Null);
}

#[test]
fn every_parser_refusal_is_logged_with_its_status() {
    let (proxy, dir, _b1) = logging_proxy(
        "json",
        "limits: { max_uri_bytes: 1KiB, max_header_bytes: 4KiB, max_request_body: 10, header_read_timeout: 1s }\n",
        ROUTES,
    );
    let sends = [
        (
            400,
            "GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n".to_string(),
        ),
        (
            414,
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(2000)),
        ),
        (
            431,
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
                "h".repeat(5000)
            ),
        ),
        (
            413,
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n".to_string(),
        ),
    ];
    for (status, raw) in &sends {
        let mut c = proxy.client();
        c.send(raw);
        assert_eq!(c.read_response().status, *status, "{raw:.40}");
    }
    // A head that never completes: 408 after header_read_timeout.
    let mut slow = proxy.client();
    slow.send("GET / HTTP/1.1\r\nHost: a\r\n");
    assert_eq!(slow.read_response().status, 408);
    let lines = lines_after_shutdown(proxy, &dir);
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| json(l)["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [400, 414, 431, 413, 408], "{lines:?}");
    for l in &lines {
        let v = json(l);
        assert_eq!(v["client"], "127.0.0.1", "{v}");
        assert_eq!(v["listener"], "web", "{v}");
        assert!(v["bytes_out"].as_u64().unwrap() > 0, "{v}");
    }
}

#[test]
fn combined_format_is_nginx_combined() {
    let (proxy, dir, _b1) = logging_proxy("combined", "", ROUTES);
    let mut c = proxy.client();
    let r = c.request(
        "GET /x?q=\"1\" HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8.1\r\nReferer: http://r.test/\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let body_len = r.body.len();
    c.send("HEAD /y HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_head_response().status, 200);
    drop(c);
    let lines = lines_after_shutdown(proxy, &dir);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    // "$http_referer" "$http_user_agent"
    let re = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "([^"]*)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$"#,
    )
    .unwrap();
    let first = re
        .captures(&lines[0])
        .unwrap_or_else(|| panic!("{}", lines[0]));
    assert_eq!(&first[1], r#"GET /x?q=\x221\x22 HTTP/1.1"#);
    assert_eq!(&first[2], "200");
    assert_eq!(first[3].parse::<usize>().unwrap(), body_len);
    assert_eq!((&first[4], &first[5]), ("http://r.test/", "curl/8.1"));
    let second = re
        .captures(&lines[1])
        .unwrap_or_else(|| panic!("{}", lines[1]));
    assert_eq!(&second[1], "HEAD /y HTTP/1.0");
    assert_eq!((&second[3], &second[4], &second[5]), ("0", "-", "-"));
}

#[test]
fn a_template_format_writes_custom_lines() {
    let (proxy, dir, _b1) = logging_proxy(
        "{method} {uri} -> {status} via {upstream} ({listener}#{route})",
        "",
        ROUTES,
    );
    assert_eq!(proxy.get("/t").status, 200);
    let lines = lines_after_shutdown(proxy, &dir);
    assert_eq!(lines, ["GET /t -> 200 via app (web#main)"]);
}

#[test]
fn an_unknown_template_field_is_a_validate_error() {
    let e = ringway::config::Config::parse(
        "log: { access_log: { format: '{cleint}' } }\nlisteners:\n  - listen: 127.0.0.1:0\n    routes: [{ respond: {} }]\n",
        "t.yaml",
    )
    .unwrap_err();
    assert_eq!(e.key, "log.access_log.format", "{e}");
    assert!(
        e.message.contains("unknown access log field {cleint}"),
        "{e}"
    );
}
