//! The FastCGI transport against a real php-fpm (Debian's php8.2-fpm, started by each test
//! on a unix socket or a loopback port with its own generated config): CGI parameters, status
//! and fields from PHP, a 1 MiB POST, a 5 MiB streamed response, refused paths, pooled
//! connections, failover, and handle_response on FastCGI answers.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

const PHP_FPM: &str = "/usr/sbin/php-fpm8.2";

const APP_PHP: &str = r#"<?php
$mode = $_GET['mode'] ?? 'echo';
if ($mode === 'big') {
    header('Content-Type: application/octet-stream');
    for ($i = 0; $i < 80; $i++) { echo str_repeat(chr(97 + $i % 26), 65536); flush(); }
    exit;
}
if ($mode === 'fail') { http_response_code(500); header('X-From: php'); echo "php failed\n"; exit; }
if ($mode === 'accel') { header('X-Accel-Redirect: /files/from-php.txt'); echo "internal\n"; exit; }
if ($mode === 'sleep') { sleep(3); echo "slept\n"; exit; }
if ($mode === 'empty') { http_response_code(204); echo "not for the client"; exit; }
if ($mode === 'stderr') { error_log("a line for stderr"); echo "logged\n"; exit; }
$body = file_get_contents('php://input');
http_response_code(201);
header('X-From: php');
header('Content-Type: text/plain');
foreach (['SCRIPT_FILENAME', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'REQUEST_METHOD',
          'REQUEST_URI', 'DOCUMENT_ROOT', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'REMOTE_ADDR',
          'SERVER_NAME', 'SERVER_PORT', 'SERVER_ADDR', 'SERVER_PROTOCOL', 'GATEWAY_INTERFACE', 'HTTP_X_TEST',
          'HTTP_HOST', 'HTTP_COOKIE', 'APP_ENV', 'CLIENT'] as $k) {
    echo $k, '=', $_SERVER[$k] ?? '(unset)', "\n";
}
echo 'BODY_LEN=', strlen($body), "\n";
echo 'BODY_SHA256=', hash('sha256', $body), "\n";
"#;

/// A php-fpm master with its own config, prefix and document root; stopped on drop.
struct PhpFpm {
    child: Child,
    dir: TempDir,
    /// `unix//path` or `127.0.0.1:port`: a ringway target.
    target: String,
}

impl PhpFpm {
    fn start(tcp: bool) -> PhpFpm {
        assert!(
            Path::new(PHP_FPM).exists(),
            "php-fpm is missing: {PHP_FPM} (Debian package php8.2-fpm; tests/support/install-peers.sh installs it)"
        );
        let dir = TempDir::new();
        std::fs::create_dir_all(dir.join("www/blog")).unwrap();
        std::fs::write(dir.join("www/app.php"), APP_PHP).unwrap();
        std::fs::write(dir.join("www/index.php"), "<?php echo \"index\\n\";").unwrap();
        std::fs::write(
            dir.join("www/blog/index.php"),
            "<?php echo \"blog index\\n\";",
        )
        .unwrap();
        let (listen, target) = if tcp {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            (format!("127.0.0.1:{port}"), format!("127.0.0.1:{port}"))
        } else {
            let sock = dir.join("fpm.sock").display().to_string();
            (sock.clone(), format!("unix/{sock}"))
        };
        let root = is_root();
        let user = if root {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        let conf = format!(
            "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n\
             [www]\n{user}listen = {listen}\npm = static\npm.max_children = 4\n\
             catch_workers_output = yes\nphp_admin_value[output_buffering] = 0\n\
             php_admin_value[post_max_size] = 16M\n",
            d = dir.path().display()
        );
        let conf_path = dir.write("fpm.conf", &conf);
        let mut cmd = Command::new(PHP_FPM);
        cmd.args(["--nodaemonize", "-n", "-y"])
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            cmd.arg("-R");
        }
        let child = cmd.spawn().expect("start php-fpm");
        let ready = wait_for(Duration::from_secs(10), || {
            if tcp {
                TcpStream::connect(&listen).is_ok()
            } else {
                std::os::unix::net::UnixStream::connect(&listen).is_ok()
            }
        });
        let fpm = PhpFpm { child, dir, target };
        assert!(ready, "php-fpm did not start listening: {}", fpm.log());
        fpm
    }

    fn root(&self) -> PathBuf {
        self.dir.join("www")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fpm.log")).unwrap_or_default()
    }
}

