//! Helpers shared by the configuration unit tests.

use super::*;

/// The contract sits in `shared/` beside the repository (as CI lays it out).
pub(crate) const CONTRACT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/config.yaml"
);

pub(crate) fn contract_text() -> Option<String> {
    let text = std::fs::read_to_string(CONTRACT).ok();
    if text.is_none() {
        eprintln!("skipped: the configuration contract is not at {CONTRACT}");
    }
    text
}

/// Strips the leading newline and common indentation so line 1 is the first YAML line.
pub(crate) fn dedent(s: &str) -> String {
    let s = s.strip_prefix('\n').unwrap_or(s);
    let indent = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = s
        .lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

pub(crate) fn ok(yaml: &str) -> Config {
    Config::parse(&dedent(yaml), "t.yaml").unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

pub(crate) fn err(yaml: &str) -> ConfigError {
    match Config::parse(&dedent(yaml), "t.yaml") {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e,
    }
}

/// Asserts the line, the key and a part of the message.
#[track_caller]
pub(crate) fn assert_err(yaml: &str, line: usize, key: &str, message: &str) -> ConfigError {
    let e = err(yaml);
    assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
    assert!(e.message.contains(message), "message of: {e}");
    assert_eq!(e.file, "t.yaml");
    assert!(e.column >= 1, "{e}");
    e
}

/// A valid file with `extra` appended to the upstream `api` (indented under it).
pub(crate) fn with_upstream(extra: &str) -> String {
    let mut y = String::from(
        "listeners:\n  - listen: 127.0.0.1:8080\n    routes:\n      - upstream: api\n\
         upstreams:\n  api:\n    targets: [127.0.0.1:9001]\n",
    );
    for line in dedent(extra).lines() {
        y.push_str("    ");
        y.push_str(line);
        y.push('\n');
    }
    y
}

pub(crate) fn upstream_err(extra: &str) -> ConfigError {
    Config::parse(&with_upstream(extra), "t.yaml").expect_err("expected an error")
}

pub(crate) fn routes(c: &Config) -> &[Route] {
    match &c.listeners[0].kind {
        ListenerKind::Http { routes } => routes,
        ListenerKind::Tcp { .. } => panic!("tcp listener"),
    }
}

pub(crate) const MINIMAL: &str = r#"
    listeners:
      - listen: 127.0.0.1:8080
        routes:
          - respond: { body: "ok\n" }
"#;

/// Writes a self-signed certificate for `names` and its key (PKCS#8) into `dir`.
pub(crate) fn write_cert(dir: &std::path::Path, stem: &str, names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

pub(crate) fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rw-cfg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) fn tls_listener(tls: &str) -> String {
    let mut y = String::from("listeners:\n  - listen: 127.0.0.1:8443\n    tls:\n");
    for line in dedent(tls).lines() {
        y.push_str("      ");
        y.push_str(line);
        y.push('\n');
    }
    y.push_str("    routes: [{ respond: {} }]\n");
    y
}
