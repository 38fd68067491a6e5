//! Keeps `docs/configuration.md` and the configuration file types in step: every key the file
//! types accept is documented under its section, and the document names no key they refuse.

#![cfg(test)]

use serde::de::DeserializeOwned;

use super::file::*;

const DOC: &str = include_str!("../../docs/configuration.md");

/// The keys a file type accepts, read from serde's own refusal of an unknown one.
fn accepted<T: DeserializeOwned>() -> Vec<String> {
    let e = match serde_yaml::from_str::<T>("zz_not_a_key: 1\n") {
        Ok(_) => panic!("a file type accepted an unknown key"),
        Err(e) => e.to_string(),
    };
    let list = e
        .split_once("expected one of ")
        .or_else(|| e.split_once("expected "))
        .map_or("", |(_, l)| l);
    let list = list.split(" at line").next().unwrap_or_default();
    list.split([',', ' '])
        .filter(|k| *k != "or")
        .map(|k| k.trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Every mapping section of the file, by its path in the document, with the keys it accepts.
fn sections() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("", accepted::<FileConfig>()),
        ("admin", accepted::<AdminFile>()),
        ("log", accepted::<LogFile>()),
        ("log.access_log", accepted::<AccessLogFull>()),
        ("limits", accepted::<LimitsFile>()),
        ("listeners[]", accepted::<ListenerFile>()),
        ("listeners[].http2", accepted::<Http2File>()),
        ("listeners[].tls", accepted::<ListenerTlsFile>()),
        (
            "listeners[].tls.certificates[]",
            accepted::<CertificateFile>(),
        ),
        ("listeners[].tls.client_auth", accepted::<ClientAuthFile>()),
        ("listeners[].routes[]", accepted::<RouteFile>()),
        ("listeners[].routes[].match", accepted::<MatchFile>()),
        ("listeners[].routes[].respond", accepted::<RespondFile>()),
        (
            "listeners[].routes[].handle_response[]",
            accepted::<HandleResponseFile>(),
        ),
        (
            "listeners[].routes[].handle_response[].match",
            accepted::<ResponseMatchFile>(),
        ),
        ("upstreams.NAME", accepted::<UpstreamFile>()),
        ("upstreams.NAME.targets[]", accepted::<TargetMapFile>()),
        ("upstreams.NAME.dynamic", accepted::<DynamicFile>()),
        ("upstreams.NAME.dynamic.a", accepted::<DynamicAFile>()),
        ("upstreams.NAME.split", accepted::<SplitFile>()),
        ("upstreams.NAME.lb", accepted::<LbFile>()),
        ("upstreams.NAME.health", accepted::<HealthFile>()),
        (
            "upstreams.NAME.health.active",
            accepted::<ActiveHealthFile>(),
        ),
        (
            "upstreams.NAME.health.passive",
            accepted::<PassiveHealthFile>(),
        ),
        ("upstreams.NAME.transport", accepted::<TransportFile>()),
        (
            "upstreams.NAME.transport.fastcgi",
            accepted::<FastcgiFile>(),
        ),
        (
            "upstreams.NAME.transport.tls",
            accepted::<TransportTlsFile>(),
        ),
        ("upstreams.NAME.headers", accepted::<HeadersFile>()),
        (
            "upstreams.NAME.headers.request[]",
            accepted::<HeaderOpFile>(),
        ),
        (
            "upstreams.NAME.headers.request[].replace",
            accepted::<ReplaceFile>(),
        ),
    ]
}

/// The document's sections (`### \`path\`` headings) and the keys of their tables
/// (rows starting with a backticked key).
fn documented() -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in DOC.lines() {
        if let Some(h) = line.strip_prefix("### `") {
            out.push((h.trim_end_matches('`').to_string(), Vec::new()));
        } else if let (Some(row), Some((_, keys))) = (line.strip_prefix("| `"), out.last_mut()) {
            keys.push(row.split('`').next().unwrap_or_default().to_string());
        }
    }
    // The top level is written as `(top level)`.
    for (s, _) in &mut out {
        if s == "(top level)" {
            s.clear();
        }
    }
    out
}

#[test]
fn every_key_the_file_accepts_is_documented_and_no_other() {
    let doc = documented();
    let mut problems = Vec::new();
    for (section, keys) in sections() {
        assert!(!keys.is_empty(), "no keys read for {section:?}");
        let Some((_, doc_keys)) = doc.iter().find(|(s, _)| s == section) else {
            problems.push(format!(
                "section `{section}` is not in docs/configuration.md"
            ));
            continue;
        };
        for k in &keys {
            if !doc_keys.contains(k) {
                problems.push(format!("`{section}`: key `{k}` is not documented"));
            }
        }
        for k in doc_keys {
            if !keys.contains(k) {
                problems.push(format!("`{section}`: documented key `{k}` is not accepted"));
            }
        }
    }
    let known: Vec<&str> = sections().iter().map(|(s, _)| *s).collect();
    for (s, _) in &doc {
        if !known.contains(&s.as_str()) {
            problems.push(format!(
                "documented section `{s}` is not a section of the file"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn accepted_keys_are_read_from_serde() {
    assert_eq!(accepted::<AdminFile>(), ["listen"]);
    assert!(accepted::<FileConfig>().contains(&"listeners".to_string()));
}
