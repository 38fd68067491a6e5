//! Responses the proxy shapes: `handle_response` rules (replace_status, respond, upstream =
//! X-Accel-Redirect) and `error_pages` for upstream error answers and ringway's own
//! 502/503/504, against real backends.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::*;

/// A backend whose answers carry the fields the rules look at. By path:
/// `/fail` 500 `upstream broke\n` with `X-Upstream: app`; `/accel` 200 with
/// `X-Accel-Redirect: /files/report.txt?x=1`, a `Set-Cookie` and an internal body;
/// `/teapot` 418 `I'm a teapot`; `/unavailable` 503 with a 200 KB body; anything else 200 `app\n`.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Scripted {
    fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || serve(conn));
            }
        });
        Scripted { addr, connections }
    }

    fn target(&self) -> String {
        self.addr.to_string()
    }
}

fn serve(mut conn: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut conn, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + len {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + len);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let (status, fields, body): (&str, &str, Vec<u8>) = match path.as_str() {
            "/fail" => (
                "500 Internal Server Error",
                "X-Upstream: app\r\n",
                b"upstream broke\n".to_vec(),
            ),
            "/accel" => (
                "200 OK",
                "X-Accel-Redirect: /files/report.txt?x=1\r\nSet-Cookie: s=1\r\n",
                b"internal body, never for the client\n".to_vec(),
            ),
            "/teapot" => ("418 I'm a teapot", "X-Upstream: app\r\n", b"tea\n".to_vec()),
            "/unavailable" => ("503 Service Unavailable", "", vec![b'u'; 200_000]),
            _ => ("200 OK", "", b"app\n".to_vec()),
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\n{fields}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const RULES: &str = r#"
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes:
      - upstream: app
        handle_response:
          - match: { status: [5xx] }
            replace_status: 503
          - match: { headers: { X-Accel-Redirect: "*" } }
            upstream: files
            rewrite: "{rp.header.X-Accel-Redirect}"
            method: GET
            copy_response_headers: [Set-Cookie]
          - match: { status: [418] }
            respond:
              status: 502
              body: "upstream said {rp.status_code} {rp.status_text} for {path}\n"
              headers: { X-Was: "{rp.header.X-Upstream}" }
            copy_response_headers: [X-Upstream]
upstreams:
  app:
    targets: [$APP]
  files:
    targets: [$FILES]
"#;

fn rules_proxy(driver: Driver) -> (Proxy, Scripted, Backend) {
    let app = Scripted::start();
    let files = Backend::start("files");
    let proxy = Proxy::start(
        driver,
        RULES,
        &[("APP", app.target()), ("FILES", files.target())],
    );
    (proxy, app, files)
}

const PAGES: &str = r#"
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes:
      - match: { path: /dead }
        upstream: dead
        error_pages: { 5xx: $DIR/5xx.html }
      - upstream: app
        error_pages:
          502: $DIR/502.txt
          "503": $DIR/503.json
          504: $DIR/slow.html
upstreams:
  app:
    targets: [$APP]
    transport: { response_header_timeout: 300ms }
  dead:
    targets: [$DEAD]
"#;

fn pages_dir() -> TempDir {
    let dir = TempDir::new();
    dir.write("5xx.html", "<h1>we are down</h1>\n");
    dir.write("502.txt", "bad gateway, friendly\n");
    dir.write("503.json", "{\"error\":\"unavailable\"}\n");
    dir.write("slow.html", "<p>too slow</p>\n");
    dir
}

driver_tests! {
    fn upstream_5xx_becomes_503_with_its_body_and_fields_kept(driver) {
        let (proxy, app, _files) = rules_proxy(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/fail", "Connection: keep-alive\r\n"));
        assert_eq!(r.status, 503, "{}", r.head_text());
        assert!(r.head_text().starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{}", r.head_text());
        assert_eq!(r.text(), "upstream broke\n");
        assert_eq!(r.header("X-Upstream"), Some("app"));
        assert_eq!(r.header("Content-Length"), Some("15"));
        // The body was framed right: the connection serves the next request.
        let r = c.request(get_req("/ok", "Connection: keep-alive\r\n"));
        assert_eq!((r.status, r.text().as_str()), (200, "app\n"));
        assert_eq!(app.connections.load(Ordering::SeqCst), 1, "the upstream connection was reused");
    }

    fn x_accel_redirect_sends_the_request_to_another_upstream(driver) {
        let (proxy, _app, files) = rules_proxy(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/accel", "Connection: keep-alive\r\n"));
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.text(), "files\n", "the first response's body is discarded");
        assert_eq!(r.header("Set-Cookie"), Some("s=1"), "copied from the first response");
        assert!(!r.has_header("X-Accel-Redirect"), "{}", r.head_text());
        let got = files.only_request();
        assert_eq!(got.target, "/files/report.txt?x=1");
        assert_eq!(got.method, "GET");
        let r = c.request(get_req("/ok", "Connection: keep-alive\r\n"));
        assert_eq!(r.text(), "app\n");
    }

    fn x_accel_redirect_turns_a_buffered_post_into_a_get_without_its_body(driver) {
        // The rule's `method: GET` is a method override, which drops the body (as nginx's
        // X-Accel-Redirect does); the client connection stays usable.
        let (proxy, _app, files) = rules_proxy(driver);
        let mut c = proxy.client();
        c.send("POST /accel HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\n\r\nhello");
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, "files\n"), "{}", r.head_text());
        let got = files.only_request();
        assert_eq!((got.method.as_str(), got.body.as_slice()), ("GET", &b""[..]));
        let r = c.request(get_req("/ok", "Connection: keep-alive\r\n"));
        assert_eq!(r.text(), "app\n");
    }

    fn x_accel_redirect_of_a_streamed_body_answers_502(driver) {
        let (proxy, _app, files) = rules_proxy(driver);
        let mut c = proxy.client();
        let body = vec![b'b'; 100_000];
        c.send("POST /accel HTTP/1.1\r\nHost: test.local\r\nContent-Length: 100000\r\n\r\n");
        c.send(&body[..1000]);
        // The rest comes later: the body streams through instead of being held.
        std::thread::sleep(std::time::Duration::from_millis(200));
        c.send(&body[1000..]);
        let r = c.read_response();
        assert_eq!(r.status, 502, "{}", r.head_text());
        assert!(r.closes());
        assert_eq!(files.requests(), 0, "a streamed body is never sent a second time");
    }

    fn local_respond_renders_the_upstream_status_and_fields(driver) {
        let (proxy, _app, _files) = rules_proxy(driver);
        let mut c = proxy.client();
        let r = c.request(get_req("/teapot", "Connection: keep-alive\r\n"));
        assert_eq!(r.status, 502, "{}", r.head_text());
        assert_eq!(r.text(), "upstream said 418 I'm a teapot for /teapot\n");
        assert_eq!(r.header("X-Was"), Some("app"));
        assert_eq!(r.header_all("X-Upstream"), vec!["app"], "copied once");
        let r = c.request(get_req("/ok", ""));
        assert_eq!(r.text(), "app\n", "the client connection stays usable");
    }

    fn dead_upstream_gets_the_error_page(driver) {
        let app = Scripted::start();
        let dir = pages_dir();
        let dead = refused_addr().to_string();
        let vars = [("APP", app.target()), ("DEAD", dead), ("DIR", dir.path().display().to_string())];
        let proxy = Proxy::start(driver, PAGES, &vars);
        let r = proxy.get("/dead");
        assert_eq!(r.status, 502, "{}", r.head_text());
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.text(), "<h1>we are down</h1>\n");
        // A route without pages for the status keeps the plain answer.
        let r = proxy.get("/ok");
        assert_eq!((r.status, r.text().as_str()), (200, "app\n"));
    }

    fn ringways_own_504_gets_the_error_page(driver) {
        let slow = Backend::start("slow");
        let dir = pages_dir();
        let vars = [
            ("APP", slow.target()),
            ("DEAD", refused_addr().to_string()),
            ("DIR", dir.path().display().to_string()),
        ];
        let proxy = Proxy::start(driver, PAGES, &vars);
        let r = proxy.get("/sleep?ms=3000");
        assert_eq!(r.status, 504, "{}", r.head_text());
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.text(), "<p>too slow</p>\n");
        assert!(r.closes());
    }

    fn upstream_error_answer_is_replaced_and_its_body_never_forwarded(driver) {
        let app = Scripted::start();
        let dir = pages_dir();
        let vars = [
            ("APP", app.target()),
            ("DEAD", refused_addr().to_string()),
            ("DIR", dir.path().display().to_string()),
        ];
        let proxy = Proxy::start(driver, PAGES, &vars);
        let mut c = proxy.client();
        let r = c.request(get_req("/unavailable", "Connection: keep-alive\r\n"));
        assert_eq!(r.status, 503, "{}", r.head_text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.text(), "{\"error\":\"unavailable\"}\n");
        assert!(!r.closes(), "{}", r.head_text());
        // Nothing of the 200 KB upstream body follows: the next answer is the next response.
        let r = c.request(get_req("/fail", "Connection: keep-alive\r\n"));
        assert_eq!(r.status, 500, "no page for 500 on this route: {}", r.head_text());
        assert_eq!(r.text(), "upstream broke\n");
    }

    fn error_pages_are_read_again_on_reload(driver) {
        let app = Scripted::start();
        let dir = pages_dir();
        let vars = [
            ("APP", app.target()),
            ("DEAD", refused_addr().to_string()),
            ("DIR", dir.path().display().to_string()),
        ];
        let proxy = Proxy::start(driver, PAGES, &vars);
        dir.write("5xx.html", "<h1>new page</h1>\n");
        assert_eq!(proxy.get("/dead").text(), "<h1>we are down</h1>\n", "read at load");
        proxy.server().reload().expect("reload");
        assert_eq!(proxy.get("/dead").text(), "<h1>new page</h1>\n");
        std::fs::remove_file(dir.join("5xx.html")).unwrap();
        let e = proxy.server().reload().expect_err("a missing page is refused");
        assert!(e.contains("error_pages.5xx") && e.contains("cannot read"), "{e}");
        assert_eq!(proxy.get("/dead").text(), "<h1>new page</h1>\n", "the running config stays");
    }
}
