//! Routes: host (exact, wildcard, nginx forms, regex), path prefix on segment boundaries,
//! globs, exact and regex paths, except, methods,
//! headers, first match wins, 404 when none; strip_prefix, rewrite, method override and
//! respond routes with placeholders. Driver-independent logic: one driver.

#[macro_use]
mod support;

use support::*;

/// Two backends `a` and `fallback`; `routes` is the YAML list body (indented 6 spaces) that
/// may use upstreams `a` and `fallback`.
fn setup(routes: &str) -> (Proxy, Backend, Backend) {
    let a = Backend::start("a");
    let f = Backend::start("fallback");
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n{routes}upstreams:\n  a:\n    targets: [$A]\n  fallback:\n    targets: [$F]\n"
    );
    let proxy = Proxy::start(
        Driver::any(),
        &yaml,
        &[("A", a.target()), ("F", f.target())],
    );
    (proxy, a, f)
}

/// Which backend answered `raw` ("a" / "fallback"), or the status when none did.
fn who(proxy: &Proxy, raw: &str) -> String {
    let r = proxy.client().request(raw);
    match r.header("x-backend") {
        Some(b) => b.to_string(),
        None => r.status.to_string(),
    }
}

fn get_host(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[test]
fn exact_host_matches_case_insensitively_and_ignores_the_port() {
    let (p, _a, _f) = setup("      - match: { host: [a.test, other.test] }\n        upstream: a\n      - upstream: fallback\n");
    assert_eq!(who(&p, &get_host("/", "a.test")), "a");
    assert_eq!(who(&p, &get_host("/", "A.Test:8080")), "a");
    assert_eq!(who(&p, &get_host("/", "other.test")), "a");
    assert_eq!(who(&p, &get_host("/", "b.test")), "fallback");
    assert_eq!(who(&p, &get_host("/", "xa.test")), "fallback");
}

#[test]
fn wildcard_host_matches_subdomains_only() {
    let (p, _a, _f) = setup("      - match: { host: [\"*.example.com\"] }\n        upstream: a\n      - upstream: fallback\n");
    assert_eq!(who(&p, &get_host("/", "www.example.com")), "a");
    assert_eq!(who(&p, &get_host("/", "a.b.example.com:81")), "a");
    assert_eq!(who(&p, &get_host("/", "example.com")), "fallback");
    assert_eq!(who(&p, &get_host("/", "badexample.com")), "fallback");
}

#[test]
fn path_prefix_matches_on_segment_boundaries() {
    let (p, _a, _f) =
        setup("      - match: { path: /api }\n        upstream: a\n      - upstream: fallback\n");
    assert_eq!(who(&p, &get_req("/api", "")), "a");
    assert_eq!(who(&p, &get_req("/api/", "")), "a");
    assert_eq!(who(&p, &get_req("/api/users/1", "")), "a");
    assert_eq!(who(&p, &get_req("/api?x=1", "")), "a");
    assert_eq!(who(&p, &get_req("/apix", "")), "fallback");
    assert_eq!(who(&p, &get_req("/ap", "")), "fallback");
    assert_eq!(who(&p, &get_req("/other/api", "")), "fallback");
}

#[test]
fn except_prefixes_do_not_match() {
    let (p, _a, _f) = setup(
        "      - match: { path: /api, except: [/api/static, /api/health] }\n        upstream: a\n      - upstream: fallback\n",
    );
    assert_eq!(who(&p, &get_req("/api/users", "")), "a");
    assert_eq!(who(&p, &get_req("/api/static", "")), "fallback");
    assert_eq!(who(&p, &get_req("/api/static/app.js", "")), "fallback");
    assert_eq!(who(&p, &get_req("/api/health", "")), "fallback");
    assert_eq!(who(&p, &get_req("/api/staticx", "")), "a");
}

#[test]
fn glob_path_matches_everything_under_it_and_not_the_bare_prefix() {
    let (p, _a, _f) = setup(
        "      - match: { path: /api/*, except: [\"*.png\"] }\n        upstream: a\n      - upstream: fallback\n",
    );
    assert_eq!(who(&p, &get_req("/api/", "")), "a");
    assert_eq!(who(&p, &get_req("/api/users/1?x=1", "")), "a");
    assert_eq!(who(&p, &get_req("/api", "")), "fallback");
    assert_eq!(who(&p, &get_req("/apix/y", "")), "fallback");
    assert_eq!(who(&p, &get_req("/api/logo.png", "")), "fallback");
}

#[test]
fn exact_and_regex_paths_match_as_nginx_locations() {
    let (p, _a, _f) = setup(
        "      - match: { path: \"= /ready\" }\n        respond: { body: exact }\n      - match: { path: \"~ ^/api/v[0-9]+/\" }\n        upstream: a\n      - match: { path: \"~* \\\\.PHP$\" }\n        respond: { body: php }\n      - upstream: fallback\n",
    );
    let body = |raw: &str| p.client().request(raw).text();
    assert_eq!(body(&get_req("/ready", "")), "exact");
    assert_eq!(who(&p, &get_req("/ready/x", "")), "fallback");
    assert_eq!(who(&p, &get_req("/api/v2/users", "")), "a");
    assert_eq!(who(&p, &get_req("/api/vx/users", "")), "fallback");
    assert_eq!(who(&p, &get_req("/old/api/v2/", "")), "fallback");
    assert_eq!(body(&get_req("/index.php", "")), "php");
    assert_eq!(body(&get_req("/INDEX.Php?q=1", "")), "php");
}

#[test]
fn nginx_host_forms_match_domain_trailing_wildcard_and_regex() {
    let (p, _a, _f) = setup(
        "      - match: { host: [.example.com, \"www.shop.*\", \"~ ^api[0-9]+\\\\.test$\"] }\n        upstream: a\n      - upstream: fallback\n",
    );
    assert_eq!(who(&p, &get_host("/", "example.com")), "a");
    assert_eq!(who(&p, &get_host("/", "www.example.com:8443")), "a");
    assert_eq!(who(&p, &get_host("/", "badexample.com")), "fallback");
    assert_eq!(who(&p, &get_host("/", "www.shop.co.uk")), "a");
    assert_eq!(who(&p, &get_host("/", "www.shopping.com")), "fallback");
    assert_eq!(who(&p, &get_host("/", "API42.test")), "a");
    assert_eq!(who(&p, &get_host("/", "api.test")), "fallback");
}

#[test]
fn methods_condition_selects_by_request_method() {
    let (p, _a, _f) = setup("      - match: { methods: [POST, PUT] }\n        upstream: a\n      - upstream: fallback\n");
    assert_eq!(
        who(
            &p,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        ),
        "a"
    );
    assert_eq!(
        who(&p, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        "a"
    );
    assert_eq!(who(&p, &get_req("/", "")), "fallback");
    assert_eq!(who(&p, "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n"), "fallback");
}

#[test]
fn header_condition_needs_the_exact_value() {
    let (p, _a, _f) = setup("      - match: { headers: { X-Env: staging } }\n        upstream: a\n      - upstream: fallback\n");
    assert_eq!(who(&p, &get_req("/", "X-Env: staging\r\n")), "a");
    assert_eq!(
        who(&p, &get_req("/", "x-env: staging\r\n")),
        "a",
        "field names are case-insensitive"
    );
    assert_eq!(who(&p, &get_req("/", "X-Env: prod\r\n")), "fallback");
    assert_eq!(who(&p, &get_req("/", "")), "fallback");
}

#[test]
fn every_condition_of_a_match_must_hold() {
    let (p, _a, _f) = setup(
        "      - match: { host: [a.test], path: /api, methods: [GET] }\n        upstream: a\n      - upstream: fallback\n",
    );
    assert_eq!(who(&p, &get_host("/api/x", "a.test")), "a");
    assert_eq!(who(&p, &get_host("/web", "a.test")), "fallback");
    assert_eq!(who(&p, &get_host("/api/x", "b.test")), "fallback");
    assert_eq!(
        who(
            &p,
            "POST /api/x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n"
        ),
        "fallback"
    );
}

#[test]
fn first_matching_route_wins() {
    let (p, _a, _f) = setup(
        "      - match: { path: /api }\n        upstream: fallback\n      - match: { path: /api/v1 }\n        upstream: a\n      - upstream: a\n",
    );
    assert_eq!(who(&p, &get_req("/api/v1/x", "")), "fallback");
    assert_eq!(who(&p, &get_req("/other", "")), "a");
}

#[test]
fn request_matching_no_route_gets_404_and_keeps_the_connection() {
    let (p, a, f) = setup("      - match: { path: /api }\n        upstream: a\n");
    let mut c = p.client();
    let r = c.request(get_req("/nothing/here", ""));
    assert_eq!(r.status, 404);
    assert!(!r.body.is_empty() && r.body.len() < 100);
    // A 404 with its body fully read leaves the connection usable.
    let r = c.request(get_req("/api", ""));
    assert_eq!(r.header("x-backend"), Some("a"));
    assert_eq!(a.requests() + f.requests(), 1);
}

#[test]
fn unrouted_request_with_a_body_gets_404_without_desync() {
    let (p, _a, _f) = setup("      - match: { path: /api }\n        upstream: a\n");
    let mut c = p.client();
    let r = c.request(
        "POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 23\r\n\r\nGET /api HTTP/1.1\r\n\r\n",
    );
    assert_eq!(r.status, 404);
    // The body must have been skipped, not parsed as the next request.
    match c.try_read_response(false) {
        Err(ReadError::TimedOut(b)) | Err(ReadError::Closed(b)) => assert!(b.is_empty()),
        Ok(r) => panic!("the 404'd body was read as a request: {}", r.head_text()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn strip_prefix_removes_the_prefix_before_proxying() {
    let (p, a, _f) =
        setup("      - match: { path: /api }\n        strip_prefix: /api\n        upstream: a\n");
    let mut c = p.client();
    c.request(get_req("/api/users/7?full=1", ""));
    c.request(get_req("/api", ""));
    c.request(get_req("/api?q=2", ""));
    let targets: Vec<String> = a.recorded().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, vec!["/users/7?full=1", "/", "/?q=2"]);
}

#[test]
fn rewrite_sets_the_upstream_path_and_query() {
    let (p, a, _f) = setup(
        "      - match: { path: /api }\n        strip_prefix: /api\n        rewrite: \"/v2{path}?{query}\"\n        upstream: a\n",
    );
    let mut c = p.client();
    c.request(get_req("/api/users?id=3", ""));
    c.request(get_req("/api/users", ""));
    let targets: Vec<String> = a.recorded().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, vec!["/v2/users?id=3", "/v2/users"]);
}

#[test]
fn rewrite_with_request_placeholders() {
    let (p, a, _f) = setup("      - rewrite: \"/by-method/{method}{path}\"\n        upstream: a\n");
    p.client().request(get_req("/x/y?dropped=1", ""));
    assert_eq!(a.only_request().target, "/by-method/GET/x/y");
}

#[test]
fn method_override_changes_the_upstream_method() {
    let (p, a, _f) =
        setup("      - match: { methods: [POST] }\n        method: PUT\n        upstream: a\n");
    let r = p
        .client()
        .request("POST /m HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody");
    assert_eq!(r.status, 200);
    let got = a.only_request();
    assert_eq!(got.method, "PUT");
    assert_eq!(got.body, b"body");
}

#[test]
fn method_override_to_head_reads_no_response_body() {
    let (p, a, _f) = setup("      - method: HEAD\n        upstream: a\n");
    let mut c = p.client();
    let r = c.request(get_req("/big?n=10", ""));
    assert_eq!(r.status, 200);
    assert_eq!(a.only_request().method, "HEAD");
    // The client asked GET and got the head of a 10-byte body: whatever the proxy sends
    // must keep the client connection consistent.
    assert!(r.body.is_empty() || r.body.len() == 10);
}

#[test]
fn respond_route_answers_with_rendered_placeholders() {
    let (p, a, f) = setup(
        "      - match: { path: /hello }\n        respond:\n          status: 200\n          body: \"hi {client_ip} {method} {path} {query} {header.X-Name} {host}\\n\"\n          headers: { Content-Type: text/plain, X-Uri: \"{uri}\" }\n      - upstream: a\n",
    );
    let mut c = p.client();
    let r =
        c.request("GET /hello/there?k=v HTTP/1.1\r\nHost: site.test:8080\r\nX-Name: Ada\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "hi 127.0.0.1 GET /hello/there k=v Ada site.test\n"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-uri"), Some("/hello/there?k=v"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    // Still keep-alive, and no backend was involved.
    assert_eq!(c.request(get_req("/hello", "")).status, 200);
    assert_eq!(a.requests() + f.requests(), 0);
}

#[test]
fn respond_route_with_custom_status_and_empty_body() {
    let (p, _a, _f) = setup("      - respond:\n          status: 204\n");
    let mut c = p.client();
    let r = c.request(get_req("/", ""));
    assert_eq!(r.status, 204);
    assert!(!r.has_header("content-length") || r.header("content-length") == Some("0"));
    let r = c.request(get_req("/", ""));
    assert_eq!(r.status, 204);
}

#[test]
fn respond_route_answers_head_without_a_body() {
    let (p, _a, _f) =
        setup("      - respond:\n          status: 200\n          body: \"twelve bytes\"\n");
    let mut c = p.client();
    c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.header("content-length"), Some("12"));
    // The next response must start right after the head.
    let r = c.request(get_req("/", ""));
    assert_eq!(r.text(), "twelve bytes");
}

#[test]
fn respond_route_skips_a_request_body() {
    let (p, _a, _f) = setup("      - respond:\n          status: 403\n          body: \"no\\n\"\n");
    let mut c = p.client();
    let r = c.request("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "no\n");
    let r = c.request(get_req("/", ""));
    assert_eq!(r.status, 403);
}

#[test]
fn head_client_with_a_get_override_gets_only_the_head() {
    let (p, a, _f) = setup("      - method: GET\n        upstream: a\n");
    let mut c = p.client();
    c.send("HEAD /big?n=1000 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(a.only_request().method, "GET");
    // The upstream's body must not leak into the client connection.
    let r = c.request(get_req("/next", ""));
    assert_eq!(r.header("x-path"), Some("/next"));
}

#[test]
fn respond_placeholders_scheme_worker_and_client_port() {
    let (p, _a, _f) = setup("      - respond:\n          status: 200\n          body: \"{scheme} {worker} {client_port}\"\n");
    let stream = std::net::TcpStream::connect(p.addr()).unwrap();
    let port = stream.local_addr().unwrap().port();
    let mut c = Client::from_tcp(stream);
    let r = c.request(get_req("/", ""));
    assert_eq!(r.text(), format!("http 0 {port}"));
}
