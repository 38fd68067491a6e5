//! Header handling: hop-by-hop removal in both directions, X-Forwarded-* / X-Real-IP /
//! Forwarded with and without trusted_proxies, and the headers.request/response operations.

#[macro_use]
mod support;

use support::*;

fn start(yaml_top: &str, upstream_extra: &str) -> (Proxy, Backend) {
    let b1 = Backend::start("b1");
    let yaml = format!("{yaml_top}{}", one_upstream_yaml("$B1", upstream_extra));
    let proxy = Proxy::start(Driver::any(), &yaml, &[("B1", b1.target())]);
    (proxy, b1)
}

driver_tests! {
    fn hop_by_hop_request_fields_do_not_reach_the_backend(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(get_req(
            "/",
            "Connection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\nX-Stays: yes\r\n",
        ));
        assert_eq!(r.status, 200);
        let got = b1.only_request();
        for name in ["x-secret-hop", "keep-alive", "te", "upgrade", "proxy-connection", "trailer"] {
            assert!(!got.has_header(name), "{name} reached the backend:\n{}", got.head_text());
        }
        if let Some(c) = got.header("connection") {
            assert!(!c.to_ascii_lowercase().contains("x-secret-hop"), "{}", got.head_text());
        }
        assert_eq!(got.header("x-stays"), Some("yes"));
        assert_eq!(got.header("host"), Some("test.local"));
    }

    fn hop_by_hop_response_fields_do_not_reach_the_client(driver) {
        let (proxy, _b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/hop", ""));
        assert_eq!(r.status, 200);
        for name in ["x-resp-hop", "keep-alive", "proxy-connection", "upgrade"] {
            assert!(!r.has_header(name), "{name} reached the client:\n{}", r.head_text());
        }
        assert_eq!(r.header("x-resp-keep"), Some("yes"));
        assert_eq!(r.text(), "ok\n");
        // The backend's Connection field named only X-Resp-Hop: the client connection stays.
        assert_eq!(c.request(get_req("/next", "")).status, 200);
    }
}

#[test]
fn untrusted_client_forwarded_headers_are_replaced() {
    let (proxy, b1) = start("", "");
    proxy.client().request(get_req(
        "/",
        "X-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n",
    ));
    let got = b1.only_request();
    assert_eq!(
        got.header_all("x-forwarded-for"),
        vec!["127.0.0.1"],
        "{}",
        got.head_text()
    );
    assert_eq!(got.header_all("x-real-ip"), vec!["127.0.0.1"]);
    assert_eq!(got.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(got.header_all("x-forwarded-host"), vec!["test.local"]);
    assert!(
        !got.has_header("forwarded"),
        "xff mode adds no Forwarded field"
    );
}

#[test]
fn forwarded_headers_are_added_when_the_client_sends_none() {
    let (proxy, b1) = start("", "");
    proxy
        .client()
        .request("GET / HTTP/1.1\r\nHost: site.test:8080\r\n\r\n");
    let got = b1.only_request();
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(got.header("x-forwarded-host"), Some("site.test:8080"));
}

#[test]
fn trusted_proxy_forwarded_headers_are_kept_and_extended() {
    let (proxy, b1) = start("trusted_proxies: [127.0.0.1/32]\n", "");
    proxy.client().request(get_req(
        "/",
        "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Real-IP: 9.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: public.test\r\n",
    ));
    let got = b1.only_request();
    assert_eq!(
        got.header_all("x-forwarded-for"),
        vec!["1.2.3.4, 5.6.7.8, 127.0.0.1"],
        "{}",
        got.head_text()
    );
    assert_eq!(got.header_all("x-real-ip"), vec!["9.9.9.9"]);
    assert_eq!(got.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(got.header_all("x-forwarded-host"), vec!["public.test"]);
}

#[test]
fn trusted_proxies_outside_the_client_address_are_not_believed() {
    let (proxy, b1) = start("trusted_proxies: [10.0.0.0/8, 192.168.0.0/16]\n", "");
    proxy.client().request(get_req(
        "/",
        "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n",
    ));
    let got = b1.only_request();
    assert_eq!(got.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(got.header_all("x-forwarded-proto"), vec!["http"]);
}

#[test]
fn rfc7239_mode_adds_a_forwarded_field() {
    let (proxy, b1) = start("", "    forwarded: rfc7239\n");
    proxy
        .client()
        .request("GET / HTTP/1.1\r\nHost: site.test\r\nForwarded: for=6.6.6.6\r\n\r\n");
    let got = b1.only_request();
    assert_eq!(
        got.header_all("forwarded"),
        vec!["for=127.0.0.1;by=127.0.0.1;host=\"site.test\";proto=http"],
        "an untrusted Forwarded field is replaced: {}",
        got.head_text()
    );
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn rfc7239_mode_extends_a_trusted_forwarded_chain() {
    let (proxy, b1) = start(
        "trusted_proxies: [127.0.0.1/32]\n",
        "    forwarded: rfc7239\n",
    );
    proxy
        .client()
        .request("GET / HTTP/1.1\r\nHost: site.test\r\nForwarded: for=6.6.6.6;proto=https\r\n\r\n");
    let got = b1.only_request();
    assert_eq!(
        got.header_all("forwarded"),
        vec!["for=6.6.6.6;proto=https, for=127.0.0.1;by=127.0.0.1;host=\"site.test\";proto=http"]
    );
}

#[test]
fn forwarded_off_passes_client_fields_through_and_adds_none() {
    let (proxy, b1) = start("", "    forwarded: off\n");
    proxy
        .client()
        .request(get_req("/", "X-Forwarded-For: 1.2.3.4\r\n"));
    let got = b1.only_request();
    assert_eq!(got.header_all("x-forwarded-for"), vec!["1.2.3.4"]);
    assert!(!got.has_header("x-real-ip"));
    assert!(!got.has_header("x-forwarded-proto"));
    assert!(!got.has_header("forwarded"));
}

#[test]
fn request_header_operations_set_add_remove_and_replace() {
    let ops = "    headers:\n      request:\n        - set: { X-Env: prod }\n        - add: { X-Trace: \"{client_ip}\" }\n        - remove: [\"X-Internal-*\", X-Drop]\n        - replace: { name: Referer, regex: \"^http://\", with: \"https://\" }\n        - set: { X-Upstream: \"{upstream_hostport}\" }\n";
    let (proxy, b1) = start("", ops);
    proxy.client().request(get_req(
        "/",
        "X-Env: dev\r\nX-Env: test\r\nX-Trace: first\r\nX-Internal-A: 1\r\nx-internal-b: 2\r\nX-Drop: 1\r\nX-Dropped-Not: 1\r\nReferer: http://site.test/page\r\n",
    ));
    let got = b1.only_request();
    assert_eq!(got.header_all("x-env"), vec!["prod"], "{}", got.head_text());
    assert_eq!(got.header_all("x-trace"), vec!["first", "127.0.0.1"]);
    assert!(
        !got.has_header("x-internal-a") && !got.has_header("x-internal-b"),
        "{}",
        got.head_text()
    );
    assert!(!got.has_header("x-drop"));
    assert_eq!(
        got.header("x-dropped-not"),
        Some("1"),
        "remove is exact unless the name ends in *"
    );
    assert_eq!(got.header("referer"), Some("https://site.test/page"));
    assert_eq!(got.header("x-upstream"), Some(b1.target().as_str()));
}

#[test]
fn replace_uses_capture_groups() {
    let ops = "    headers:\n      request:\n        - replace: { name: X-Version, regex: \"v(\\\\d+)\", with: \"version-$1\" }\n";
    let (proxy, b1) = start("", ops);
    proxy
        .client()
        .request(get_req("/", "X-Version: api-v12\r\n"));
    assert_eq!(
        b1.only_request().header("x-version"),
        Some("api-version-12")
    );
}

#[test]
fn response_header_operations_set_add_remove_and_replace() {
    let ops = "    headers:\n      response:\n        - remove: [\"X-Internal-*\"]\n        - set: { Server: ringway-test }\n        - add: { X-Served-By: \"{upstream_hostport}\" }\n        - replace: { name: Location, regex: \"^http://\", with: \"https://\" }\n";
    let (proxy, b1) = start("", ops);
    let mut c = proxy.client();
    let r = c.request(get_req("/resp-headers", ""));
    assert_eq!(r.status, 200);
    assert!(
        !r.has_header("x-internal-secret") && !r.has_header("x-internal-id"),
        "{}",
        r.head_text()
    );
    assert_eq!(r.header_all("server"), vec!["ringway-test"]);
    assert_eq!(r.header("x-served-by"), Some(b1.target().as_str()));
    assert_eq!(r.header("location"), Some("https://example.com/next"));
    assert_eq!(r.header("x-keep"), Some("yes"));
    assert_eq!(r.text(), "ok\n");
    assert_eq!(c.request(get_req("/next", "")).status, 200);
}

#[test]
fn header_operations_cannot_break_response_framing() {
    // Removing Content-Length by pattern must not leave the client without framing.
    let ops = "    headers:\n      response:\n        - remove: [\"Content-*\"]\n";
    let (proxy, _b1) = start("", ops);
    let mut c = proxy.client();
    let r = c.request(get_req("/big?n=100", ""));
    assert_eq!(r.body, pattern(100));
    if !r.closes() {
        assert_eq!(c.request(get_req("/next", "")).status, 200);
    }
}

#[test]
fn host_header_reaches_the_backend_unchanged() {
    let (proxy, b1) = start("", "");
    proxy
        .client()
        .request("GET / HTTP/1.1\r\nHost: Mixed.Case.test:8443\r\n\r\n");
    assert_eq!(
        b1.only_request().header_all("host"),
        vec!["Mixed.Case.test:8443"]
    );
}

#[test]
fn http10_request_without_host_gets_one_upstream() {
    let (proxy, b1) = start("", "");
    proxy.client().request("GET / HTTP/1.0\r\n\r\n");
    let got = b1.only_request();
    assert_eq!(got.minor, 1, "the proxy speaks HTTP/1.1 upstream");
    assert_eq!(got.header_all("host").len(), 1, "{}", got.head_text());
}

#[test]
fn end_to_end_fields_pass_through_in_order() {
    let (proxy, b1) = start("", "");
    proxy.client().request(get_req(
        "/",
        "X-A: 1\r\nX-B: 2\r\nX-A: 3\r\nCookie: a=b; c=d\r\nAuthorization: Bearer t\r\n",
    ));
    let got = b1.only_request();
    assert_eq!(got.header_all("x-a"), vec!["1", "3"]);
    assert_eq!(got.header("x-b"), Some("2"));
    assert_eq!(got.header("cookie"), Some("a=b; c=d"));
    assert_eq!(got.header("authorization"), Some("Bearer t"));
}

#[test]
fn request_header_operations_cannot_strip_body_framing() {
    // A config that removes Content-Length must not turn the body into a second request.
    let ops = "    headers:\n      request:\n        - remove: [\"Content-*\"]\n";
    let (proxy, b1) = start("", ops);
    let body = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = proxy.client();
    let r = c.request(format!(
        "POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(r.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let log = b1.recorded();
    assert!(
        log.iter().all(|r| r.target != "/smuggled"),
        "the request body was read by the backend as a request: {log:#?}"
    );
    assert_eq!(log[0].body, body.as_bytes());
}

#[test]
fn header_operations_on_framing_fields_are_config_errors() {
    for op in [
        "set: { Transfer-Encoding: chunked }",
        "set: { Content-Length: \"0\" }",
        "add: { Transfer-Encoding: chunked }",
        "remove: [Content-Length]",
        "remove: [Transfer-Encoding]",
    ] {
        for side in ["request", "response"] {
            let yaml = format!(
                "{}    headers:\n      {side}:\n        - {op}\n",
                one_upstream_yaml("127.0.0.1:9", "")
            );
            match ringway::config::Config::parse(&yaml, "test.yaml") {
                Ok(_) => {
                    panic!("headers.{side} `{op}` was accepted: it could break message framing")
                }
                Err(e) => assert!(
                    e.key
                        .starts_with(&format!("upstreams.app.headers.{side}[0]"))
                        && e.line == 11,
                    "headers.{side} `{op}`: error not located at the operation: {e}"
                ),
            }
        }
    }
}
