//! Validation: file types -> runtime types, each problem located at its key and line.
//!
//! The `Validator` is split by subject: listeners and routes, upstreams, TLS, header
//! operations, and the keys that mean nothing on layer 4. This file holds the error
//! helpers and the top level.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::access_format::AccessFormat;
use super::defaults;
use super::file::{AccessLogFile, AdminFile, FileConfig, LimitsFile, LogFile, Strings, ONE_OP};
use super::pattern::one_line;
use super::spans::{join, Pos, Spans};
use super::units::{dur, size, Workers};
use super::{
    AccessLog, Config, ConfigError, Driver, Limits, ListenAddr, ListenerKind, Log, LogFormat,
};
use crate::template::Template;

mod addr;
mod dynamic;
mod fastcgi;
mod headers;
mod http2;
mod knobs;
mod layer4;
mod listeners;
mod shape;
mod tls;
mod upstream_h2;
mod upstreams;

use addr::parse_listen;

type Res<T> = Result<T, ConfigError>;

/// Reads the file types of one configuration; every error names the file, line and key.
pub(in crate::config) struct Validator<'a> {
    pub(in crate::config) file: &'a str,
    pub(in crate::config) spans: &'a Spans,
    /// Problems set aside by `keep` so one run reports them all.
    pub(in crate::config) errors: RefCell<Vec<ConfigError>>,
}

