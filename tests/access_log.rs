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
        assert_eq!(first["upstream"], target.as_str());
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
