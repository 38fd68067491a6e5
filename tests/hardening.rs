//! Hardening against what request-smuggling suites and odd peers probe: what reaches the
//! upstream is the one reading ringway itself used (one canonical Content-Length, the
//! absolute-form authority as Host), tolerance where the RFC asks for it (leading zeros in a
//! chunk size, HTTP/1.2), and answers that survive unread input (an upstream answering an
//! upload early, a refused head followed by more bytes).

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::nginx::{free_port, Nginx};
use support::*;

/// A backend that reads one request head per connection, writes `answer` without reading
/// anything more, then holds the connection open (still not reading) for `hold` before it
/// closes. Records the bytes it read.
struct RawBackend {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawBackend {
    fn start(answer: &'static [u8], hold: Duration) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let rec = heads.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                let rec = rec.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    rec.lock().unwrap().push(head);
                    let _ = conn.write_all(answer);
                    std::thread::sleep(hold);
                });
            }
        });
        RawBackend { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect()
    }
}

fn post(fields: &str, body: &str) -> String {
    format!("POST /echo-body HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n{body}")
}

driver_tests! {
    fn a_content_length_list_reaches_the_backend_as_one_canonical_field(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let lists = [
            "Content-Length: 5,5",
            "Content-Length: 5, 5",
            "Content-Length: 5\r\nContent-Length: 5",
            "Content-Length: 005",
        ];
        for (i, cl) in lists.iter().enumerate() {
            let r = proxy.client().request(post(cl, "hello"));
            assert_eq!((r.status, r.text().as_str()), (200, "hello"), "for {cl:?}");
            assert!(b1.wait_for_requests(i + 1, Duration::from_secs(5)));
            let got = b1.last_request();
            assert_eq!(got.header_all("content-length"), ["5"], "for {cl:?}:\n{}", got.head_text());
            assert!(!got.head_text().contains("5,"), "{}", got.head_text());
        }
    }

    fn an_upgrade_to_h2c_is_not_passed_on_and_the_request_is_served_as_http_1_1(driver) {
        // h2c smuggling: a tunnel to the upstream's HTTP/2 would bypass every per-request rule.
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(
            "GET / HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.head_text());
        let got = b1.only_request();
        assert!(!got.has_header("upgrade"), "{}", got.head_text());
        assert!(!got.has_header("http2-settings"), "{}", got.head_text());
    }

    fn a_chunked_body_reaches_the_backend_under_one_canonical_transfer_encoding(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let r = proxy.client().request(post("Transfer-Encoding:  CHUNKED ", "5\r\nhello\r\n0\r\n\r\n"));
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        let got = b1.only_request();
        let te: Vec<_> = got.head_text().lines().filter(|l| l.to_ascii_lowercase().starts_with("transfer-encoding")).map(str::to_string).collect();
        assert_eq!(te, ["Transfer-Encoding: chunked"], "{}", got.head_text());
        assert!(!got.has_header("content-length"));
    }

    fn a_content_length_list_from_the_upstream_reaches_the_client_as_one_field(driver) {
        let b = RawBackend::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok", Duration::ZERO);
        let proxy = Proxy::start(driver, &one_upstream_yaml("$B", ""), &[("B", b.addr.to_string())]);
        let r = proxy.client().request(get_req("/", ""));
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_eq!(r.header_all("content-length"), ["2"], "{}", r.head_text());
        assert_eq!(b.heads().len(), 1);
    }

    fn a_chunk_size_with_many_leading_zeros_is_accepted(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let body = "000000000000000000000005\r\nhello\r\n0000000000000000000\r\n\r\n";
        let r = proxy.client().request(post("Transfer-Encoding: chunked", body));
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(b1.only_request().body, b"hello");
    }

    fn an_http_1_2_request_is_served_as_http_1_1(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let r = c.request("GET /a HTTP/1.2\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert!(!r.closes(), "an HTTP/1.1 exchange stays open");
        assert_eq!(b1.only_request().minor, 1);
    }

    fn an_upstream_that_answers_401_before_reading_a_20_mb_upload_reaches_the_client(driver) {
        let b = RawBackend::start(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 13\r\nWWW-Authenticate: Basic\r\n\r\nunauthorized\n",
            Duration::from_secs(8),
        );
        let proxy = Proxy::start(driver, &one_upstream_yaml("$B", ""), &[("B", b.addr.to_string())]);
        let size = 20 * 1024 * 1024;
        let (mut c, writer) = start_upload(proxy.addr(), size);
        let started = Instant::now();
        expect_early_401(&mut c, writer, started, size);
        assert_eq!(b.heads().len(), 1, "one request reached the backend");
    }

    fn a_431_for_a_100_kb_head_reaches_a_client_that_sends_it_all_before_reading(driver) {
        let (proxy, b1) = proxy_to_one_backend(driver);
        let mut c = proxy.client();
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..1100 {
            head.extend_from_slice(format!("X-Filler-{i:04}: {}\r\n", "f".repeat(80)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(head.len() > 100 * 1024);
        // Sent as a client on a real link does, in pieces, writing it all before reading: a
        // close with the rest unread would reset the connection under the client's writes.
        for piece in head.chunks(4096) {
            c.try_send(piece).unwrap_or_else(|e| panic!("the client could not send its head: {e}"));
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = c.try_read_response(false).unwrap_or_else(|e| panic!("the 431 was lost: {e}"));
        assert_eq!(r.status, 431);
        assert!(r.closes());
        assert!(c.is_closed_within(Duration::from_secs(15)));
        assert_eq!(b1.requests(), 0);
    }
}

/// Two host routes: `public.example` to backend `pub`, `internal.example` to `int`.
fn two_host_routes(driver: Driver, with_internal: bool) -> (Proxy, Backend, Backend) {
    let public = Backend::start("pub");
    let internal = Backend::start("int");
    let internal_route = if with_internal {
        "      - match: { host: [internal.example] }\n        upstream: int\n"
    } else {
        ""
    };
    let yaml = format!(
        "listeners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - match: {{ host: [public.example] }}\n        upstream: pub\n{internal_route}upstreams:\n  pub:\n    targets: [$P]\n  int:\n    targets: [$I]\n"
    );
    let proxy = Proxy::start(
        driver,
        &yaml,
        &[("P", public.target()), ("I", internal.target())],
    );
    (proxy, public, internal)
}

driver_tests! {
    fn an_absolute_form_target_is_routed_and_forwarded_by_its_own_authority(driver) {
        let (proxy, public, internal) = two_host_routes(driver, true);
        let r = proxy.client().request("GET http://internal.example/x?y=1 HTTP/1.1\r\nHost: public.example\r\n\r\n");
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.header("x-backend"), Some("int"));
        let got = internal.only_request();
        assert_eq!(got.target, "/x?y=1", "origin-form goes upstream");
        assert_eq!(got.header_all("host"), ["internal.example"]);
        assert_eq!(public.requests(), 0, "the Host field's route must not see it");
    }

    fn an_absolute_form_target_cannot_reach_the_upstream_its_host_field_names(driver) {
        let (proxy, public, _internal) = two_host_routes(driver, false);
        let r = proxy.client().request("GET http://internal.example/ HTTP/1.1\r\nHost: public.example\r\n\r\n");
        assert_eq!(r.status, 404, "{}", r.head_text());
        assert_eq!(public.requests(), 0);
        // The same authority in both places is an ordinary request.
        let r = proxy.client().request("GET http://public.example HTTP/1.1\r\nHost: public.example\r\n\r\n");
        assert_eq!(r.header("x-backend"), Some("pub"));
        let got = public.only_request();
        assert_eq!((got.target.as_str(), got.header_all("host")), ("/", vec!["public.example"]));
    }

    fn a_host_field_of_only_whitespace_or_several_host_fields_are_refused(driver) {
        let (proxy, public, _internal) = two_host_routes(driver, true);
        for raw in [
            "GET / HTTP/1.1\r\nHost: \t \r\n\r\n",
            "GET / HTTP/1.1\r\nHost: public.example\r\nHost: public.example\r\n\r\n",
            "GET http://public.example/ HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n\r\n",
        ] {
            let r = proxy.client().request(raw);
            assert_eq!(r.status, 400, "{raw:?}");
            assert!(r.closes());
        }
        assert_eq!(public.requests(), 0);
    }
}

/// An nginx answering `nginx` to every request, with this `keepalive_timeout`.
fn nginx_with_keepalive(keepalive_timeout: &str) -> Nginx {
    let port = free_port();
    Nginx::start(port, |_| {
        format!(
            "  access_log off;\n  keepalive_timeout {keepalive_timeout};\n  server {{\n    \
             listen 127.0.0.1:{port};\n    location / {{ return 200 \"nginx\\n\"; }}\n  }}"
        )
    })
}

/// TCP states (as /proc/net/tcp spells them) of this process's sockets connected to `peer`.
fn socket_states_to(peer: SocketAddr) -> Vec<&'static str> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.to_string_lossy().into_owned();
            if let Some(n) = link
                .strip_prefix("socket:[")
                .and_then(|l| l.strip_suffix(']'))
            {
                inodes.insert(n.to_string());
            }
        }
    }
    let want = format!("0100007F:{:04X}", peer.port());
    let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[2] == want && inodes.contains(f[9])).then_some(match f[3] {
                "01" => "ESTABLISHED",
                "08" => "CLOSE_WAIT",
                "06" => "TIME_WAIT",
                _ => "OTHER",
            })
        })
        .collect()
}