/// Whether two TCP listen addresses want the same port on some interface (port 0 never does).
pub(in crate::config) fn addrs_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl<'a> Validator<'a> {
    pub(in crate::config) fn new(file: &'a str, spans: &'a Spans) -> Validator<'a> {
        Validator {
            file,
            spans,
            errors: RefCell::new(Vec::new()),
        }
    }

    pub(in crate::config) fn error(
        &self,
        key: &str,
        pos: Pos,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            key: key.to_string(),
            // One error, one line: regex and YAML errors come with their own line breaks.
            message: one_line(&message.into()),
        }
    }

    /// A file named in the configuration: a relative path is taken from the configuration
    /// file's directory (as nginx and Caddy users expect), not from the working directory.
    pub(in crate::config) fn path(&self, p: &str) -> PathBuf {
        let path = std::path::Path::new(p);
        match std::path::Path::new(self.file).parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// A problem with the key itself (it should not be there, or something is missing under it).
    fn at_key(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(key, self.spans.find(key, false), message)
    }

    /// A problem with the value written for the key.
    fn at_value(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(key, self.spans.find(key, true), message)
    }

    pub(in crate::config) fn serde_error(&self, e: &serde_yaml::Error) -> ConfigError {
        let loc = e.location().map(|l| Pos {
            line: l.line(),
            column: l.column(),
        });
        let mut text = e.to_string();
        if let Some(p) = loc {
            text = text.replacen(&format!(" at line {} column {}", p.line, p.column), "", 1);
        }
        // serde_yaml prefixes the path of the value being read: `listeners[0].routes[0]: ...`.
        let (path, message) = match text.split_once(": ") {
            Some((p, m)) if self.spans.knows(p) || !p.contains(char::is_whitespace) => {
                (p.to_string(), m.to_string())
            }
            _ => (String::new(), text.clone()),
        };
        let pos = loc.unwrap_or(Pos { line: 1, column: 1 });
        for (serde_word, ours) in [
            ("unknown field `", "unknown key `"),
            ("duplicate field `", "duplicate key `"),
        ] {
            if let Some(rest) = message.strip_prefix(serde_word) {
                let name = rest.split('`').next().unwrap_or_default();
                let key = join(&path, name);
                let pos = self.spans.keys.get(&key).copied().unwrap_or(pos);
                return self.error(&key, pos, format!("{ours}{rest}"));
            }
        }
        if let Some(rest) = message.strip_prefix(ONE_OP) {
            let name = rest.split('`').nth(1).unwrap_or_default();
            let key = join(&path, name);
            let pos = self.spans.keys.get(&key).copied().unwrap_or(pos);
            return self.error(&key, pos, message);
        }
        if let Some(rest) = message.strip_prefix("missing field `") {
            return self.error(&path, pos, format!("missing key `{rest}"));
        }
        let key = if path.is_empty() && text == message && loc.is_some() {
            self.spans.key_before(pos)
        } else {
            path
        };
        self.error(&key, pos, tidy_serde_message(&message))
    }

    pub(in crate::config) fn config(&self, f: FileConfig) -> Res<Config> {
        let workers = match f.workers {
            Some(Workers::Count(n)) => n,
            Some(Workers::Auto) | None => {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            }
        };
        // Each section is checked even when an earlier one failed, so `validate` can report
        // every problem at once; the first in file order is returned.
        let driver = self.keep(self.driver(f.driver.as_deref()));
        let shutdown_timeout =
            dur(f.shutdown_timeout, defaults::SHUTDOWN_TIMEOUT).unwrap_or_default();
        let shutdown_delay = dur(f.shutdown_delay, defaults::SHUTDOWN_DELAY).unwrap_or_default();
        let admin = self.keep(self.admin(f.admin));
        let log = self.keep(self.log(f.log.unwrap_or_default()));
        let limits = self.keep(self.limits(f.limits.unwrap_or_default()));
        let trusted_proxies = self.keep(self.trusted_proxies(f.trusted_proxies));

        let upstreams_raw = f.upstreams.map(|n| n.0).unwrap_or_default();
        let names: Vec<&str> = upstreams_raw.iter().map(|(n, _)| n.as_str()).collect();
        let has_trusted = trusted_proxies.as_ref().is_some_and(|t| !t.is_empty());
        // Taken before the listeners are checked, so a listener broken elsewhere (a bad route)
        // still has its address compared with the admin endpoint's.
        let addresses: Vec<(String, SocketAddr)> = f
            .listeners
            .iter()
            .flatten()
            .filter_map(|l| match parse_listen(&l.listen) {
                Ok(ListenAddr::Tcp(a)) => Some((l.name.clone().unwrap_or(l.listen.clone()), a)),
                _ => None,
            })
            .collect();
        let listeners = self.keep(self.listeners(f.listeners, &names, has_trusted));
        let no_listeners = Vec::new();
        let known_listeners = listeners.as_ref().unwrap_or(&no_listeners);
        let upstreams: Vec<_> = upstreams_raw
            .into_iter()
            .enumerate()
            .map(|(i, (name, u))| {
                // A tcp listener's upstream is refused its HTTP-only keys, even when http
                // routes use it too: on the tunnel they would silently do nothing.
                let tcp_user = known_listeners.iter().find_map(|l| match l.kind {
                    ListenerKind::Tcp { upstream, .. } if upstream == i => Some(l.name.as_str()),
                    _ => None,
                });
                self.keep(self.upstream(name, u, tcp_user))
            })
            .collect();
        if let Some(Some(admin)) = &admin {
            self.keep(self.admin_port_is_free(*admin, &addresses));
        }
        let (
            Some(driver),
            Some(admin),
            Some(log),
            Some(limits),
            Some(trusted_proxies),
            Some(listeners),
            Some(upstreams),
        ) = (
            driver,
            admin,
            log,
            limits,
            trusted_proxies,
            listeners,
            upstreams.into_iter().collect::<Option<Vec<_>>>(),
        )
        else {
            return Err(self.first_error());
        };
        if !self.errors.borrow().is_empty() {
            return Err(self.first_error());
        }
        Ok(Config {
            workers,
            pin_workers: f.pin_workers.unwrap_or(defaults::PIN_WORKERS),
            driver,
            shutdown_timeout,
            shutdown_delay,
            admin,
            log,
            limits,
            trusted_proxies,
            listeners,
            upstreams,
            source: None,
        })
    }

    /// Sets a failed check's error aside (see `errors`) and goes on without its value.
    pub(in crate::config) fn keep<T>(&self, r: Res<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.borrow_mut().push(e);
                None
            }
        }
    }

    /// Every error set aside, in file order, each once.
    pub(in crate::config) fn take_errors(&self) -> Vec<ConfigError> {
        let mut all = std::mem::take(&mut *self.errors.borrow_mut());
        all.sort_by_key(|e| self.order(e));
        all.dedup();
        all
    }

    /// File order; a problem about a key that is not written (a missing section) has no
    /// place of its own, so it comes after the ones that do.
    fn order(&self, e: &ConfigError) -> (bool, usize, usize) {
        let unwritten = !e.key.is_empty() && !self.spans.knows(&e.key);
        (unwritten, e.line, e.column)
    }

    fn first_error(&self) -> ConfigError {
        let errors = self.errors.borrow();
        let first = errors.iter().min_by_key(|e| self.order(e));
        first
            .cloned()
            .unwrap_or_else(|| self.error("", Pos { line: 1, column: 1 }, "invalid"))
    }

    fn driver(&self, d: Option<&str>) -> Res<Driver> {
        match d.unwrap_or(defaults::DRIVER) {
            "auto" => Ok(Driver::Auto),
            "io_uring" => Ok(Driver::IoUring),
            "epoll" => Ok(Driver::Epoll),
            other => Err(self.at_value(
                "driver",
                format!("unknown driver \"{other}\" (expected auto, io_uring or epoll)"),
            )),
        }
    }

    fn admin(&self, a: Option<AdminFile>) -> Res<Option<SocketAddr>> {
        match a {
            None => Ok(None),
            Some(AdminFile { listen: None }) => {
                Err(self.at_key("admin", "needs `listen` (an IP:port address)"))
            }
            Some(AdminFile { listen: Some(l) }) => match parse_listen(&l) {
                Ok(ListenAddr::Tcp(a)) => Ok(Some(a)),
                Ok(ListenAddr::Unix(_)) => {
                    Err(self.at_value("admin.listen", "must be a TCP address (IP:port)"))
                }
                Err(m) => Err(self.at_value("admin.listen", m)),
            },
        }
    }

    /// The admin endpoint binds without `SO_REUSEPORT`: sharing a listener's port fails at
    /// startup (or, worse, on a reload), so say so now.
    fn admin_port_is_free(&self, admin: SocketAddr, listeners: &[(String, SocketAddr)]) -> Res<()> {
        match listeners.iter().find(|(_, a)| addrs_collide(admin, *a)) {
            Some((name, a)) => Err(self.at_value(
                "admin.listen",
                format!("{admin} collides with listener \"{name}\" ({a})"),
            )),
            None => Ok(()),
        }
    }

    fn log(&self, l: LogFile) -> Res<Log> {
        let level = l.level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(self.at_value(
                "log.level",
                format!(
                    "unknown log level \"{level}\" (expected error, warn, info, debug or trace)"
                ),
            ));
        }
        let format = match l.format.as_deref().unwrap_or(defaults::LOG_FORMAT) {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(self.at_value(
                    "log.format",
                    format!("unknown log format \"{other}\" (expected text or json)"),
                ))
            }
        };
        let (access_log, access_format) = match l.access_log {
            None | Some(AccessLogFile::On(false)) => (None, None),
            Some(AccessLogFile::On(true)) => (Some(AccessLog::Stdout), None),
            Some(AccessLogFile::Path(p)) if p.is_empty() => {
                return Err(self.at_value("log.access_log", "expected true, false or a file path"))
            }
            Some(AccessLogFile::Path(p)) => (Some(AccessLog::File(self.path(&p))), None),
            Some(AccessLogFile::Full(full)) => {
                let to = match full.path.as_deref() {
                    None | Some("stdout") => AccessLog::Stdout,
                    Some("") => {
                        return Err(
                            self.at_value("log.access_log.path", "expected stdout or a file path")
                        )
                    }
                    Some(p) => AccessLog::File(self.path(p)),
                };
                let format = match full.format.as_deref() {
                    None => None,
                    Some(f) => Some(
                        AccessFormat::parse(f)
                            .map_err(|e| self.at_value("log.access_log.format", e))?,
                    ),
                };
                (Some(to), format)
            }
        };
        let access_format = access_format.unwrap_or(match format {
            LogFormat::Json => AccessFormat::Json,
            LogFormat::Text => AccessFormat::Text,
        });
        Ok(Log {
            level,
            format,
            access_log,
            access_format,
        })
    }

    fn limits(&self, l: LimitsFile) -> Res<Limits> {
        let max_header_bytes = size(l.max_header_bytes, defaults::MAX_HEADER_BYTES);
        let min = defaults::MIN_MAX_HEADER_BYTES;
        if max_header_bytes < min {
            return Err(self.at_value(
                "limits.max_header_bytes",
                format!("must be at least 1KiB ({min}), not {max_header_bytes}"),
            ));
        }
        let max_uri_bytes = size(l.max_uri_bytes, defaults::MAX_URI_BYTES);
        let min = defaults::MIN_MAX_URI_BYTES;
        if max_uri_bytes < min {
            return Err(self.at_value(
                "limits.max_uri_bytes",
                format!("must be at least {min}, not {max_uri_bytes}"),
            ));
        }
        let max_headers = l.max_headers.unwrap_or(defaults::MAX_HEADERS);
        let max = defaults::MAX_MAX_HEADERS;
        if !(1..=max).contains(&max_headers) {
            return Err(self.at_value(
                "limits.max_headers",
                format!("must be from 1 to {max}, not {max_headers}"),
            ));
        }
        let usize_of = |key: &str, v: u64| {
            usize::try_from(v).map_err(|_| self.at_value(key, "too large for this platform"))
        };
        Ok(Limits {
            max_header_bytes: usize_of("limits.max_header_bytes", max_header_bytes)?,
            max_uri_bytes: usize_of("limits.max_uri_bytes", max_uri_bytes)?,
            max_headers,
            max_request_body: Some(size(l.max_request_body, defaults::MAX_REQUEST_BODY))
                .filter(|&n| n > 0),
            header_read_timeout: dur(l.header_read_timeout, defaults::HEADER_READ_TIMEOUT),
            idle_timeout: dur(l.idle_timeout, defaults::IDLE_TIMEOUT),
            max_connections: l.max_connections.filter(|&n| n > 0),
        })
    }

    fn trusted_proxies(&self, list: Option<Strings>) -> Res<Vec<IpNet>> {
        let Some(list) = list else {
            return Ok(Vec::new());
        };
        let mut nets = Vec::new();
        for (i, item) in list.items.iter().enumerate() {
            let key = list.item_key("trusted_proxies", i);
            if item == "private_ranges" {
                for net in defaults::PRIVATE_RANGES {
                    nets.push(net.parse().expect("valid built-in range"));
                }
            } else if let Ok(net) = item.parse::<IpNet>() {
                nets.push(net.trunc());
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else {
                let hint = "expected e.g. 10.0.0.0/8, 192.0.2.7 or private_ranges";
                return Err(self.at_value(&key, format!("invalid CIDR \"{item}\" ({hint})")));
            }
        }
        Ok(nets)
    }

    fn header_name(&self, key: &str, name: &str) -> Res<()> {
        if is_token(name) {
            Ok(())
        } else {
            Err(self.at_key(key, format!("invalid header name \"{name}\"")))
        }
    }

    fn header_value(&self, key: &str, value: &str) -> Res<Template> {
        if value.contains(['\r', '\n', '\0']) {
            return Err(self.at_value(key, "a header value cannot contain line breaks or NUL"));
        }
        self.template(key, value)
    }

    fn template(&self, key: &str, text: &str) -> Res<Template> {
        Template::parse(text).map_err(|m| self.at_value(key, m))
    }

    fn method(&self, key: &str, m: &str) -> Res<String> {
        if is_token(m) {
            Ok(m.to_ascii_uppercase())
        } else {
            Err(self.at_value(key, format!("invalid method \"{m}\"")))
        }
    }
}