impl Drop for PhpFpm {
    /// SIGTERM: the master stops its workers too (SIGKILL would orphan them).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = wait_for(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

const FCGI: &str = r#"
admin: { listen: 127.0.0.1:0 }
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes:
      - match: { path: /shaped }
        strip_prefix: /shaped
        upstream: php
        handle_response:
          - match: { status: [5xx] }
            replace_status: 503
          - match: { headers: { X-Accel-Redirect: "*" } }
            upstream: files
            rewrite: "{rp.header.X-Accel-Redirect}"
      - upstream: php
upstreams:
  php:
    targets: [$PHP]
    transport:
      protocol: fastcgi
      fastcgi:
        root: $ROOT
        split_path: [.php]
        env: { APP_ENV: testing, CLIENT: "ip={client_ip}" }
    headers:
      response:
        - remove: [X-Powered-By]
        - set: { X-Via: "ringway" }
  files:
    targets: [$FILES]
"#;

fn start(driver: Driver, tcp: bool) -> (Proxy, PhpFpm, Backend) {
    let fpm = PhpFpm::start(tcp);
    let files = Backend::start("files");
    let vars = [
        ("PHP", fpm.target.clone()),
        ("ROOT", fpm.root().display().to_string()),
        ("FILES", files.target()),
    ];
    (Proxy::start(driver, FCGI, &vars), fpm, files)
}

/// `KEY=value` lines of the echo script.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// The sum of the series starting with `prefix` and containing `label`.
fn metric_sum(proxy: &Proxy, prefix: &str, label: &str) -> f64 {
    let admin: SocketAddr = proxy.server().admin_addr().expect("admin");
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

driver_tests! {
    fn php_sees_the_cgi_parameters_and_sets_status_and_fields(driver) {
        let (proxy, fpm, _files) = start(driver, false);
        let mut c = proxy.client();
        let r = c.request(
            "GET /app.php/extra/info?a=1&b=two HTTP/1.1\r\nHost: php.test:8080\r\n\
             X-Test: hello\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        );
        let text = r.text();
        assert_eq!(r.status, 201, "{}{text}", r.head_text());
        assert_eq!(r.header("X-From"), Some("php"));
        assert_eq!(r.header("Content-Type"), Some("text/plain;charset=UTF-8"));
        // The upstream's header rules apply to FastCGI answers too.
        assert_eq!(r.header("X-Via"), Some("ringway"));
        assert!(!r.has_header("X-Powered-By"), "{}", r.head_text());
        let root = fpm.root().display().to_string();
        assert_eq!(field(&text, "SCRIPT_FILENAME"), format!("{root}/app.php"));
        assert_eq!(field(&text, "SCRIPT_NAME"), "/app.php");
        assert_eq!(field(&text, "PATH_INFO"), "/extra/info");
        assert_eq!(field(&text, "QUERY_STRING"), "a=1&b=two");
        assert_eq!(field(&text, "REQUEST_METHOD"), "GET");
        assert_eq!(field(&text, "REQUEST_URI"), "/app.php/extra/info?a=1&b=two");
        assert_eq!(field(&text, "DOCUMENT_ROOT"), root);
        assert_eq!(field(&text, "REMOTE_ADDR"), "127.0.0.1");
        assert_eq!(field(&text, "SERVER_NAME"), "php.test");
        // As nginx: where the connection arrived, not what the Host field says.
        assert_eq!(field(&text, "SERVER_PORT"), proxy.addr().port().to_string());
        assert_eq!(field(&text, "SERVER_ADDR"), "127.0.0.1");
        assert_eq!(field(&text, "SERVER_PROTOCOL"), "HTTP/1.1");
        assert_eq!(field(&text, "GATEWAY_INTERFACE"), "CGI/1.1");
        assert_eq!(field(&text, "HTTP_X_TEST"), "hello");
        assert_eq!(field(&text, "HTTP_HOST"), "php.test:8080");
        assert_eq!(field(&text, "HTTP_COOKIE"), "a=1; b=2");
        assert_eq!(field(&text, "APP_ENV"), "testing");
        assert_eq!(field(&text, "CLIENT"), "ip=127.0.0.1");
        assert_eq!(field(&text, "BODY_LEN"), "0");
        // No Content-Length from PHP: chunked to the client, and the connection stays usable.
        assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
        let r = c.request(get_req("/blog/", ""));
        assert_eq!((r.status, r.text().as_str()), (200, "blog index\n"));
    }

    fn one_mib_post_arrives_whole(driver) {
        let (proxy, _fpm, _files) = start(driver, false);
        let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let sha = format!("{:x}", Sha256::digest(&body));
        let mut c = proxy.client();
        c.send(format!(
            "POST /app.php?upload=1 HTTP/1.1\r\nHost: php.test\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        ));
        for part in body.chunks(100_000) {
            c.send(part);
        }
        let r = c.read_response();
        let text = r.text();
        assert_eq!(r.status, 201, "{text}");
        assert_eq!(field(&text, "REQUEST_METHOD"), "POST");
        assert_eq!(field(&text, "CONTENT_LENGTH"), "1048576");
        assert_eq!(field(&text, "CONTENT_TYPE"), "application/octet-stream");
        assert_eq!(field(&text, "BODY_LEN"), "1048576");
        assert_eq!(field(&text, "BODY_SHA256"), sha);
    }

    fn expect_continue_gets_100_before_the_body_is_sent(driver) {
        let (proxy, _fpm, _files) = start(driver, false);
        let mut c = proxy.client();
        c.send(
            "POST /app.php HTTP/1.1\r\nHost: php.test\r\nExpect: 100-continue\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 300000\r\n\r\n",
        );
        let r = c.read_response();
        assert_eq!(r.status, 100, "{}", r.head_text());
        c.send(vec![b'z'; 300_000]);
        let r = c.read_response();
        let text = r.text();
        assert_eq!(r.status, 201, "{text}");
        assert_eq!(field(&text, "BODY_LEN"), "300000");
    }

    fn five_mib_response_streams_through(driver) {
        let (proxy, _fpm, _files) = start(driver, true);
        let mut c = proxy.client();
        let r = c.request(get_req("/app.php?mode=big", ""));
        assert_eq!(r.status, 200, "{}", r.head_text());
        assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
        assert_eq!(r.body.len(), 80 * 65536);
        for (i, block) in r.body.chunks(65536).enumerate() {
            let want = b'a' + (i % 26) as u8;
            assert!(block.iter().all(|&b| b == want), "block {i}");
        }
        // An HTTP/1.0 client gets the body delimited by the close instead.
        let mut c = proxy.client();
        c.send("GET /app.php?mode=big HTTP/1.0\r\nHost: php.test\r\n\r\n");
        let raw = c.read_until_close();
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(!String::from_utf8_lossy(&raw[..at]).contains("chunked"));
        assert_eq!(raw.len() - at, 80 * 65536);
    }

    fn paths_escaping_the_root_are_refused(driver) {
        let (proxy, _fpm, _files) = start(driver, false);
        for path in ["/../app.php", "/blog/../../etc/passwd.php", "/blog/%2e%2e/app.php", "/blog%2fapp.php", "/app%00.php"] {
            let r = proxy.client().request(format!("GET {path} HTTP/1.1\r\nHost: php.test\r\nConnection: close\r\n\r\n"));
            assert_eq!(r.status, 400, "{path}: {}", r.head_text());
        }
        // Still serving.
        assert_eq!(proxy.get("/").text(), "index\n");
    }

    fn head_and_bodiless_answers_carry_no_body(driver) {
        let (proxy, _fpm, _files) = start(driver, false);
        let mut c = proxy.client();
        c.send("HEAD /app.php HTTP/1.1\r\nHost: php.test\r\n\r\n");
        let r = c.read_head_response();
        assert_eq!(r.status, 201, "{}", r.head_text());
        assert!(r.body.is_empty());
        let r = c.request(get_req("/app.php?mode=empty", "Connection: keep-alive\r\n"));
        assert_eq!((r.status, r.body.len()), (204, 0), "{}", r.head_text());
        // Nothing stray sits between the answers: the next one parses.
        let r = c.request(get_req("/", ""));
        assert_eq!((r.status, r.text().as_str()), (200, "index\n"));
    }

    fn slow_php_gets_504_after_response_header_timeout(driver) {
        let fpm = PhpFpm::start(false);
        let yaml = r#"
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes: [{ upstream: php }]
upstreams:
  php:
    targets: [$PHP]
    transport:
      protocol: fastcgi
      response_header_timeout: 300ms
      fastcgi: { root: $ROOT }
"#;
        let vars = [("PHP", fpm.target.clone()), ("ROOT", fpm.root().display().to_string())];
        let proxy = Proxy::start(driver, yaml, &vars);
        let r = proxy.get("/app.php?mode=sleep");
        assert_eq!(r.status, 504, "{}", r.head_text());
        assert_eq!(proxy.get("/").text(), "index\n", "a fresh connection serves the next one");
    }

    fn stderr_records_between_stdout_leave_the_answer_whole(driver) {
        let (proxy, _fpm, _files) = start(driver, false);
        let r = proxy.get("/app.php?mode=stderr");
        assert_eq!((r.status, r.text().as_str()), (200, "logged\n"), "{}", r.head_text());
    }

    fn without_keepalive_each_request_gets_its_own_connection(driver) {
        let fpm = PhpFpm::start(true);
        let yaml = r#"
admin: { listen: 127.0.0.1:0 }
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes: [{ upstream: php }]
upstreams:
  php:
    targets: [$PHP]
    transport:
      protocol: fastcgi
      keepalive: false
      fastcgi: { root: $ROOT }
"#;
        let vars = [("PHP", fpm.target.clone()), ("ROOT", fpm.root().display().to_string())];
        let proxy = Proxy::start(driver, yaml, &vars);
        let mut c = proxy.client();
        for _ in 0..3 {
            let r = c.request(get_req("/", "Connection: keep-alive\r\n"));
            assert_eq!((r.status, r.text().as_str()), (200, "index\n"));
        }
        let all = "ringway_upstream_requests_total{upstream=\"php\"";
        assert_eq!(metric_sum(&proxy, all, "connection_reused=\"false\""), 3.0);
        assert_eq!(metric_sum(&proxy, all, "connection_reused=\"true\""), 0.0);
    }

    fn a_connect_probe_takes_a_dead_fastcgi_target_out(driver) {
        let fpm = PhpFpm::start(true);
        let spare = PhpFpm::start(true);
        let yaml = r#"
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes: [{ upstream: php }]
upstreams:
  php:
    targets: [$PHP, $SPARE]
    lb: { policy: first }
    health:
      active: { interval: 50ms, fails: 1 }
    transport:
      protocol: fastcgi
      keepalive: false
      fastcgi: { root: $ROOT }
"#;
        let vars = [
            ("PHP", fpm.target.clone()),
            ("SPARE", spare.target.clone()),
            ("ROOT", fpm.root().display().to_string()),
        ];
        let proxy = Proxy::start(driver, yaml, &vars);
        assert_eq!(proxy.get("/").text(), "index\n");
        drop(fpm);
        // Once the probe has seen the first target refuse, `first` moves to the spare (whose
        // root is the dead one's, now gone: php-fpm answers 404, which proves who answered).
        let moved = wait_for(Duration::from_secs(5), || proxy.get("/").status == 404);
        assert!(moved, "the dead target was not taken out by the connect probe");
    }

    fn chunked_request_bodies_get_411(driver) {
        let (proxy, _fpm, _files) = start(driver, false);
        let mut c = proxy.client();
        c.send("POST /app.php HTTP/1.1\r\nHost: php.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 411, "{}", r.head_text());
    }

    fn fastcgi_connections_are_pooled(driver) {
        let (proxy, _fpm, _files) = start(driver, true);
        let mut c = proxy.client();
        for i in 0..5 {
            let r = c.request(get_req(&format!("/app.php?n={i}"), ""));
            assert_eq!(r.status, 201, "{}", r.text());
        }
        let all = "ringway_upstream_requests_total{upstream=\"php\"";
        assert_eq!(metric_sum(&proxy, all, ""), 5.0);
        let reused = metric_sum(&proxy, all, "connection_reused=\"true\"");
        assert_eq!(reused, 4.0, "one dial, then the pooled connection");
    }

    fn a_dead_fastcgi_target_is_failed_over(driver) {
        let fpm = PhpFpm::start(false);
        let yaml = r#"
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes: [{ upstream: php }]
upstreams:
  php:
    targets: [$DEAD, $PHP]
    lb: { policy: round_robin, retries: 1 }
    transport:
      protocol: fastcgi
      fastcgi: { root: $ROOT }
"#;
        let vars = [
            ("DEAD", refused_addr().to_string()),
            ("PHP", fpm.target.clone()),
            ("ROOT", fpm.root().display().to_string()),
        ];
        let proxy = Proxy::start(driver, yaml, &vars);
        for _ in 0..4 {
            let r = proxy.get("/");
            assert_eq!((r.status, r.text().as_str()), (200, "index\n"));
        }
        drop(fpm);
        // Passive health is on by default with two targets: the dead one is already marked
        // down, so once php-fpm fails too no target is left to try (503, not 502).
        let r = proxy.get("/");
        assert!(matches!(r.status, 502 | 503), "both targets down: {}", r.head_text());
        let r = proxy.get("/");
        assert_eq!(r.status, 503, "both targets marked down: {}", r.head_text());
    }

    fn handle_response_shapes_fastcgi_answers(driver) {
        let (proxy, _fpm, files) = start(driver, false);
        let r = proxy.get("/shaped/app.php?mode=fail");
        assert_eq!(r.status, 503, "{}", r.head_text());
        assert_eq!(r.text(), "php failed\n", "the body is kept");
        assert_eq!(r.header("X-From"), Some("php"));
        let r = proxy.get("/shaped/app.php?mode=accel");
        assert_eq!((r.status, r.text().as_str()), (200, "files\n"), "{}", r.head_text());
        assert_eq!(files.only_request().target, "/files/from-php.txt");
    }
}
