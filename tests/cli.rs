//! The `ringway` binary: --help, `validate` (exit codes and `file:line:col: key: message`
//! errors), the shipped config.yaml, and SIGTERM/SIGINT handling of a running proxy.

#[macro_use]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::process::Ringway;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringway");

/// Runs the binary to completion (at most 20 s).
fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringway");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("ringway did not exit within 20 s")
        .expect("ringway output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn validate(path: &Path) -> Output {
    run(&["validate", "--config", path.to_str().unwrap()])
}

/// The error line for `path`, split as `(line, column, key, message)`; panics unless stderr's
/// first line has the `file:line:col: key: message` shape.
fn located_error(o: &Output, path: &Path) -> (usize, usize, String, String) {
    let err = stderr(o);
    let first = err.lines().next().unwrap_or("");
    let prefix = format!("{}:", path.display());
    let rest = first
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("error does not start with the file name {prefix:?}: {err:?}"));
    let mut parts = rest.splitn(4, ": ");
    let pos = parts.next().unwrap();
    let (line, col) = pos
        .split_once(':')
        .unwrap_or_else(|| panic!("no line:column in {first:?}"));
    let (Ok(line), Ok(col)) = (line.parse::<usize>(), col.parse::<usize>()) else {
        panic!("line/column are not numbers in {first:?}");
    };
    let key = parts
        .next()
        .unwrap_or_else(|| panic!("no key in {first:?}"))
        .to_string();
    let message = parts.collect::<Vec<_>>().join(": ");
    assert!(!message.is_empty(), "no message in {first:?}");
    (line, col, key, message)
}