driver_tests! {
    fn pooled_connections_an_nginx_closed_while_idle_leave_no_close_wait_socket(driver) {
        let nginx = nginx_with_keepalive("1s");
        let proxy = Proxy::start(driver, &one_upstream_yaml("$N", ""), &[("N", nginx.addr.to_string())]);
        let addr = proxy.addr();
        // 40 requests from 8 clients at once, so that several connections end up pooled.
        let clients: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    for _ in 0..5 {
                        let r = c.request("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
                        assert_eq!((r.status, r.text().as_str()), (200, "nginx\n"));
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let pooled = socket_states_to(nginx.addr);
        assert!(pooled.contains(&"ESTABLISHED"), "no pooled connection to nginx to test: {pooled:?}");
        std::thread::sleep(Duration::from_secs(4));
        let left = socket_states_to(nginx.addr);
        assert!(
            !left.contains(&"CLOSE_WAIT"),
            "ringway kept connections nginx closed: {left:?} (pooled after the requests: {pooled:?})"
        );
        assert!(left.is_empty(), "every idle connection nginx closed is closed here too: {left:?}");
        // The pool still works after the sweep: a new connection serves the next request.
        assert_eq!(proxy.client().request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    }

    fn idle_timeout_closes_a_pooled_connection_without_traffic(driver) {
        let nginx = nginx_with_keepalive("60s");
        let proxy = Proxy::start(
            driver,
            &one_upstream_yaml("$N", "    transport:\n      idle_timeout: 1s\n"),
            &[("N", nginx.addr.to_string())],
        );
        assert_eq!(proxy.client().request("GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
        assert_eq!(socket_states_to(nginx.addr), ["ESTABLISHED"], "one pooled connection");
        // Closed sockets leave this process's descriptors (TIME_WAIT has none).
        let closed = wait_for(Duration::from_secs(5), || socket_states_to(nginx.addr).is_empty());
        assert!(closed, "the idle connection outlived idle_timeout: {:?}", socket_states_to(nginx.addr));
    }
}
