//! The file as written: one type per YAML mapping. Absent keys are `None`; defaults are
//! applied in validation (see `defaults`), which also refuses keys ringway cannot do yet.
//!
//! Every key of the contract has a field here even when validation refuses it, so an
//! unknown key (a typo) and a planned key get different, precise errors.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::units::{Dur, FlushInterval, Size, Workers};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) workers: Option<Workers>,
    pub(super) pin_workers: Option<bool>,
    pub(super) driver: Option<String>,
    pub(super) shutdown_timeout: Option<Dur>,
    pub(super) shutdown_delay: Option<Dur>,
    pub(super) admin: Option<AdminFile>,
    pub(super) log: Option<LogFile>,
    pub(super) limits: Option<LimitsFile>,
    pub(super) trusted_proxies: Option<Strings>,
    pub(super) listeners: Option<Vec<ListenerFile>>,
    pub(super) upstreams: Option<Named<UpstreamFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminFile {
    pub(super) listen: Option<String>,
}

/// `access_log: true|false` (standard output), a file path, or `{ path, format }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "true, false, a file path or a mapping with `path` and `format`"
)]
pub(super) enum AccessLogFile {
    On(bool),
    Path(String),
    Full(AccessLogFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessLogFull {
    /// `stdout` (the default) or a file path.
    pub(super) path: Option<String>,
    /// `text`, `json`, `combined` or a `{field}` template; default: `log.format`.
    pub(super) format: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    pub(super) level: Option<String>,
    pub(super) format: Option<String>,
    pub(super) access_log: Option<AccessLogFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    pub(super) max_header_bytes: Option<Size>,
    pub(super) max_uri_bytes: Option<Size>,
    pub(super) max_headers: Option<usize>,
    pub(super) max_request_body: Option<Size>,
    pub(super) header_read_timeout: Option<Dur>,
    pub(super) idle_timeout: Option<Dur>,
    pub(super) max_connections: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerFile {
    pub(super) name: Option<String>,
    pub(super) listen: String,
    pub(super) protocol: Option<String>,
    /// http listeners: `h1`, `h2`, `h2c`.
    pub(super) protocols: Option<Strings>,
    pub(super) http2: Option<Http2File>,
    pub(super) proxy_protocol: Option<bool>,
    pub(super) tls: Option<ListenerTlsFile>,
    pub(super) routes: Option<Vec<RouteFile>>,
    /// protocol: tcp only.
    pub(super) upstream: Option<String>,
    /// protocol: tcp only.
    pub(super) idle_timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerTlsFile {
    pub(super) certificates: Option<Vec<CertificateFile>>,
    /// A string ("1.2") or, unquoted, a YAML number (1.2).
    pub(super) min_version: Option<serde_yaml::Value>,
    pub(super) alpn: Option<Strings>,
    pub(super) handshake_timeout: Option<Dur>,
    pub(super) client_auth: Option<ClientAuthFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificateFile {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClientAuthFile {
    pub(super) ca: Option<Strings>,
    pub(super) required: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    /// Shown in the access log; the route's index when absent.
    pub(super) name: Option<String>,
    #[serde(rename = "match")]
    pub(super) matcher: Option<MatchFile>,
    pub(super) strip_prefix: Option<String>,
    pub(super) rewrite: Option<String>,
    pub(super) method: Option<String>,
    pub(super) respond: Option<RespondFile>,
    pub(super) upstream: Option<String>,
    pub(super) handle_response: Option<Vec<HandleResponseFile>>,
    /// Status code or class (`5xx`) -> file.
    pub(super) error_pages: Option<Named<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Http2File {
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) initial_window: Option<Size>,
    pub(super) max_header_list: Option<Size>,
    pub(super) max_resets_per_s: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HandleResponseFile {
    #[serde(rename = "match")]
    pub(super) matcher: Option<ResponseMatchFile>,
    pub(super) replace_status: Option<u16>,
    pub(super) respond: Option<RespondFile>,
    pub(super) upstream: Option<String>,
    pub(super) rewrite: Option<String>,
    pub(super) method: Option<String>,
    pub(super) copy_response_headers: Option<Strings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResponseMatchFile {
    pub(super) status: Option<Strings>,
    pub(super) headers: Option<Named<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FastcgiFile {
    pub(super) root: Option<String>,
    pub(super) split_path: Option<Strings>,
    pub(super) index: Option<String>,
    pub(super) env: Option<Named<String>>,
    pub(super) capture_stderr: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MatchFile {
    pub(super) host: Option<Strings>,
    pub(super) path: Option<String>,
    pub(super) except: Option<Strings>,
    pub(super) methods: Option<Strings>,
    pub(super) headers: Option<Named<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RespondFile {
    pub(super) status: Option<u16>,
    pub(super) body: Option<String>,
    pub(super) headers: Option<Named<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamFile {
    pub(super) targets: Option<Vec<TargetFile>>,
    pub(super) dynamic: Option<DynamicFile>,
    pub(super) split: Option<SplitFile>,
    pub(super) lb: Option<LbFile>,
    pub(super) health: Option<HealthFile>,
    pub(super) transport: Option<TransportFile>,
    pub(super) headers: Option<HeadersFile>,
    pub(super) forwarded: Option<String>,
    // Validated only: every upstream read is written to the client at once.
    #[allow(dead_code)]
    pub(super) flush_interval: Option<FlushInterval>,
    pub(super) request_buffer: Option<Size>,
    pub(super) response_buffer: Option<Size>,
    pub(super) stream_timeout: Option<Dur>,
    pub(super) stream_close_delay: Option<Dur>,
}

pub(super) enum TargetFile {
    Address(String),
    Detailed(TargetMapFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetMapFile {
    pub(super) address: String,
    pub(super) weight: Option<u32>,
    pub(super) max_connections: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DynamicFile {
    pub(super) srv: Option<SrvFile>,
    pub(super) a: Option<DynamicAFile>,
    pub(super) refresh: Option<Dur>,
    pub(super) resolvers: Option<Strings>,
}

/// `srv: _api._tcp.name`, or the parts: `{service: api, proto: tcp, name: ...}`.
pub(super) enum SrvFile {
    Name(String),
    Parts(SrvPartsFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SrvPartsFile {
    pub(super) service: Option<String>,
    pub(super) proto: Option<String>,
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DynamicAFile {
    pub(super) name: Option<String>,
    pub(super) port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SplitFile {
    pub(super) targets: Option<Vec<TargetFile>>,
    pub(super) percent: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LbFile {
    pub(super) policy: Option<String>,
    pub(super) choose: Option<usize>,
    pub(super) key: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) retries: Option<u32>,
    pub(super) try_duration: Option<Dur>,
    pub(super) try_interval: Option<Dur>,
    pub(super) retry_methods: Option<Strings>,
    pub(super) retry_match: Option<MatchFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthFile {
    pub(super) active: Option<ActiveHealthFile>,
    pub(super) passive: Option<PassiveHealthFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActiveHealthFile {
    pub(super) uri: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) method: Option<String>,
    pub(super) interval: Option<Dur>,
    pub(super) timeout: Option<Dur>,
    pub(super) expect_status: Option<String>,
    pub(super) body: Option<String>,
    pub(super) headers: Option<Named<String>>,
    pub(super) fails: Option<u32>,
    pub(super) passes: Option<u32>,
    pub(super) max_latency: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PassiveHealthFile {
    pub(super) fail_duration: Option<Dur>,
    pub(super) max_fails: Option<u32>,
    pub(super) unhealthy_status: Option<Strings>,
    pub(super) unhealthy_latency: Option<Dur>,
    pub(super) unhealthy_request_count: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TransportFile {
    /// `http` | `fastcgi`.
    pub(super) protocol: Option<String>,
    /// `"1.1"` | `"2"`; unquoted, YAML reads 1.1 as a number.
    pub(super) versions: Option<Vec<serde_yaml::Value>>,
    pub(super) fastcgi: Option<FastcgiFile>,
    pub(super) dial_timeout: Option<Dur>,
    pub(super) response_header_timeout: Option<Dur>,
    pub(super) read_timeout: Option<Dur>,
    pub(super) write_timeout: Option<Dur>,
    pub(super) keepalive: Option<bool>,
    pub(super) idle_timeout: Option<Dur>,
    pub(super) max_idle_per_worker: Option<usize>,
    pub(super) proxy_protocol: Option<String>,
    pub(super) queue_timeout: Option<Dur>,
    pub(super) max_connections: Option<u32>,
    pub(super) max_response_header: Option<Size>,
    pub(super) keepalive_interval: Option<Dur>,
    pub(super) local_address: Option<String>,
    pub(super) expect_continue_timeout: Option<Dur>,
    pub(super) dial_fallback_delay: Option<super::units::SignedDur>,
    pub(super) read_buffer: Option<Size>,
    pub(super) write_buffer: Option<Size>,
    pub(super) keepalive_idle_conns: Option<usize>,
    pub(super) forward_proxy_url: Option<String>,
    pub(super) tls: Option<TransportTlsFile>,
    pub(super) https_ports: Option<Vec<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TransportTlsFile {
    pub(super) ca: Option<Strings>,
    pub(super) client_cert: Option<String>,
    pub(super) client_key: Option<String>,
    pub(super) server_name: Option<String>,
    pub(super) insecure_skip_verify: Option<bool>,
    pub(super) handshake_timeout: Option<Dur>,
    pub(super) except_ports: Option<Vec<u16>>,
    pub(super) renegotiation: Option<String>,
    pub(super) curves: Option<Strings>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct HeadersFile {
    pub(super) request: Option<Vec<HeaderOpFile>>,
    pub(super) response: Option<Vec<HeaderOpFile>>,
}

/// One single-key mapping of a `headers.request`/`headers.response` list.
pub(super) enum HeaderOpFile {
    Set(Named<String>),
    Add(Named<String>),
    Remove(Strings),
    Replace(ReplaceFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplaceFile {
    pub(super) name: String,
    pub(super) regex: String,
    pub(super) with: Option<String>,
}

/// A string or a list of strings.
pub(super) struct Strings {
    pub(super) items: Vec<String>,
    pub(super) list: bool,
}

/// A mapping in file order.
pub(super) struct Named<V>(pub(super) Vec<(String, V)>);

impl Strings {
    /// The key of item `i`: `base[i]` for a list, `base` for a single string.
    pub(super) fn item_key(&self, base: &str, i: usize) -> String {
        if self.list {
            format!("{base}[{i}]")
        } else {
            base.to_string()
        }
    }
}

// Custom `Deserialize` impls: they fail inside serde_yaml, so their errors carry its location.

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Strings, E> {
                Ok(Strings {
                    items: vec![s.to_string()],
                    list: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut items = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    items.push(s);
                }
                Ok(Strings { items, list: true })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    entries.push((k, map.next_value()?));
                }
                Ok(Named(entries))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'de> Deserialize<'de> for TargetFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TargetFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address string or a mapping with `address`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TargetFile, E> {
                Ok(TargetFile::Address(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TargetFile, A::Error> {
                let m = TargetMapFile::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TargetFile::Detailed(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for SrvFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SrvFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an SRV name or a mapping with `service`, `proto` and `name`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SrvFile, E> {
                Ok(SrvFile::Name(s.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SrvFile, A::Error> {
                let m = SrvPartsFile::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SrvFile::Parts(m))
            }
        }
        d.deserialize_any(V)
    }
}

const HEADER_OPS: &[&str] = &["set", "add", "remove", "replace"];
pub(super) const ONE_OP: &str = "one operation per list item:";

impl<'de> Deserialize<'de> for HeaderOpFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderOpFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping with one of `set`, `add`, `remove`, `replace`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderOpFile, A::Error> {
                let Some(op) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "empty header operation (expected set, add, remove or replace)",
                    ));
                };
                let parsed = match op.as_str() {
                    "set" => HeaderOpFile::Set(map.next_value()?),
                    "add" => HeaderOpFile::Add(map.next_value()?),
                    "remove" => HeaderOpFile::Remove(map.next_value()?),
                    "replace" => HeaderOpFile::Replace(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, HEADER_OPS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "{ONE_OP} `{extra}` needs its own list item"
                    )));
                }
                Ok(parsed)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spans::Spans;
    use crate::config::test_support::*;
    use crate::config::validate::Validator;
    use crate::config::*;

    #[test]
    fn unknown_top_level_key_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            workers: 2
            wrokers: 3
            "#,
            2,
            "wrokers",
            "unknown key `wrokers`",
        );
        assert_eq!(e.column, 1);
        assert!(
            e.message.contains("`workers`"),
            "lists the expected keys: {e}"
        );
    }

    #[test]
    fn unknown_nested_key_names_the_key_itself() {
        let e = assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond: {}
                    foo: 1
            "#,
            5,
            "listeners[0].routes[0].foo",
            "unknown key `foo`",
        );
        assert_eq!(e.column, 9);
        let e = upstream_err("lb:\n  policy: first\n  retires: 2\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.retires"),
            "{e}"
        );
        assert!(e.message.starts_with("unknown key `retires`"), "{e}");
        let e = upstream_err("targets2: []\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.targets2"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_in_a_target_mapping_is_reported() {
        let e = err(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes: [{ upstream: api }]
            upstreams:
              api:
                targets:
                  - address: 127.0.0.1:9001
                    wieght: 2
        "#);
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.targets[0].wieght"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_is_reported_at_the_value() {
        let e = assert_err(
            r#"
            limits:
              max_headers: lots
            "#,
            2,
            "limits.max_headers",
            "invalid type: string \"lots\", expected a non-negative integer",
        );
        assert_eq!(e.column, 16);
        assert_err("pin_workers: 3\n", 1, "pin_workers", "expected a boolean");
        assert_err("listeners: {a: 1}\n", 1, "listeners", "expected a list");
        assert_err("log: []\n", 1, "log", "expected a mapping");
    }

    #[test]
    fn contract_file_keys_are_all_known() {
        let Some(text) = contract_text() else { return };
        if let Err(e) = serde_yaml::from_str::<FileConfig>(&text) {
            panic!(
                "{}",
                Validator::new(CONTRACT, &Spans::build(&text)).serde_error(&e)
            );
        }
    }

    #[test]
    fn contract_file_fails_only_on_its_example_values_never_on_a_key() {
        let Some(text) = contract_text() else { return };
        // The contract documents every key at once (a route with both respond and upstream,
        // certificate files that do not exist here), so it is refused, but never for a key.
        let e = Config::parse(&text, "config.yaml").expect_err("the contract is documentation");
        assert!(!e.message.contains("unknown key"), "{e}");
        assert!(e.line > 0 && !e.key.is_empty(), "{e}");
    }
}