const GOOD: &str = "\
workers: 1
pin_workers: false
listeners:
  - name: web
    listen: 127.0.0.1:0
    routes:
      - match: { path: /health }
        respond: { status: 200, body: \"ok\\n\" }
      - upstream: app
upstreams:
  app:
    targets: [127.0.0.1:9]
";

#[test]
fn help_exits_zero_and_documents_validate() {
    let o = run(&["--help"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(
        out.contains("validate"),
        "--help does not mention validate:\n{out}"
    );
    assert!(
        out.contains("--config"),
        "--help does not mention --config:\n{out}"
    );
}

#[test]
fn validate_accepts_a_good_file() {
    let dir = TempDir::new();
    let f = dir.write("good.yaml", GOOD);
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("ok"), "{}", stdout(&o));
}

#[test]
fn validate_reports_an_unknown_top_level_key_with_its_position() {
    let dir = TempDir::new();
    let f = dir.write("bad.yaml", &format!("{GOOD}bogus_key: 1\n"));
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let (line, col, key, message) = located_error(&o, &f);
    assert_eq!(
        line,
        GOOD.lines().count() + 1,
        "wrong line in {}",
        stderr(&o)
    );
    assert_eq!(col, 1);
    assert!(key.ends_with("bogus_key"), "key {key:?}");
    assert!(
        message.to_lowercase().contains("unknown"),
        "message {message:?}"
    );
}

#[test]
fn validate_reports_an_unknown_nested_key_with_its_position() {
    let dir = TempDir::new();
    let text = GOOD.replace(
        "    targets: [127.0.0.1:9]\n",
        "    targets: [127.0.0.1:9]\n    lb: { polcy: first }\n",
    );
    let f = dir.write("bad.yaml", &text);
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let (line, _col, key, _message) = located_error(&o, &f);
    assert_eq!(line, 13, "{}", stderr(&o));
    assert!(
        key.contains("upstreams") && key.ends_with("polcy"),
        "key {key:?}"
    );
}

#[test]
fn validate_reports_an_unknown_upstream_with_its_position() {
    let dir = TempDir::new();
    let f = dir.write(
        "bad.yaml",
        &GOOD.replace("      - upstream: app", "      - upstream: nope"),
    );
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let (line, col, key, message) = located_error(&o, &f);
    assert_eq!(line, 9, "{}", stderr(&o));
    assert!(col > 1);
    assert_eq!(key, "listeners[0].routes[1].upstream");
    assert!(message.contains("nope"), "message {message:?}");
}

#[test]
fn validate_rejects_a_bad_value_with_its_position() {
    let dir = TempDir::new();
    let f = dir.write("bad.yaml", &GOOD.replace("workers: 1", "workers: lots"));
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let (line, _col, key, _message) = located_error(&o, &f);
    assert_eq!(line, 1);
    assert_eq!(key, "workers");
}

#[test]
fn validate_rejects_keys_that_are_not_supported_yet() {
    let dir = TempDir::new();
    let text = format!(
        "{GOOD}    transport:\n      protocol: fastcgi\n      fastcgi: {{ root: /var/www }}\n    \
         headers:\n      request:\n        - set: {{ X-A: b }}\n"
    );
    let f = dir.write("pp.yaml", &text);
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let (line, _col, key, message) = located_error(&o, &f);
    assert_eq!(line, 17);
    assert!(key.ends_with("headers.request"), "key {key:?}");
    assert!(message.contains("not supported yet"), "message {message:?}");
}

#[test]
fn validate_names_an_unreadable_certificate_file_at_its_line() {
    let dir = TempDir::new();
    let text = GOOD.replace(
        "    listen: 127.0.0.1:0\n",
        "    listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: /nonexistent/a.pem\n          key: /nonexistent/a.key\n",
    );
    let f = dir.write("tls.yaml", &text);
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let (line, _col, key, message) = located_error(&o, &f);
    assert_eq!(line, 8);
    assert_eq!(key, "listeners[0].tls.certificates[0].cert");
    assert!(
        message.contains("cannot read /nonexistent/a.pem"),
        "message {message:?}"
    );
}

#[test]
fn validate_reports_yaml_syntax_errors_with_a_line() {
    let dir = TempDir::new();
    let f = dir.write(
        "syntax.yaml",
        "listeners:\n  - name: web\n    listen: [unclosed\n",
    );
    let o = validate(&f);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    let prefix = format!("{}:", f.display());
    assert!(err.starts_with(&prefix), "{err:?}");
    let line: usize = err[prefix.len()..]
        .split(':')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no line number in {err:?}"));
    assert!(line >= 3, "{err:?}");
}

#[test]
fn validate_reports_a_missing_file() {
    let dir = TempDir::new();
    let missing = dir.join("missing.yaml");
    let o = validate(&missing);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains(missing.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
}

#[test]
fn shipped_config_yaml_validates() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    if !shipped.exists() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED shipped_config_yaml_validates: {} does not exist yet",
            shipped.display()
        );
        return;
    }
    let o = validate(&shipped);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
}