/// serde names Rust types in its messages; say what the YAML should hold instead.
fn tidy_serde_message(message: &str) -> String {
    let mut out = message.to_string();
    if let Some(i) = out.find("expected struct ") {
        out.truncate(i);
        out.push_str("expected a mapping");
    }
    for (rust, yaml) in [
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected a sequence", "expected a list"),
    ] {
        if let Some(head) = out.strip_suffix(rust) {
            out = format!("{head}{yaml}");
        }
    }
    out
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;
    use crate::config::*;

    #[test]
    fn minimal_config_gets_every_default() {
        let c = ok(MINIMAL);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.workers, cpus);
        assert!(c.pin_workers);
        assert_eq!(c.driver, Driver::Auto);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
        let l = &c.limits;
        assert_eq!(l.max_header_bytes, 64 * 1024);
        assert_eq!(l.max_uri_bytes, 8 * 1024);
        assert_eq!(l.max_headers, 100);
        assert_eq!(l.max_request_body, None);
        assert_eq!(l.header_read_timeout, Some(Duration::from_secs(10)));
        assert_eq!(l.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(l.max_connections, None);
        assert!(c.trusted_proxies.is_empty());
        assert!(c.upstreams.is_empty());
        let listener = &c.listeners[0];
        assert_eq!(listener.name, "127.0.0.1:8080");
        assert_eq!(
            listener.addr,
            ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap())
        );
        let r = &routes(&c)[0];
        assert!(r.matcher.hosts.is_empty() && r.matcher.path.is_none());
        let Action::Respond(resp) = &r.action else {
            panic!("expected respond")
        };
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.as_literal(), Some("ok\n"));
    }

    #[test]
    fn full_supported_config_is_converted() {
        let c = ok(r#"
            workers: 3
            pin_workers: false
            driver: epoll
            shutdown_timeout: 0
            log: { level: debug, format: json, access_log: false }
            limits:
              max_header_bytes: 32KiB
              max_uri_bytes: 4096
              max_headers: 64
              max_request_body: 10MB
              header_read_timeout: 5s
              idle_timeout: 0
              max_connections: 1000
            trusted_proxies: [10.1.2.3, 192.168.0.0/16]
            listeners:
              - name: web
                listen: "[::1]:8081"
                proxy_protocol: false
                routes:
                  - match:
                      host: [Example.COM, "*.Example.com"]
                      path: /api
                      except: [/api/static]
                      methods: [get, Post]
                      headers: { X-Env: staging }
                    strip_prefix: /api
                    rewrite: "/v2{path}?{query}"
                    method: put
                    upstream: static
                  - respond:
                      status: 503
                      body: '{"ok":false}'
                      headers: { Content-Type: application/json, X-Worker: "{worker}" }
              - listen: unix//run/ringway.sock
                routes:
                  - upstream: api
            upstreams:
              api:
                targets:
                  - 127.0.0.1:9001
                  - address: http://10.0.0.2:8080
                    weight: 3
                    max_connections: 100
                  - address: unix//run/app.sock
                    max_connections: 0
                lb:
                  policy: weighted_round_robin
                  choose: 3
                  key: ""
                  secret: ""
                  retries: 2
                  try_duration: 5s
                  try_interval: 0
                  retry_methods: [get, head]
                health:
                  passive: { fail_duration: 0s, max_fails: 1, unhealthy_status: [] }
                transport:
                  dial_timeout: 1s
                  response_header_timeout: 30s
                  read_timeout: 1m
                  write_timeout: 1m30s
                  keepalive: false
                  idle_timeout: 2m
                  max_idle_per_worker: 8
                  proxy_protocol: off
                  https_ports: []
                headers:
                  request:
                    - set: { X-Env: prod, X-Real: "{client_ip}" }
                    - add: { X-Trace: "{header.X-Request-Id}" }
                    - remove: ["X-Internal-*", Server]
                    - replace: { name: Referer, regex: "^http://", with: "https://" }
                  response:
                    - remove: X-Powered-By
                forwarded: rfc7239
                flush_interval: 0s
                request_buffer: 0
                response_buffer: 0
              static:
                targets: ["http://localhost"]
                forwarded: off
        "#);
        assert_eq!(c.workers, 3);
        assert!(!c.pin_workers);
        assert_eq!(c.driver, Driver::Epoll);
        assert_eq!(c.shutdown_timeout, Duration::ZERO);
        assert_eq!(
            (c.log.level.as_str(), c.log.format),
            ("debug", LogFormat::Json)
        );
        let l = &c.limits;
        assert_eq!(
            (l.max_header_bytes, l.max_uri_bytes, l.max_headers),
            (32768, 4096, 64)
        );
        assert_eq!(l.max_request_body, Some(10_000_000));
        assert_eq!(l.header_read_timeout, Some(Duration::from_secs(5)));
        assert_eq!(l.idle_timeout, None);
        assert_eq!(l.max_connections, Some(1000));
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.1.2.3/32", "192.168.0.0/16"]);

        assert_eq!(c.listeners[0].name, "web");
        assert_eq!(
            c.listeners[0].addr,
            ListenAddr::Tcp("[::1]:8081".parse().unwrap())
        );
        assert_eq!(c.listeners[1].name, "unix//run/ringway.sock");
        assert_eq!(
            c.listeners[1].addr,
            ListenAddr::Unix("/run/ringway.sock".into())
        );

        let r = &routes(&c)[0];
        let m = &r.matcher;
        assert_eq!(
            m.hosts,
            [
                HostMatch::Exact("example.com".into()),
                HostMatch::Suffix(".example.com".into())
            ]
        );
        assert_eq!(m.path, Some(PathMatch::Prefix("/api".into())));
        assert_eq!(m.except, [PathMatch::Prefix("/api/static".into())]);
        assert_eq!(m.methods, ["GET", "POST"]);
        assert_eq!(m.headers, [("x-env".to_string(), "staging".to_string())]);
        assert_eq!(r.strip_prefix.as_deref(), Some("/api"));
        assert!(r.rewrite.is_some());
        assert_eq!(r.method.as_deref(), Some("PUT"));
        assert!(
            matches!(r.action, Action::Proxy(1)),
            "static is the second upstream"
        );
        let Action::Respond(resp) = &routes(&c)[1].action else {
            panic!("expected respond")
        };
        assert_eq!(resp.status, 503);
        assert_eq!(resp.body.as_literal(), Some(r#"{"ok":false}"#));
        assert_eq!(resp.headers.len(), 2);
        assert_eq!(resp.headers[0].0, "Content-Type");
        assert_eq!(resp.headers[0].1.as_literal(), Some("application/json"));
        assert_eq!(resp.headers[1].1.as_literal(), None);

        let api = &c.upstreams[0];
        assert_eq!(
            api.targets[0].addr,
            TargetAddr::Tcp {
                host: "127.0.0.1:9001".into(),
                addr: "127.0.0.1:9001".parse().unwrap()
            }
        );
        assert_eq!(
            api.targets[1].addr,
            TargetAddr::Tcp {
                host: "10.0.0.2:8080".into(),
                addr: "10.0.0.2:8080".parse().unwrap()
            }
        );
        assert_eq!(
            (api.targets[1].weight, api.targets[1].max_connections),
            (3, Some(100))
        );
        assert_eq!(
            api.targets[2].addr,
            TargetAddr::Unix("/run/app.sock".into())
        );
        assert_eq!(api.targets[2].max_connections, None);
        assert_eq!(api.lb.policy, Policy::WeightedRoundRobin);
        assert_eq!((api.lb.choose, api.lb.retries), (3, 2));
        assert_eq!(api.lb.try_duration, Some(Duration::from_secs(5)));
        assert_eq!(api.lb.try_interval, Duration::ZERO);
        assert_eq!(api.lb.retry_methods, ["GET", "HEAD"]);
        let t = &api.transport;
        assert_eq!(t.dial_timeout, Some(Duration::from_secs(1)));
        assert_eq!(t.response_header_timeout, Some(Duration::from_secs(30)));
        assert_eq!(t.read_timeout, Some(Duration::from_secs(60)));
        assert_eq!(t.write_timeout, Some(Duration::from_secs(90)));
        assert!(!t.keepalive);
        assert_eq!(t.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(t.max_idle_per_worker, 8);
        assert_eq!(api.forwarded, Forwarded::Rfc7239);

        let req = &api.headers.request;
        assert_eq!(req.len(), 6);
        assert!(
            matches!(&req[0], HeaderOp::Set(n, v) if n == "X-Env" && v.as_literal() == Some("prod"))
        );
        assert!(
            matches!(&req[1], HeaderOp::Set(n, v) if n == "X-Real" && v.as_literal().is_none())
        );
        assert!(matches!(&req[2], HeaderOp::Add(n, _) if n == "X-Trace"));
        assert!(matches!(&req[3], HeaderOp::Remove(NamePattern::Prefix(p)) if p == "x-internal-"));
        assert!(matches!(&req[4], HeaderOp::Remove(NamePattern::Exact(p)) if p == "server"));
        let HeaderOp::Replace { name, regex, with } = &req[5] else {
            panic!("expected replace")
        };
        assert_eq!((name.as_str(), with.as_str()), ("referer", "https://"));
        assert!(regex.is_match("http://a"));
        assert!(matches!(
            &api.headers.response[..],
            [HeaderOp::Remove(NamePattern::Exact(p))] if p == "x-powered-by"
        ));

        let st = &c.upstreams[1];
        assert_eq!(st.name, "static");
        assert_eq!(st.forwarded, Forwarded::Off);
        let TargetAddr::Tcp { host, addr } = &st.targets[0].addr else {
            panic!("expected tcp")
        };
        assert_eq!(host, "localhost");
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 80);
    }

    #[test]
    fn unknown_placeholder_is_reported_at_the_template() {
        let e = assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond:
                      status: 200
                      body: "hello {nmae}"
            "#,
            6,
            "listeners[0].routes[0].respond.body",
            "unknown placeholder {nmae}",
        );
        assert_eq!(e.column, 17);
        let e = upstream_err("headers:\n  request:\n    - set: { X-A: ok, X-B: \"{clientip}\" }\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.headers.request[0].set.X-B"),
            "{e}"
        );
        assert_eq!(e.message, "unknown placeholder {clientip}");
    }

    #[test]
    fn not_supported_yet_keys_are_rejected_at_their_line() {
        let top: [(&str, usize, &str); 0] = [];
        for (yaml, line, key) in top {
            let text = format!("{yaml}{}", dedent(MINIMAL));
            let e = Config::parse(&text, "t").expect_err(key);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
            assert!(e.message.starts_with("not supported yet"), "{e}");
        }
        // Line 8 is the first line after the base file built by `with_upstream`.
        let upstream: [(&str, usize, &str); 0] = [];
        for (extra, line, key) in upstream {
            let e = upstream_err(extra);
            let key = format!("upstreams.api.{key}");
            assert_eq!((e.line, e.key.as_str()), (line, key.as_str()), "{e}");
            assert!(e.message.starts_with("not supported yet"), "{e}");
        }
    }

    #[test]
    fn not_supported_keys_at_their_default_values_are_accepted() {
        let text = with_upstream(
            r#"
            lb: { key: "", secret: "" }
            health:
              passive:
                fail_duration: 0s
                max_fails: 1
                unhealthy_status: []
                unhealthy_latency: 0s
                unhealthy_request_count: 0
            transport: { proxy_protocol: off, https_ports: [] }
            flush_interval: 0s
            request_buffer: 0
            response_buffer: 0KiB
            "#,
        );
        let text = text.replace(
            "  - listen: 127.0.0.1:8080\n",
            "  - listen: 127.0.0.1:8080\n    proxy_protocol: false\n",
        );
        let text = format!("log: {{ access_log: false }}\n{text}");
        Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn new_contract_keys_are_accepted_at_what_ringway_does() {
        let text = with_upstream("transport: { protocol: http, versions: [\"1.1\", 1.1] }");
        let text = text.replace(
            "  - listen: 127.0.0.1:8080\n",
            "  - listen: 127.0.0.1:8080\n    protocols: [h1]\n",
        );
        Config::parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn new_contract_keys_with_unknown_values_are_located() {
        let listener = "listeners:\n  - listen: 127.0.0.1:8080\n    protocols: [h1, h3]\n    \
                        routes: [{ respond: {} }]\n";
        assert_err(
            listener,
            3,
            "listeners[0].protocols[1]",
            "unknown protocol \"h3\"",
        );
        let e = upstream_err("transport: { protocol: grpc }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.transport.protocol")
        );
        assert!(e.message.contains("unknown transport protocol"), "{e}");
        let e = upstream_err("transport: { versions: [\"3\"] }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.transport.versions[0]")
        );
        let e = upstream_err("transport: { versions: [] }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.transport.versions")
        );
        let e = upstream_err("transport:\n  fastcgi: { rot: /var/www }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.transport.fastcgi.rot")
        );
        assert!(e.message.starts_with("unknown key"), "{e}");
    }

    #[test]
    fn access_log_goes_to_stdout_or_a_file() {
        let on = ok(&format!("log: {{ access_log: true }}\n{}", dedent(MINIMAL)));
        assert_eq!(on.log.access_log, Some(AccessLog::Stdout));
        let file = ok(&format!(
            "log: {{ access_log: /var/log/rw.log }}\n{}",
            dedent(MINIMAL)
        ));
        assert_eq!(
            file.log.access_log,
            Some(AccessLog::File("/var/log/rw.log".into()))
        );
        let off = ok(MINIMAL);
        assert_eq!(off.log.access_log, None);
    }

    #[test]
    fn trusted_proxies_accept_cidrs_ips_and_private_ranges() {
        let c = ok(r#"
            trusted_proxies: [private_ranges, 203.0.113.9, "2001:db8::/32", 10.1.2.3/8]
            listeners: [{ listen: "127.0.0.1:1", routes: [{ respond: {} }] }]
        "#);
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "127.0.0.0/8",
                "fc00::/7",
                "::1/128",
                "203.0.113.9/32",
                "2001:db8::/32",
                "10.0.0.0/8"
            ]
        );
        let c = ok(r#"
            trusted_proxies: ::1
            listeners: [{ listen: "127.0.0.1:1", routes: [{ respond: {} }] }]
        "#);
        assert_eq!(c.trusted_proxies[0].to_string(), "::1/128");
    }

    #[test]
    fn bad_cidr_is_reported_at_its_item() {
        let e = assert_err(
            r#"
            trusted_proxies:
              - 10.0.0.0/8
              - 10.0.0.0/33
            "#,
            3,
            "trusted_proxies[1]",
            "invalid CIDR \"10.0.0.0/33\"",
        );
        assert_eq!(e.column, 5);
    }

    #[test]
    fn top_level_values_are_validated() {
        assert_err("workers: 0\n", 1, "workers", "positive integer");
        assert_err("workers: many\n", 1, "workers", "positive integer");
        assert_err("driver: kqueue\n", 1, "driver", "unknown driver \"kqueue\"");
        assert_err(
            "log: { level: verbose }\n",
            1,
            "log.level",
            "unknown log level",
        );
        assert_err(
            "log: { format: xml }\n",
            1,
            "log.format",
            "unknown log format",
        );
        let c = ok(&format!(
            "workers: auto\ndriver: io_uring\n{}",
            dedent(MINIMAL)
        ));
        assert_eq!(c.driver, Driver::IoUring);
        assert!(c.workers >= 1);
    }

    #[test]
    fn limits_are_range_checked() {
        assert_err(
            "limits: { max_headers: 0 }\n",
            1,
            "limits.max_headers",
            "from 1 to 256",
        );
        assert_err(
            "limits:\n  max_headers: 257\n",
            2,
            "limits.max_headers",
            "from 1 to 256",
        );
        assert_err(
            "limits:\n  max_header_bytes: 1000\n",
            2,
            "limits.max_header_bytes",
            "at least 1KiB",
        );
        assert_err(
            "limits:\n  max_uri_bytes: 15B\n",
            2,
            "limits.max_uri_bytes",
            "at least 16",
        );
        let c = ok(&format!(
            "limits: {{ max_headers: 256, max_header_bytes: 1KiB }}\n{}",
            dedent(MINIMAL)
        ));
        assert_eq!(
            (c.limits.max_headers, c.limits.max_header_bytes),
            (256, 1024)
        );
    }
}