#[test]
fn running_with_an_invalid_config_exits_1() {
    let dir = TempDir::new();
    let f = dir.write("bad.yaml", &format!("{GOOD}bogus_key: 1\n"));
    let o = run(&["--config", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("bogus_key"), "{}", stderr(&o));
}

#[test]
fn validate_takes_the_file_as_a_positional_argument() {
    let dir = TempDir::new();
    let path = dir.write("good.yaml", GOOD);
    let o = run(&["validate", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(&format!("{}: ok", path.display())));
    let bad = dir.write("bad.yaml", "nonsense: 1\n");
    let o = run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown key `nonsense`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn validate_reports_every_problem_in_file_order_one_line_each() {
    let dir = TempDir::new();
    let path = dir.write(
        "many.yaml",
        "\
admin: { listen: 127.0.0.1:9901 }
log: { level: loud }
listeners:
  - name: web
    listen: 127.0.0.1:9901
    routes:
      - match: { path: \"~ ^/api/(v1\" }
        upstream: api
      - upstream: nope
  - name: db
    listen: nowhere
    routes: [{ respond: {} }]
upstreams:
  api:
    targets: [127.0.0.1:9]
    health: { active: { uri: /h, body: \"(\" } }
",
    );
    let o = validate(&path);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        (
            1,
            "admin.listen: 127.0.0.1:9901 collides with listener \"web\"",
        ),
        (2, "log.level: unknown log level \"loud\""),
        (
            7,
            "listeners[0].routes[0].match.path: invalid regex \"^/api/(v1\": unclosed group",
        ),
        (
            9,
            "listeners[0].routes[1].upstream: unknown upstream \"nope\"",
        ),
        (
            11,
            "listeners[1].listen: invalid listen address \"nowhere\"",
        ),
        (16, "upstreams.api.health.active.body: invalid regex"),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (got, (line, text)) in lines.iter().zip(expected) {
        let want = format!("{}:{line}:", path.display());
        assert!(got.starts_with(&want), "{got:?} is not at line {line}");
        assert!(got.contains(text), "{got:?} does not say {text:?}");
    }
}

#[test]
fn validate_says_tab_for_a_tab_in_the_indentation() {
    let dir = TempDir::new();
    let path = dir.write(
        "tabs.yaml",
        "listeners:\n  - listen: 127.0.0.1:0\n    routes:\n\t  - respond: {}\n",
    );
    let o = validate(&path);
    assert_eq!(o.status.code(), Some(1));
    let (line, col, _, message) = located_error(&o, &path);
    assert_eq!((line, col), (4, 1), "{message}");
    assert!(message.contains("tab"), "{message}");
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn validate_refuses_an_admin_port_that_a_listener_uses() {
    let dir = TempDir::new();
    let path = dir.write(
        "admin.yaml",
        "admin: { listen: \"127.0.0.1:9901\" }\nlisteners:\n  - name: web\n    listen: 0.0.0.0:9901\n    routes: [{ respond: {} }]\n",
    );
    let o = validate(&path);
    assert_eq!(o.status.code(), Some(1));
    let (line, _, key, message) = located_error(&o, &path);
    assert_eq!((line, key.as_str()), (1, "admin.listen"), "{message}");
    assert!(
        message.contains("collides with listener \"web\""),
        "{message}"
    );
    // Another port, or the same port on another address, is fine.
    for other in [
        "admin: { listen: \"127.0.0.1:9902\" }\nlisteners:\n  - name: web\n    listen: 0.0.0.0:9901\n",
        "admin: { listen: \"127.0.0.1:9901\" }\nlisteners:\n  - name: web\n    listen: 127.0.0.2:9901\n",
    ] {
        let path = dir.write("ok.yaml", &format!("{other}    routes: [{{ respond: {{}} }}]\n"));
        let o = validate(&path);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

#[test]
fn version_names_the_commit() {
    let o = run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        out.starts_with(&format!("ringway {version} (commit ")),
        "{out}"
    );
    let commit = out.trim().rsplit(' ').next().unwrap().trim_end_matches(')');
    // `git rev-parse --short HEAD` of the tree this was built from, or "unknown" without git.
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{out}"),
        None => assert_eq!(commit, "unknown", "{out}"),
    }
}

#[test]
fn startup_line_prints_addresses_not_debug_options() {
    let dir = TempDir::new();
    let path = dir.write(
        "run.yaml",
        "workers: 1\npin_workers: false\nadmin: { listen: 127.0.0.1:0 }\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - respond: { body: ok }\n",
    );
    let mut p = Ringway::start(&path, &[]);
    p.listener("web");
    let line = p
        .seen
        .iter()
        .find(|l| l.contains("ringway started"))
        .unwrap();
    assert!(!line.contains("Some("), "{line}");
    assert!(line.contains("admin=127.0.0.1:"), "{line}");
    assert!(line.contains("(commit "), "{line}");
}

#[test]
fn json_logs_have_unique_keys_and_one_line_per_dial_failure() {
    let dir = TempDir::new();
    let dead = refused_addr();
    let path = dir.write(
        "json.yaml",
        &format!(
            "workers: 1\npin_workers: false\nlog: {{ format: json, level: info }}\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes: [{{ upstream: gone }}]\nupstreams:\n  gone:\n    targets: [{dead}]\n"
        ),
    );
    let mut p = Ringway::start(&path, &[]);
    let addr = p.listener("web");
    assert_eq!(get(addr, "/").status, 502);
    p.signal(libc::SIGTERM);
    p.wait_exit(Duration::from_secs(10));
    p.drain();
    let lines = p.seen.clone();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        // serde_json keeps the last of two equal keys: count them in the text instead.
        let keys = v.as_object().unwrap().keys().count();
        let written = line.matches("\":").count();
        assert_eq!(keys, written, "a key written twice in {line}");
    }
    let dial: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&dead.to_string()) || l.contains("refused"))
        .collect();
    assert_eq!(dial.len(), 1, "{dial:#?}");
    let v: serde_json::Value = serde_json::from_str(dial[0]).unwrap();
    assert_eq!(v["upstream"], "gone", "{v}");
    assert_eq!(v["upstream_addr"], dead.to_string(), "{v}");
}

#[test]
fn relative_certificate_paths_resolve_against_the_config_files_directory() {
    let dir = TempDir::new();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    support::tls::Pki::new(&certs, "ca").server("site", &["site.test"]);
    let yaml = "listeners:\n  - listen: 127.0.0.1:0\n    tls:\n      certificates:\n        - { cert: certs/site.pem, key: certs/site.key }\n    routes: [{ respond: {} }]\n";
    let path = dir.write("edge.yaml", yaml);
    // Run from elsewhere: the working directory must not matter.
    let o = Command::new(BIN)
        .args(["validate", path.to_str().unwrap()])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A missing file: the error names the full path that was tried.
    let path = dir.write(
        "broken.yaml",
        &yaml.replace("certs/site.pem", "certs/gone.pem"),
    );
    let o = Command::new(BIN)
        .args(["validate", path.to_str().unwrap()])
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let tried = dir.path().join("certs/gone.pem");
    assert!(
        stderr(&o).contains(&tried.display().to_string()),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sleep_waits_then_exits_zero_for_pre_stop_hooks() {
    let started = Instant::now();
    let o = run(&["sleep", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(started.elapsed() >= Duration::from_secs(1));
}

fn running_config(dir: &TempDir) -> std::path::PathBuf {
    dir.write(
        "run.yaml",
        "workers: 1\npin_workers: false\nshutdown_timeout: 5s\nlog: { level: info }\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - respond: { status: 200, body: \"alive\\n\" }\n",
    )
}

#[test]
fn sigterm_stops_a_running_proxy_with_exit_code_0() {
    let dir = TempDir::new();
    let mut p = Ringway::start(&running_config(&dir), &[]);
    let addr = p.listener("web");
    assert_eq!(get(addr, "/").text(), "alive\n");
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "the port is closed after exit"
    );
}

#[test]
fn sigint_stops_a_running_proxy_with_exit_code_0() {
    let dir = TempDir::new();
    let mut p = Ringway::start(&running_config(&dir), &[]);
    let addr = p.listener("web");
    assert_eq!(get(addr, "/").status, 200);
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let b1 = Backend::start("b1");
    let dir = TempDir::new();
    let cfg = dir.write(
        "run.yaml",
        &subst(
            "workers: 1\npin_workers: false\nshutdown_timeout: 5s\nlog: { level: info }\nlisteners:\n  - name: web\n    listen: 127.0.0.1:0\n    routes:\n      - upstream: app\nupstreams:\n  app:\n    targets: [$B1]\n",
            &[("B1", b1.target())],
        ),
    );
    let mut p = Ringway::start(&cfg, &[]);
    let addr = p.listener("web");
    let mut c = Client::connect(addr);
    c.send(get_req("/sleep?ms=700", ""));
    assert!(b1.wait_for_requests(1, Duration::from_secs(3)));
    p.signal(libc::SIGTERM);
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slept\n");
    assert_eq!(p.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
