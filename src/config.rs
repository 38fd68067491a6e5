//! Configuration: the YAML file types -> `validate()` -> the runtime types below.
//!
//! The runtime types are what workers consume: every name resolved (routes point at upstream
//! indices), every duration parsed, every default filled in. `0`/"off" values become `None`.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use yaml_rust2::parser::{Event, Parser};

use crate::template::Template;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Resolved worker count (`auto` -> available parallelism), at least 1.
    pub workers: usize,
    pub pin_workers: bool,
    pub driver: Driver,
    pub shutdown_timeout: Duration,
    /// After SIGTERM, keep accepting this long (readiness already failing) so load balancers
    /// and Kubernetes endpoints stop sending traffic before the listeners close.
    pub shutdown_delay: Duration,
    /// Control-plane HTTP endpoint (metrics, health, readiness); `None` = off.
    pub admin: Option<SocketAddr>,
    pub log: Log,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
    /// The file this was read from: a reload reads it again (`None`: parsed from text).
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone)]
pub struct Log {
    /// `error|warn|info|debug|trace`.
    pub level: String,
    pub format: LogFormat,
    /// One line per request; `None` = off.
    pub access_log: Option<AccessLog>,
}

/// Where access log lines go: `access_log: true` -> standard output; a path -> that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
    /// `None` = unlimited.
    pub max_request_body: Option<u64>,
    pub header_read_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// Per worker; `None` = unlimited.
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub addr: ListenAddr,
    pub kind: ListenerKind,
    /// Terminate TLS on this listener.
    pub tls: Option<ListenerTls>,
    /// Each connection starts with a PROXY v1/v2 header from a `trusted_proxies` peer.
    pub proxy_protocol: bool,
}

/// `listeners[].tls`: files are read when the server starts and again on reload.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Chosen by SNI against their SAN names; the first is the default.
    pub certificates: Vec<CertificatePaths>,
    pub min_version: TlsVersion,
    pub alpn: Vec<String>,
    pub handshake_timeout: Option<Duration>,
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM key: PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V12,
    V13,
}

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub ca: Vec<PathBuf>,
    /// false: a client without a certificate is let in; a bad certificate never is.
    pub required: bool,
}

/// `upstreams.*.transport.tls` (or the defaults, for `https://` targets and TLS ports).
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// Empty: the webpki roots.
    pub ca: Vec<PathBuf>,
    pub client_cert: Option<CertificatePaths>,
    /// SNI and verified name; `None`: the target's host.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    pub handshake_timeout: Option<Duration>,
    pub except_ports: Vec<u16>,
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    Http {
        routes: Vec<Route>,
    },
    /// Layer 4; `upstream` indexes `Config::upstreams`.
    Tcp {
        upstream: usize,
        idle_timeout: Option<Duration>,
    },
}

#[derive(Debug, Clone)]
pub struct Route {
    pub matcher: Match,
    pub strip_prefix: Option<String>,
    /// New path and query for the upstream request.
    pub rewrite: Option<Template>,
    pub method: Option<String>,
    pub action: Action,
}

/// Every condition given must hold; an empty `Match` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub hosts: Vec<HostMatch>,
    /// Prefix on segment boundaries.
    pub path: Option<String>,
    pub except: Vec<String>,
    /// Upper-case method names.
    pub methods: Vec<String>,
    /// Exact, case-sensitive value match on a case-insensitive name.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com` (lower-case): matches `a.example.com`, not `example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum Action {
    Respond(Respond),
    /// Index into `Config::upstreams`.
    Proxy(usize),
}

#[derive(Debug, Clone)]
pub struct Respond {
    pub status: u16,
    pub body: Template,
    pub headers: Vec<(String, Template)>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// The main targets, followed by the split targets (from `split_start` on) when `split` is set.
    pub targets: Vec<Target>,
    pub split: Option<Split>,
    pub lb: Lb,
    pub health: Health,
    pub transport: Transport,
    pub headers: HeaderOps,
    pub forwarded: Forwarded,
    /// Request body bytes read before the upstream is dialed (0 = stream at once).
    pub request_buffer: u64,
    /// Response body bytes read before the response head is sent on (0 = stream at once).
    pub response_buffer: u64,
}

/// Largest `request_buffer` / `response_buffer`: the bytes are held per connection.
pub const MAX_BODY_BUFFER: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    /// `host` is what the user wrote (for Host-style placeholders and logs); `addr` is resolved.
    Tcp {
        host: String,
        addr: SocketAddr,
    },
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: TargetAddr,
    /// Dialed with TLS (`Transport::tls` holds the settings).
    pub tls: bool,
    pub weight: u32,
    /// Across all workers; `None` = unlimited.
    pub max_connections: Option<u32>,
}

/// Blue-green / canary: `percent` of requests go to `targets[start..]`, the rest to `targets[..start]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub start: usize,
    /// 0..=100.
    pub percent: u32,
}

#[derive(Debug, Clone)]
pub struct Lb {
    pub policy: Policy,
    pub choose: usize,
    /// header: field name; query: query key; cookie: cookie name ("lb" by default).
    pub key: String,
    /// cookie: HMAC-SHA256 secret for the cookie value.
    pub secret: String,
    pub retries: u32,
    pub try_duration: Option<Duration>,
    pub try_interval: Duration,
    /// Upper-case method names.
    pub retry_methods: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Random,
    RandomChoose,
    First,
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    IpHash,
    ClientIpHash,
    UriHash,
    Query,
    Header,
    Cookie,
    P2cEwma,
}

/// Status codes as inclusive ranges: `200`, `2xx`, `200-299`, or a comma list of those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&status))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses one comma-separated list of `NNN`, `Nxx` or `NNN-NNN`.
    pub fn parse(text: &str) -> Result<StatusSet, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim) {
            let bad = || format!("invalid status \"{part}\" (expected e.g. 200, 2xx, 200-299)");
            let code = |s: &str| {
                s.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(bad)
            };
            let range = if let Some(d) = part.strip_suffix("xx").or(part.strip_suffix("XX")) {
                let d: u16 = d
                    .parse()
                    .ok()
                    .filter(|d| (1..=5).contains(d))
                    .ok_or_else(bad)?;
                (d * 100, d * 100 + 99)
            } else if let Some((lo, hi)) = part.split_once('-') {
                let (lo, hi) = (code(lo.trim())?, code(hi.trim())?);
                if lo > hi {
                    return Err(bad());
                }
                (lo, hi)
            } else {
                let c = code(part)?;
                (c, c)
            };
            out.push(range);
        }
        Ok(StatusSet(out))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub active: Option<ActiveHealth>,
    pub passive: PassiveHealth,
}

#[derive(Debug, Clone)]
pub struct ActiveHealth {
    /// `None`: a TCP connect probe.
    pub uri: Option<String>,
    /// 0 = the target's own port.
    pub port: u16,
    /// GET or HEAD.
    pub method: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub expect_status: StatusSet,
    pub body: Option<Regex>,
    /// In file order; a `Host` entry replaces the target's host.
    pub headers: Vec<(String, String)>,
    pub fails: u32,
    pub passes: u32,
    pub max_latency: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct PassiveHealth {
    /// `None` disables passive health.
    pub fail_duration: Option<Duration>,
    pub max_fails: u32,
    pub unhealthy_status: StatusSet,
    pub unhealthy_latency: Option<Duration>,
    /// Concurrent requests at which a target counts as full; `None` = no limit.
    pub unhealthy_request_count: Option<u32>,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            fail_duration: None,
            max_fails: 1,
            unhealthy_status: StatusSet::default(),
            unhealthy_latency: None,
            unhealthy_request_count: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Transport {
    pub dial_timeout: Option<Duration>,
    pub response_header_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub keepalive: bool,
    pub idle_timeout: Option<Duration>,
    pub max_idle_per_worker: usize,
    /// Present when any target of the upstream is dialed with TLS.
    pub tls: Option<UpstreamTls>,
    /// PROXY protocol header sent first on each new upstream connection.
    pub proxy_protocol: ProxyProtocol,
}

/// Which PROXY protocol header, if any, opens each upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    /// The human-readable text header.
    V1,
    /// The binary header.
    V2,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    pub request: Vec<HeaderOp>,
    pub response: Vec<HeaderOp>,
}

#[derive(Debug, Clone)]
pub enum HeaderOp {
    /// Replace every field of this name with one value.
    Set(String, Template),
    /// Append one more field.
    Add(String, Template),
    Remove(NamePattern),
    /// Regex replace in each value of the field (`with` may use `$1` groups).
    Replace {
        name: String,
        regex: Regex,
        with: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// Lower-case exact name.
    Exact(String),
    /// `X-Internal-*` stored as lower-case `x-internal-`.
    Prefix(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    Xff,
    Rfc7239,
    Off,
}

/// A configuration problem, located in the file: `file:line:column: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (e.g. it could not be read).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `listeners[0].routes[1].upstream`; empty for the whole file.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a configuration file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    let mut config = parse(&text, &path.display().to_string())?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Validates configuration text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let spans = Spans::build(text);
    let v = Validator {
        file,
        spans: &spans,
    };
    // yaml-rust2 sees duplicate keys that serde would accept (maps) or place badly (structs).
    if spans.complete {
        if let Some((path, pos)) = &spans.duplicate {
            let key = path.rsplit('.').next().unwrap_or(path);
            return Err(v.error(path, *pos, format!("duplicate key `{key}`")));
        }
    }
    let raw: FileConfig = serde_yaml::from_str(text).map_err(|e| v.serde_error(&e))?;
    v.config(raw)
}

// ---------------------------------------------------------------------------------------------
// Key-path -> position index (serde_yaml has no spans).

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    line: usize,
    column: usize,
}

#[derive(Debug, Default)]
struct Spans {
    /// Where each mapping key, or each sequence item, starts.
    keys: HashMap<String, Pos>,
    /// Where each value starts.
    values: HashMap<String, Pos>,
    /// The first key written twice in one mapping, at its second occurrence.
    duplicate: Option<(String, Pos)>,
    /// False when yaml-rust2 stopped at a syntax error.
    complete: bool,
}

enum Frame {
    Map {
        path: String,
        /// `Some` while the value of this key is expected.
        key: Option<String>,
        /// Block mappings start one column late in yaml-rust2; fix from the first key.
        fix: bool,
        is_item: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

impl Spans {
    fn build(text: &str) -> Spans {
        let lines: Vec<&str> = text.lines().collect();
        let mut s = Spans::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        loop {
            let Ok((event, mark)) = parser.next_token() else {
                return s;
            };
            let pos = Pos {
                line: mark.line(),
                column: mark.col() + 1,
            };
            match &event {
                Event::StreamEnd | Event::DocumentEnd => {
                    s.complete = true;
                    return s;
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Scalar(..) | Event::Alias(_) => {
                    s.node(&mut stack, &event, pos);
                }
                Event::MappingStart(..) => {
                    let (path, is_item) = s.node(&mut stack, &event, pos);
                    let flow = lines
                        .get(pos.line.wrapping_sub(1))
                        .and_then(|l| l.chars().nth(pos.column - 1))
                        == Some('{');
                    stack.push(Frame::Map {
                        path,
                        key: None,
                        fix: !flow,
                        is_item,
                    });
                }
                Event::SequenceStart(..) => {
                    let (path, _) = s.node(&mut stack, &event, pos);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                _ => {}
            }
        }
    }

    /// Records a node starting at `pos`; returns its path and whether it is a sequence item.
    fn node(&mut self, stack: &mut [Frame], event: &Event, pos: Pos) -> (String, bool) {
        match stack.last_mut() {
            None => {
                self.values.insert(String::new(), pos);
                (String::new(), false)
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.keys.insert(p.clone(), pos);
                self.values.insert(p.clone(), pos);
                (p, true)
            }
            Some(Frame::Map {
                path,
                key,
                fix,
                is_item,
            }) => {
                if let Some(k) = key.take() {
                    let p = join(path, &k);
                    self.values.insert(p.clone(), pos);
                    return (p, false);
                }
                if *fix {
                    *fix = false;
                    self.values.insert(path.clone(), pos);
                    if *is_item {
                        self.keys.insert(path.clone(), pos);
                    }
                }
                let name = match event {
                    Event::Scalar(v, ..) => v.clone(),
                    _ => "?".to_string(),
                };
                let p = join(path, &name);
                if self.keys.insert(p.clone(), pos).is_some()
                    && self.duplicate.is_none()
                    && name != "?"
                    && name != "<<"
                {
                    self.duplicate = Some((p.clone(), pos));
                }
                *key = Some(name);
                (p, false)
            }
        }
    }

    fn knows(&self, path: &str) -> bool {
        self.keys.contains_key(path) || self.values.contains_key(path)
    }

    /// The position of `path`, else of its nearest written ancestor.
    fn find(&self, path: &str, value: bool) -> Pos {
        let mut p = path;
        loop {
            let (first, second) = if value {
                (&self.values, &self.keys)
            } else {
                (&self.keys, &self.values)
            };
            if let Some(pos) = first.get(p).or_else(|| second.get(p)) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// The key written last at or before `pos` (to name the place of a syntax error).
    fn key_before(&self, pos: Pos) -> String {
        self.keys
            .iter()
            .filter(|(_, p)| **p <= pos)
            .max_by_key(|(k, p)| (**p, k.len()))
            .map(|(k, _)| k.clone())
            .unwrap_or_default()
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

// ---------------------------------------------------------------------------------------------
// File types: the YAML as written. Absent keys are `None`; defaults are applied in validation.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workers: Option<Workers>,
    pin_workers: Option<bool>,
    driver: Option<String>,
    shutdown_timeout: Option<Dur>,
    shutdown_delay: Option<Dur>,
    admin: Option<AdminFile>,
    log: Option<LogFile>,
    limits: Option<LimitsFile>,
    trusted_proxies: Option<Strings>,
    listeners: Option<Vec<ListenerFile>>,
    upstreams: Option<Named<UpstreamFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminFile {
    listen: Option<String>,
}

/// `access_log: true|false` (standard output), or a file path.
#[derive(Deserialize)]
#[serde(untagged, expecting = "true, false or a file path")]
enum AccessLogFile {
    On(bool),
    Path(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LogFile {
    level: Option<String>,
    format: Option<String>,
    access_log: Option<AccessLogFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_header_bytes: Option<Size>,
    max_uri_bytes: Option<Size>,
    max_headers: Option<usize>,
    max_request_body: Option<Size>,
    header_read_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_connections: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerFile {
    name: Option<String>,
    listen: String,
    protocol: Option<String>,
    proxy_protocol: Option<bool>,
    tls: Option<ListenerTlsFile>,
    routes: Option<Vec<RouteFile>>,
    /// protocol: tcp only.
    upstream: Option<String>,
    /// protocol: tcp only.
    idle_timeout: Option<Dur>,
}

/// The keys of a `protocol: tcp` listener.
struct TcpListenerFile {
    has_routes: bool,
    upstream: Option<String>,
    idle_timeout: Option<Dur>,
    proxy_protocol: bool,
    tls: Option<ListenerTls>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerTlsFile {
    certificates: Option<Vec<CertificateFile>>,
    /// A string ("1.2") or, unquoted, a YAML number (1.2).
    min_version: Option<serde_yaml::Value>,
    alpn: Option<Strings>,
    handshake_timeout: Option<Dur>,
    client_auth: Option<ClientAuthFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateFile {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientAuthFile {
    ca: Option<Strings>,
    required: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(rename = "match")]
    matcher: Option<MatchFile>,
    strip_prefix: Option<String>,
    rewrite: Option<String>,
    method: Option<String>,
    respond: Option<RespondFile>,
    upstream: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFile {
    host: Option<Strings>,
    path: Option<String>,
    except: Option<Strings>,
    methods: Option<Strings>,
    headers: Option<Named<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RespondFile {
    status: Option<u16>,
    body: Option<String>,
    headers: Option<Named<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamFile {
    targets: Option<Vec<TargetFile>>,
    dynamic: Option<DynamicFile>,
    split: Option<SplitFile>,
    lb: Option<LbFile>,
    health: Option<HealthFile>,
    transport: Option<TransportFile>,
    headers: Option<HeadersFile>,
    forwarded: Option<String>,
    // Validated only: every upstream read is written to the client at once.
    #[allow(dead_code)]
    flush_interval: Option<FlushInterval>,
    request_buffer: Option<Size>,
    response_buffer: Option<Size>,
}

enum TargetFile {
    Address(String),
    Detailed(TargetMapFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetMapFile {
    address: String,
    weight: Option<u32>,
    max_connections: Option<u32>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamicFile {
    srv: Option<String>,
    a: Option<DynamicAFile>,
    refresh: Option<Dur>,
    resolvers: Option<Strings>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DynamicAFile {
    name: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitFile {
    targets: Option<Vec<TargetFile>>,
    percent: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LbFile {
    policy: Option<String>,
    choose: Option<usize>,
    key: Option<String>,
    secret: Option<String>,
    retries: Option<u32>,
    try_duration: Option<Dur>,
    try_interval: Option<Dur>,
    retry_methods: Option<Strings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    active: Option<ActiveHealthFile>,
    passive: Option<PassiveHealthFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActiveHealthFile {
    uri: Option<String>,
    port: Option<u16>,
    method: Option<String>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
    expect_status: Option<String>,
    body: Option<String>,
    headers: Option<Named<String>>,
    fails: Option<u32>,
    passes: Option<u32>,
    max_latency: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PassiveHealthFile {
    fail_duration: Option<Dur>,
    max_fails: Option<u32>,
    unhealthy_status: Option<Strings>,
    unhealthy_latency: Option<Dur>,
    unhealthy_request_count: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TransportFile {
    dial_timeout: Option<Dur>,
    response_header_timeout: Option<Dur>,
    read_timeout: Option<Dur>,
    write_timeout: Option<Dur>,
    keepalive: Option<bool>,
    idle_timeout: Option<Dur>,
    max_idle_per_worker: Option<usize>,
    proxy_protocol: Option<String>,
    tls: Option<TransportTlsFile>,
    https_ports: Option<Vec<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TransportTlsFile {
    ca: Option<Strings>,
    client_cert: Option<String>,
    client_key: Option<String>,
    server_name: Option<String>,
    insecure_skip_verify: Option<bool>,
    handshake_timeout: Option<Dur>,
    except_ports: Option<Vec<u16>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HeadersFile {
    request: Option<Vec<HeaderOpFile>>,
    response: Option<Vec<HeaderOpFile>>,
}

/// One single-key mapping of a `headers.request`/`headers.response` list.
enum HeaderOpFile {
    Set(Named<String>),
    Add(Named<String>),
    Remove(Strings),
    Replace(ReplaceFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceFile {
    name: String,
    regex: String,
    with: Option<String>,
}

/// `auto` or a positive count.
enum Workers {
    Auto,
    Count(usize),
}

/// A duration; `None` when zero (off).
struct Dur(Option<Duration>);

/// `flush_interval`: a duration or -1. Validated only: every read is flushed at once.
struct FlushInterval(#[allow(dead_code)] bool);

/// A byte count.
struct Size(u64);

/// A string or a list of strings.
struct Strings {
    items: Vec<String>,
    list: bool,
}

/// A mapping in file order.
struct Named<V>(Vec<(String, V)>);

// Custom `Deserialize` impls: they fail inside serde_yaml, so their errors carry its location.

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`auto` or a positive integer")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Workers, E> {
                match usize::try_from(n) {
                    Ok(n) if n >= 1 => Ok(Workers::Count(n)),
                    _ => Err(E::custom("must be `auto` or a positive integer")),
                }
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Workers, E> {
                Err(E::custom("must be `auto` or a positive integer"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Workers, E> {
                if s == "auto" {
                    return Ok(Workers::Auto);
                }
                match s.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid worker count \"{s}\" (expected `auto` or a positive integer)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"250ms\", \"5s\" or \"1m30s\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Dur, E> {
                if n == 0 {
                    Ok(Dur(None))
                } else {
                    Err(E::custom(format!(
                        "duration {n} needs a unit, e.g. \"{n}s\" or \"{n}ms\""
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid duration {n} (cannot be negative)"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                let d = parse_duration(s).map_err(E::custom)?;
                Ok(Dur((!d.is_zero()).then_some(d)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for FlushInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FlushInterval;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"100ms\", 0, or -1")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FlushInterval, E> {
                match n {
                    -1 => Ok(FlushInterval(true)),
                    n if n >= 0 => self.visit_u64(n as u64),
                    n => Err(E::custom(format!(
                        "invalid flush interval {n} (expected a duration, 0, or -1)"
                    ))),
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FlushInterval, E> {
                if n == 0 {
                    Ok(FlushInterval(false))
                } else {
                    Err(E::custom(format!(
                        "duration {n} needs a unit, e.g. \"{n}ms\" (or -1 to flush every write)"
                    )))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FlushInterval, E> {
                if s.trim() == "-1" {
                    return Ok(FlushInterval(true));
                }
                Ok(FlushInterval(
                    !parse_duration(s).map_err(E::custom)?.is_zero(),
                ))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 4096, \"64KiB\" or \"1MB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                match u64::try_from(n) {
                    Ok(n) => Ok(Size(n)),
                    Err(_) => Err(E::custom(format!("invalid size {n} (cannot be negative)"))),
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

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

const HEADER_OPS: &[&str] = &["set", "add", "remove", "replace"];
const ONE_OP: &str = "one operation per list item:";

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

const UNITS: &str = "ns, us, ms, s, m, h or d";

/// `"250ms"`, `"1m30s"`, `"1.5h"`, `"0"`; units ns us ms s m h d.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let invalid =
        || format!("invalid duration \"{s}\" (expected e.g. \"250ms\", \"5s\", \"1m30s\")");
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(invalid());
    }
    let mut rest = t;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(n);
        let u = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(u);
        if number.is_empty() {
            return Err(invalid());
        }
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => return Err(format!("duration \"{s}\" needs a unit ({UNITS})")),
            _ => {
                let why = format!("unknown unit \"{unit}\" (expected {UNITS})");
                return Err(format!("invalid duration \"{s}\": {why}"));
            }
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(invalid());
        }
        let too_large = || format!("invalid duration \"{s}\" (too large)");
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        // 18 fraction digits are more precision than nanoseconds need and cannot overflow.
        let frac = &frac[..frac.len().min(18)];
        let frac_ns = if frac.is_empty() {
            0
        } else {
            frac.parse::<u128>().map_err(|_| invalid())? * unit_ns / 10u128.pow(frac.len() as u32)
        };
        total = whole
            .checked_mul(unit_ns)
            .and_then(|w| w.checked_add(frac_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(too_large)?;
        rest = next;
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| format!("invalid duration \"{s}\" (too large)"))
}

/// `4096`, `"64KiB"` (1024-based), `"4KB"` (1000-based), `"10B"`.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let n = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(n);
    let invalid =
        || format!("invalid size \"{s}\" (expected e.g. 4096, \"64KiB\", \"1MiB\", \"4KB\")");
    if number.is_empty() {
        return Err(invalid());
    }
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
            "invalid size \"{s}\": unknown unit \"{}\" (expected B, KB, MB, GB, KiB, MiB or GiB)",
            unit.trim_start()
        ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size \"{s}\" (too large)"))
}

// ---------------------------------------------------------------------------------------------
// Validation: file types -> runtime types.

type Res<T> = Result<T, ConfigError>;

const POLICIES: &str = "random, random_choose, first, round_robin, weighted_round_robin, \
     least_conn, ip_hash, client_ip_hash, uri_hash, query, header, cookie, p2c_ewma";
/// The cookie policy's cookie name when `key` is empty (Caddy's default).
pub const DEFAULT_COOKIE: &str = "lb";
/// Failures one target remembers: each is an atomic timestamp in a per-target ring.
pub const MAX_PASSIVE_FAILS: usize = 64;
/// Probes more often than this would load the targets for no gain in detection time.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

struct Validator<'a> {
    file: &'a str,
    spans: &'a Spans,
}

impl Validator<'_> {
    fn error(&self, key: &str, pos: Pos, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            key: key.to_string(),
            message: message.into(),
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

    fn serde_error(&self, e: &serde_yaml::Error) -> ConfigError {
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

    fn config(&self, f: FileConfig) -> Res<Config> {
        let workers = match f.workers {
            Some(Workers::Count(n)) => n,
            Some(Workers::Auto) | None => {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            }
        };
        let driver = match f.driver.as_deref() {
            None | Some("auto") => Driver::Auto,
            Some("io_uring") => Driver::IoUring,
            Some("epoll") => Driver::Epoll,
            Some(other) => {
                return Err(self.at_value(
                    "driver",
                    format!("unknown driver \"{other}\" (expected auto, io_uring or epoll)"),
                ))
            }
        };
        let shutdown_timeout = dur(f.shutdown_timeout, secs(30)).unwrap_or(Duration::ZERO);
        let shutdown_delay = dur(f.shutdown_delay, None).unwrap_or(Duration::ZERO);
        let admin = match f.admin {
            None => None,
            Some(AdminFile { listen: None }) => {
                return Err(self.at_key("admin", "needs `listen` (an IP:port address)"))
            }
            Some(AdminFile { listen: Some(l) }) => match parse_listen(&l) {
                Ok(ListenAddr::Tcp(a)) => Some(a),
                Ok(ListenAddr::Unix(_)) => {
                    return Err(self.at_value("admin.listen", "must be a TCP address (IP:port)"))
                }
                Err(m) => return Err(self.at_value("admin.listen", m)),
            },
        };
        let log = self.log(f.log.unwrap_or_default())?;
        let limits = self.limits(f.limits.unwrap_or_default())?;
        let trusted_proxies = self.trusted_proxies(f.trusted_proxies)?;

        let upstreams_raw = f.upstreams.map(|n| n.0).unwrap_or_default();
        let names: Vec<&str> = upstreams_raw.iter().map(|(n, _)| n.as_str()).collect();
        let has_trusted = !trusted_proxies.is_empty();
        let listeners = self.listeners(f.listeners, &names, has_trusted)?;
        let upstreams = upstreams_raw
            .into_iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect::<Res<Vec<_>>>()?;
        self.proxy_protocol_only_for_tcp(&listeners, &upstreams)?;
        Ok(Config {
            workers,
            pin_workers: f.pin_workers.unwrap_or(true),
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

    /// Pooled http connections are shared by many clients, so a PROXY header naming one of
    /// them would be wrong for the rest: only tcp listeners' upstreams may send one for now.
    fn proxy_protocol_only_for_tcp(
        &self,
        listeners: &[Listener],
        upstreams: &[Upstream],
    ) -> Res<()> {
        for l in listeners {
            let ListenerKind::Http { routes } = &l.kind else {
                continue;
            };
            for r in routes {
                let Action::Proxy(u) = r.action else {
                    continue;
                };
                let up = &upstreams[u];
                if up.transport.proxy_protocol != ProxyProtocol::Off {
                    let key = format!("upstreams.{}.transport.proxy_protocol", up.name);
                    return Err(self.at_value(
                        &key,
                        format!(
                            "not supported yet on upstreams of http listeners (used by \
                             listener \"{}\"); tcp listeners' upstreams support it",
                            l.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn log(&self, l: LogFile) -> Res<Log> {
        let level = l.level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&level.as_str()) {
            return Err(self.at_value(
                "log.level",
                format!(
                    "unknown log level \"{level}\" (expected error, warn, info, debug or trace)"
                ),
            ));
        }
        let format = match l.format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(self.at_value(
                    "log.format",
                    format!("unknown log format \"{other}\" (expected text or json)"),
                ))
            }
        };
        let access_log = match l.access_log {
            None | Some(AccessLogFile::On(false)) => None,
            Some(AccessLogFile::On(true)) => Some(AccessLog::Stdout),
            Some(AccessLogFile::Path(p)) if p.is_empty() => {
                return Err(self.at_value("log.access_log", "expected true, false or a file path"))
            }
            Some(AccessLogFile::Path(p)) => Some(AccessLog::File(PathBuf::from(p))),
        };
        Ok(Log {
            level,
            format,
            access_log,
        })
    }

    fn limits(&self, l: LimitsFile) -> Res<Limits> {
        let max_header_bytes = size(l.max_header_bytes, 64 * 1024);
        if max_header_bytes < 1024 {
            return Err(self.at_value(
                "limits.max_header_bytes",
                format!("must be at least 1KiB (1024), not {max_header_bytes}"),
            ));
        }
        let max_uri_bytes = size(l.max_uri_bytes, 8 * 1024);
        if max_uri_bytes < 16 {
            return Err(self.at_value(
                "limits.max_uri_bytes",
                format!("must be at least 16, not {max_uri_bytes}"),
            ));
        }
        let max_headers = l.max_headers.unwrap_or(100);
        if !(1..=256).contains(&max_headers) {
            return Err(self.at_value(
                "limits.max_headers",
                format!("must be from 1 to 256, not {max_headers}"),
            ));
        }
        let usize_of = |key: &str, v: u64| {
            usize::try_from(v).map_err(|_| self.at_value(key, "too large for this platform"))
        };
        Ok(Limits {
            max_header_bytes: usize_of("limits.max_header_bytes", max_header_bytes)?,
            max_uri_bytes: usize_of("limits.max_uri_bytes", max_uri_bytes)?,
            max_headers,
            max_request_body: Some(size(l.max_request_body, 0)).filter(|&n| n > 0),
            header_read_timeout: dur(l.header_read_timeout, secs(10)),
            idle_timeout: dur(l.idle_timeout, secs(60)),
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
                for net in [
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "127.0.0.0/8",
                    "fc00::/7",
                    "::1/128",
                ] {
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

    fn listeners(
        &self,
        list: Option<Vec<ListenerFile>>,
        upstreams: &[&str],
        has_trusted: bool,
    ) -> Res<Vec<Listener>> {
        let list = list.unwrap_or_default();
        if list.is_empty() {
            return Err(self.at_key("listeners", "at least one listener is required"));
        }
        let mut out: Vec<Listener> = Vec::new();
        for (i, l) in list.into_iter().enumerate() {
            let key = format!("listeners[{i}]");
            let named = l.name.is_some();
            let listener = self.listener(&key, l, upstreams, has_trusted)?;
            let name_key = join(&key, if named { "name" } else { "listen" });
            if let Some(other) = out.iter().find(|o| o.name == listener.name) {
                return Err(self.at_value(
                    &name_key,
                    format!("duplicate listener name \"{}\"", other.name),
                ));
            }
            // Port 0 asks the kernel for a fresh port each time, so it never collides.
            let fixed = !matches!(listener.addr, ListenAddr::Tcp(a) if a.port() == 0);
            if let Some(other) = out.iter().find(|o| fixed && o.addr == listener.addr) {
                return Err(self.at_value(
                    &join(&key, "listen"),
                    format!(
                        "duplicate listen address (also used by listener \"{}\")",
                        other.name
                    ),
                ));
            }
            out.push(listener);
        }
        Ok(out)
    }

    fn listener(
        &self,
        key: &str,
        l: ListenerFile,
        upstreams: &[&str],
        has_trusted: bool,
    ) -> Res<Listener> {
        let name = l.name.unwrap_or_else(|| l.listen.clone());
        if name.is_empty() {
            return Err(self.at_value(&join(key, "name"), "must not be empty"));
        }
        let addr = parse_listen(&l.listen).map_err(|m| self.at_value(&join(key, "listen"), m))?;
        let tcp = match l.protocol.as_deref() {
            None | Some("http") => false,
            Some("tcp") => true,
            Some(other) => {
                return Err(self.at_value(
                    &join(key, "protocol"),
                    format!("unknown protocol \"{other}\" (expected http or tcp)"),
                ))
            }
        };
        let proxy_protocol = l.proxy_protocol == Some(true);
        if proxy_protocol {
            let pp_key = join(key, "proxy_protocol");
            if matches!(addr, ListenAddr::Unix(_)) {
                return Err(self.at_value(
                    &pp_key,
                    "not supported on unix listeners (their peers have no address to check \
                     against trusted_proxies)",
                ));
            }
            if !has_trusted {
                return Err(self.at_value(
                    &pp_key,
                    "needs trusted_proxies: PROXY headers are accepted only from those peers",
                ));
            }
        }
        let tls = match l.tls {
            Some(t) => Some(self.listener_tls(&join(key, "tls"), &addr, t)?),
            None => None,
        };
        if proxy_protocol && tls.is_some() {
            // The PROXY header comes before the TLS handshake; ours reads it after.
            return Err(self.at_value(
                &join(key, "proxy_protocol"),
                "not supported yet together with tls (PROXY before TLS is planned)",
            ));
        }
        if tcp {
            let tcp = TcpListenerFile {
                has_routes: l.routes.is_some(),
                upstream: l.upstream,
                idle_timeout: l.idle_timeout,
                proxy_protocol,
                tls,
            };
            return self.tcp_listener(key, name, addr, tcp, upstreams);
        }
        if l.upstream.is_some() {
            return Err(self.at_key(
                &join(key, "upstream"),
                "only valid with `protocol: tcp`; http listeners proxy through `routes`",
            ));
        }
        if l.idle_timeout.is_some() {
            return Err(self.at_key(
                &join(key, "idle_timeout"),
                "only valid with `protocol: tcp`; http listeners use `limits.idle_timeout`",
            ));
        }
        let routes_key = join(key, "routes");
        let routes = l.routes.unwrap_or_default();
        if routes.is_empty() {
            let at = if self.spans.knows(&routes_key) {
                routes_key.as_str()
            } else {
                key
            };
            return Err(self.at_key(at, "an http listener needs at least one route"));
        }
        let routes = routes
            .into_iter()
            .enumerate()
            .map(|(j, r)| self.route(&format!("{routes_key}[{j}]"), r, upstreams))
            .collect::<Res<Vec<_>>>()?;
        Ok(Listener {
            name,
            addr,
            kind: ListenerKind::Http { routes },
            tls,
            proxy_protocol,
        })
    }

    fn tcp_listener(
        &self,
        key: &str,
        name: String,
        addr: ListenAddr,
        l: TcpListenerFile,
        upstreams: &[&str],
    ) -> Res<Listener> {
        if l.has_routes {
            return Err(self.at_key(
                &join(key, "routes"),
                "only valid on http listeners; a tcp listener names one `upstream`",
            ));
        }
        let up_key = join(key, "upstream");
        let Some(up_name) = l.upstream else {
            return Err(self.at_key(key, "a tcp listener needs an `upstream`"));
        };
        let Some(upstream) = upstreams.iter().position(|u| *u == up_name) else {
            return Err(self.at_value(&up_key, format!("unknown upstream \"{up_name}\"")));
        };
        Ok(Listener {
            name,
            addr,
            kind: ListenerKind::Tcp {
                upstream,
                idle_timeout: dur(l.idle_timeout, None),
            },
            tls: l.tls,
            proxy_protocol: l.proxy_protocol,
        })
    }

    fn listener_tls(&self, key: &str, addr: &ListenAddr, t: ListenerTlsFile) -> Res<ListenerTls> {
        if matches!(addr, ListenAddr::Unix(_)) {
            return Err(self.at_key(key, "not supported yet (TLS on unix listeners is planned)"));
        }
        let list_key = join(key, "certificates");
        let files = t.certificates.unwrap_or_default();
        if files.is_empty() {
            let at = if self.spans.knows(&list_key) {
                list_key.as_str()
            } else {
                key
            };
            return Err(self.at_key(at, "at least one certificate is required"));
        }
        let mut certificates = Vec::with_capacity(files.len());
        for (i, c) in files.into_iter().enumerate() {
            let item = format!("{list_key}[{i}]");
            certificates.push(self.cert_paths(&item, "cert", c.cert, "key", c.key)?);
        }
        let min_version = t.min_version.map(|v| match v {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => n.to_string(),
            other => format!("{other:?}"),
        });
        let min_version = match min_version.as_deref() {
            None | Some("1.2") => TlsVersion::V12,
            Some("1.3") => TlsVersion::V13,
            Some(other) => {
                return Err(self.at_value(
                    &join(key, "min_version"),
                    format!("unknown TLS version \"{other}\" (expected \"1.2\" or \"1.3\")"),
                ))
            }
        };
        let alpn = match t.alpn {
            Some(list) => {
                let mut out = Vec::new();
                for (i, p) in list.items.iter().enumerate() {
                    let k = list.item_key(&join(key, "alpn"), i);
                    if p == "h2" {
                        return Err(self.at_value(&k, "not supported yet (HTTP/2 is planned)"));
                    }
                    if !crate::net::tls::SUPPORTED_ALPN.contains(&p.as_str()) {
                        return Err(self.at_value(
                            &k,
                            format!("unknown ALPN protocol \"{p}\" (expected http/1.1)"),
                        ));
                    }
                    out.push(p.clone());
                }
                out
            }
            None => vec!["http/1.1".to_string()],
        };
        let client_auth = match t.client_auth {
            Some(a) => {
                let ca_key = join(key, "client_auth.ca");
                let ca = a.ca.map(|c| c.items).unwrap_or_default();
                if ca.is_empty() {
                    let at = if self.spans.knows(&ca_key) {
                        ca_key
                    } else {
                        join(key, "client_auth")
                    };
                    return Err(self.at_key(&at, "client_auth needs at least one `ca` file"));
                }
                Some(ClientAuth {
                    ca: ca.into_iter().map(PathBuf::from).collect(),
                    required: a.required.unwrap_or(true),
                })
            }
            None => None,
        };
        let tls = ListenerTls {
            certificates,
            min_version,
            alpn,
            handshake_timeout: dur(t.handshake_timeout, secs(10)),
            client_auth,
        };
        // Read every file now, so a bad certificate is reported here and not at startup.
        crate::net::tls::server_config(&tls, None)
            .map_err(|e| self.at_value(&join(key, &e.key), e.message))?;
        Ok(tls)
    }

    /// A `cert`/`key` pair: both or neither (`Ok(None)` only when `optional`).
    fn cert_paths(
        &self,
        key: &str,
        cert_name: &str,
        cert: Option<String>,
        key_name: &str,
        private: Option<String>,
    ) -> Res<CertificatePaths> {
        let cert = cert.filter(|c| !c.is_empty());
        let private = private.filter(|k| !k.is_empty());
        match (cert, private) {
            (Some(cert), Some(private)) => Ok(CertificatePaths {
                cert: cert.into(),
                key: private.into(),
            }),
            (None, _) => Err(self.at_key(key, format!("missing key `{cert_name}`"))),
            (_, None) => Err(self.at_key(key, format!("missing key `{key_name}`"))),
        }
    }

    /// Decides which targets are dialed with TLS and checks the TLS settings: an explicit
    /// `https://`/`http://` scheme wins; otherwise `except_ports` turns TLS off, and a `tls`
    /// block, `https_ports` or port 443 (Caddy's rule) turn it on.
    fn upstream_tls(
        &self,
        key: &str,
        targets: &mut [Target],
        schemes: &[Option<bool>],
        transport: &mut Transport,
        https_ports: &[u16],
    ) -> Res<()> {
        let block = transport.tls.is_some();
        let except = transport
            .tls
            .as_ref()
            .map(|t| t.except_ports.clone())
            .unwrap_or_default();
        let mut any = false;
        for (i, (t, scheme)) in targets.iter_mut().zip(schemes).enumerate() {
            let TargetAddr::Tcp { addr, .. } = &t.addr else {
                if block {
                    return Err(self.at_value(
                        &format!("{key}.targets[{i}]"),
                        "not supported yet (TLS to unix sockets is planned)",
                    ));
                }
                continue;
            };
            let port = addr.port();
            t.tls = match scheme {
                Some(explicit) => *explicit,
                None if except.contains(&port) => false,
                None => block || https_ports.contains(&port) || port == 443,
            };
            any |= t.tls;
        }
        if !any && !block {
            return Ok(());
        }
        let tls_key = join(key, "transport.tls");
        let settings = transport.tls.get_or_insert_with(|| UpstreamTls {
            handshake_timeout: secs(10),
            ..UpstreamTls::default()
        });
        crate::net::tls::client_config(settings)
            .map_err(|e| self.at_value(&join(&tls_key, &e.key), e.message))?;
        for (i, t) in targets.iter().enumerate() {
            if let (true, TargetAddr::Tcp { host, .. }) = (t.tls, &t.addr) {
                crate::net::tls::server_name(settings, host).map_err(|e| {
                    if settings.server_name.is_some() {
                        self.at_value(&join(&tls_key, "server_name"), e.message)
                    } else {
                        self.at_value(&format!("{key}.targets[{i}]"), e.message)
                    }
                })?;
            }
        }
        Ok(())
    }

    fn route(&self, key: &str, r: RouteFile, upstreams: &[&str]) -> Res<Route> {
        let matcher = match r.matcher {
            Some(m) => self.matcher(&join(key, "match"), m)?,
            None => Match::default(),
        };
        if let Some(p) = &r.strip_prefix {
            if !p.starts_with('/') {
                return Err(self.at_value(&join(key, "strip_prefix"), "must start with `/`"));
            }
        }
        let rewrite = match &r.rewrite {
            Some(t) => {
                let k = join(key, "rewrite");
                if !t.starts_with(['/', '{']) {
                    return Err(
                        self.at_value(&k, "must start with `/` (or a placeholder such as {path})")
                    );
                }
                Some(self.template(&k, t)?)
            }
            None => None,
        };
        let method = match &r.method {
            Some(m) => Some(self.method(&join(key, "method"), m)?),
            None => None,
        };
        let respond_key = join(key, "respond");
        // `respond:` with nothing under it still means "respond" (200, empty body).
        let respond = r
            .respond
            .or_else(|| self.spans.knows(&respond_key).then(RespondFile::default));
        let action = match (respond, &r.upstream) {
            (Some(_), Some(_)) => {
                return Err(self.at_key(
                    &join(key, "upstream"),
                    "a route takes exactly one of `respond` or `upstream`, not both",
                ))
            }
            (None, None) => {
                return Err(self.at_key(key, "a route needs one of `respond` or `upstream`"))
            }
            (Some(resp), None) => Action::Respond(self.respond(&respond_key, resp)?),
            (None, Some(name)) => match upstreams.iter().position(|u| u == name) {
                Some(i) => Action::Proxy(i),
                None => {
                    return Err(self.at_value(
                        &join(key, "upstream"),
                        format!("unknown upstream \"{name}\""),
                    ))
                }
            },
        };
        Ok(Route {
            matcher,
            strip_prefix: r.strip_prefix,
            rewrite,
            method,
            action,
        })
    }

    fn matcher(&self, key: &str, m: MatchFile) -> Res<Match> {
        let mut out = Match::default();
        if let Some(hosts) = &m.host {
            for (i, h) in hosts.items.iter().enumerate() {
                let hm = host_match(h)
                    .map_err(|e| self.at_value(&hosts.item_key(&join(key, "host"), i), e))?;
                out.hosts.push(hm);
            }
        }
        if let Some(p) = m.path {
            if !p.starts_with('/') {
                return Err(self.at_value(&join(key, "path"), "must start with `/`"));
            }
            out.path = Some(p);
        }
        if let Some(except) = &m.except {
            for (i, p) in except.items.iter().enumerate() {
                if !p.starts_with('/') {
                    return Err(self.at_value(
                        &except.item_key(&join(key, "except"), i),
                        "must start with `/`",
                    ));
                }
                out.except.push(p.clone());
            }
        }
        if let Some(methods) = &m.methods {
            for (i, me) in methods.items.iter().enumerate() {
                out.methods
                    .push(self.method(&methods.item_key(&join(key, "methods"), i), me)?);
            }
        }
        if let Some(headers) = m.headers {
            for (name, value) in headers.0 {
                let k = join(&join(key, "headers"), &name);
                self.header_name(&k, &name)?;
                out.headers.push((name.to_ascii_lowercase(), value));
            }
        }
        Ok(out)
    }

    fn respond(&self, key: &str, r: RespondFile) -> Res<Respond> {
        let status = r.status.unwrap_or(200);
        if !(100..=599).contains(&status) {
            return Err(self.at_value(
                &join(key, "status"),
                format!("status {status} is out of range (100-599)"),
            ));
        }
        let body = self.template(&join(key, "body"), r.body.as_deref().unwrap_or(""))?;
        let mut headers = Vec::new();
        for (name, value) in r.headers.map(|h| h.0).unwrap_or_default() {
            let k = join(&join(key, "headers"), &name);
            self.header_name(&k, &name)?;
            headers.push((name, self.header_value(&k, &value)?));
        }
        Ok(Respond {
            status,
            body,
            headers,
        })
    }

    fn upstream(&self, name: String, u: UpstreamFile) -> Res<Upstream> {
        let key = join("upstreams", &name);
        if name.is_empty() {
            return Err(self.at_key(&key, "an upstream name must not be empty"));
        }
        let mut targets = Vec::new();
        let mut schemes = Vec::new();
        for (i, t) in u.targets.unwrap_or_default().into_iter().enumerate() {
            let (target, scheme) = self.target(&format!("{key}.targets[{i}]"), t)?;
            targets.push(target);
            schemes.push(scheme);
        }
        if u.dynamic.is_some() {
            return Err(self.at_key(
                &join(&key, "dynamic"),
                "not supported yet (dynamic upstreams are planned)",
            ));
        }
        let main_targets = targets.len();
        let mut split = None;
        if let Some(sp) = u.split {
            let sk = join(&key, "split");
            for (i, t) in sp.targets.unwrap_or_default().into_iter().enumerate() {
                let (target, scheme) = self.target(&format!("{sk}.targets[{i}]"), t)?;
                targets.push(target);
                schemes.push(scheme);
            }
            if targets.len() == main_targets {
                return Err(self.at_key(&sk, "split needs at least one target"));
            }
            let percent = sp.percent.unwrap_or(0);
            if percent > 100 {
                return Err(self.at_value(&join(&sk, "percent"), "must be between 0 and 100"));
            }
            split = Some(Split {
                start: main_targets,
                percent,
            });
        }
        if main_targets == 0 {
            let k = join(&key, "targets");
            let at = if self.spans.knows(&k) {
                k.as_str()
            } else {
                key.as_str()
            };
            return Err(self.at_key(at, "an upstream needs at least one target"));
        }
        let lb = self.lb(&join(&key, "lb"), u.lb.unwrap_or_default())?;
        let health = match u.health {
            Some(h) => self.health(&join(&key, "health"), h)?,
            None => Health::default(),
        };
        let transport_file = u.transport.unwrap_or_default();
        let https_ports = transport_file.https_ports.clone().unwrap_or_default();
        let mut transport = self.transport(&join(&key, "transport"), transport_file)?;
        self.upstream_tls(&key, &mut targets, &schemes, &mut transport, &https_ports)?;
        let h = u.headers.unwrap_or_default();
        let headers = HeaderOps {
            request: self.header_ops(&join(&key, "headers.request"), h.request)?,
            response: self.header_ops(&join(&key, "headers.response"), h.response)?,
        };
        let forwarded = match u.forwarded.as_deref() {
            None | Some("xff") => Forwarded::Xff,
            Some("rfc7239") => Forwarded::Rfc7239,
            Some("off") => Forwarded::Off,
            Some(other) => {
                return Err(self.at_value(
                    &join(&key, "forwarded"),
                    format!("unknown forwarded mode \"{other}\" (expected xff, rfc7239 or off)"),
                ))
            }
        };
        // flush_interval needs nothing at run time: every upstream read is written to the
        // client at once, which meets any interval (and -1, and event streams).
        let mut buffers = [0u64; 2];
        for (i, (k, v)) in [
            ("request_buffer", &u.request_buffer),
            ("response_buffer", &u.response_buffer),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(Size(n)) = v {
                if *n > MAX_BODY_BUFFER {
                    return Err(self.at_value(
                        &join(&key, k),
                        format!(
                            "at most {} MiB (held per connection)",
                            MAX_BODY_BUFFER >> 20
                        ),
                    ));
                }
                buffers[i] = *n;
            }
        }
        Ok(Upstream {
            name,
            targets,
            split,
            lb,
            health,
            transport,
            headers,
            forwarded,
            request_buffer: buffers[0],
            response_buffer: buffers[1],
        })
    }

    /// The target and its explicit scheme: `Some(true)` for `https://`, `Some(false)` for
    /// `http://`, `None` when none was written.
    fn target(&self, key: &str, t: TargetFile) -> Res<(Target, Option<bool>)> {
        let (address, address_key, weight, max_connections) = match t {
            TargetFile::Address(a) => (a, key.to_string(), None, None),
            TargetFile::Detailed(m) => {
                (m.address, join(key, "address"), m.weight, m.max_connections)
            }
        };
        let addr = parse_target(&address).map_err(|m| self.at_value(&address_key, m))?;
        let weight = weight.unwrap_or(1);
        if weight == 0 {
            return Err(self.at_value(&join(key, "weight"), "must be at least 1"));
        }
        let scheme = address
            .split_once("://")
            .map(|(s, _)| s.eq_ignore_ascii_case("https"));
        let target = Target {
            addr,
            tls: false,
            weight,
            max_connections: max_connections.filter(|&n| n > 0),
        };
        Ok((target, scheme))
    }

    fn lb(&self, key: &str, lb: LbFile) -> Res<Lb> {
        let policy = match lb.policy.as_deref().unwrap_or("random_choose") {
            "random" => Policy::Random,
            "random_choose" => Policy::RandomChoose,
            "first" => Policy::First,
            "round_robin" => Policy::RoundRobin,
            "weighted_round_robin" => Policy::WeightedRoundRobin,
            "least_conn" => Policy::LeastConn,
            "ip_hash" => Policy::IpHash,
            "client_ip_hash" => Policy::ClientIpHash,
            "uri_hash" => Policy::UriHash,
            "query" => Policy::Query,
            "header" => Policy::Header,
            "cookie" => Policy::Cookie,
            "p2c_ewma" => Policy::P2cEwma,
            other => {
                return Err(self.at_value(
                    &join(key, "policy"),
                    format!("unknown lb policy \"{other}\" (expected one of {POLICIES})"),
                ))
            }
        };
        let choose = lb.choose.unwrap_or(2);
        if choose < 2 {
            return Err(self.at_value(&join(key, "choose"), "must be at least 2"));
        }
        let mut lb_key = lb.key.clone().unwrap_or_default();
        match policy {
            Policy::Header | Policy::Query if lb_key.is_empty() => {
                let what = if policy == Policy::Header {
                    "a header name"
                } else {
                    "a query key"
                };
                let k = join(key, "key");
                let at = if self.spans.knows(&k) {
                    k
                } else {
                    join(key, "policy")
                };
                return Err(self.at_value(&at, format!("this policy needs `key`: {what}")));
            }
            Policy::Header => self.header_name(&join(key, "key"), &lb_key)?,
            Policy::Cookie if lb_key.is_empty() => lb_key = DEFAULT_COOKIE.to_string(),
            Policy::Cookie if !is_token(&lb_key) => {
                return Err(self.at_value(&join(key, "key"), "not a valid cookie name"));
            }
            Policy::Query | Policy::Cookie => {}
            _ if !lb_key.is_empty() => {
                return Err(self.at_value(
                    &join(key, "key"),
                    "only the header, query and cookie policies use `key`",
                ));
            }
            _ => {}
        }
        let secret = lb.secret.clone().unwrap_or_default();
        if !secret.is_empty() && policy != Policy::Cookie {
            return Err(self.at_value(&join(key, "secret"), "only the cookie policy uses `secret`"));
        }
        let retry_methods = match &lb.retry_methods {
            Some(list) => list
                .items
                .iter()
                .enumerate()
                .map(|(i, m)| self.method(&list.item_key(&join(key, "retry_methods"), i), m))
                .collect::<Res<Vec<_>>>()?,
            None => vec!["GET".to_string()],
        };
        Ok(Lb {
            policy,
            choose,
            key: lb_key,
            secret,
            retries: lb.retries.unwrap_or(0),
            try_duration: dur(lb.try_duration, None),
            try_interval: dur(lb.try_interval, Some(Duration::from_millis(250)))
                .unwrap_or(Duration::ZERO),
            retry_methods,
        })
    }

    fn health(&self, key: &str, h: HealthFile) -> Res<Health> {
        let active = match h.active {
            Some(a) => Some(self.active_health(&join(key, "active"), a)?),
            None => None,
        };
        let passive = match h.passive {
            Some(p) => self.passive_health(&join(key, "passive"), p)?,
            None => PassiveHealth::default(),
        };
        Ok(Health { active, passive })
    }

    fn active_health(&self, key: &str, a: ActiveHealthFile) -> Res<ActiveHealth> {
        let uri = a.uri.filter(|u| !u.is_empty());
        if let Some(u) = &uri {
            if !u.starts_with('/') || u.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(self.at_value(
                    &join(key, "uri"),
                    "must be an origin-form URI starting with / (no spaces)",
                ));
            }
        }
        let method = match a.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => "GET".to_string(),
            Some("HEAD") => "HEAD".to_string(),
            Some(other) => {
                return Err(self.at_value(
                    &join(key, "method"),
                    format!("unsupported probe method \"{other}\" (expected GET or HEAD)"),
                ))
            }
        };
        let interval = dur(a.interval, secs(10)).unwrap_or_default();
        if interval < MIN_PROBE_INTERVAL {
            return Err(self.at_value(
                &join(key, "interval"),
                format!("must be at least {MIN_PROBE_INTERVAL:?}"),
            ));
        }
        let timeout = dur(a.timeout, secs(5)).unwrap_or(interval);
        let expect_status = match a.expect_status.as_deref() {
            None | Some("") => StatusSet(vec![(200, 299)]),
            Some(s) => {
                StatusSet::parse(s).map_err(|m| self.at_value(&join(key, "expect_status"), m))?
            }
        };
        let body =
            match a.body.as_deref() {
                None | Some("") => None,
                Some(re) => Some(Regex::new(re).map_err(|e| {
                    self.at_value(&join(key, "body"), format!("invalid regex: {e}"))
                })?),
            };
        let mut headers = Vec::new();
        for (name, value) in a.headers.map(|h| h.0).unwrap_or_default() {
            let k = join(&join(key, "headers"), &name);
            self.header_name(&k, &name)?;
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(self.at_value(&k, "header values must not contain CR, LF or NUL"));
            }
            headers.push((name, value));
        }
        let counts = |k: &str, v: Option<u32>| match v.unwrap_or(2) {
            0 => Err(self.at_value(&join(key, k), "must be at least 1")),
            n => Ok(n),
        };
        Ok(ActiveHealth {
            uri,
            port: a.port.unwrap_or(0),
            method,
            interval,
            timeout,
            expect_status,
            body,
            headers,
            fails: counts("fails", a.fails)?,
            passes: counts("passes", a.passes)?,
            max_latency: dur(a.max_latency, None),
        })
    }

    fn passive_health(&self, key: &str, p: PassiveHealthFile) -> Res<PassiveHealth> {
        let max_fails = p.max_fails.unwrap_or(1);
        if max_fails == 0 || max_fails as usize > MAX_PASSIVE_FAILS {
            return Err(self.at_value(
                &join(key, "max_fails"),
                format!("must be between 1 and {MAX_PASSIVE_FAILS}"),
            ));
        }
        let mut unhealthy_status = StatusSet::default();
        if let Some(list) = &p.unhealthy_status {
            for (i, s) in list.items.iter().enumerate() {
                let k = list.item_key(&join(key, "unhealthy_status"), i);
                let set = StatusSet::parse(s).map_err(|m| self.at_value(&k, m))?;
                unhealthy_status.0.extend(set.0);
            }
        }
        Ok(PassiveHealth {
            fail_duration: dur(p.fail_duration, None),
            max_fails,
            unhealthy_status,
            unhealthy_latency: dur(p.unhealthy_latency, None),
            unhealthy_request_count: p.unhealthy_request_count.filter(|&n| n > 0),
        })
    }

    fn transport(&self, key: &str, t: TransportFile) -> Res<Transport> {
        let proxy_protocol = match t.proxy_protocol.as_deref() {
            None | Some("off") => ProxyProtocol::Off,
            Some("v1") => ProxyProtocol::V1,
            Some("v2") => ProxyProtocol::V2,
            Some(other) => {
                return Err(self.at_value(
                    &join(key, "proxy_protocol"),
                    format!("unknown proxy_protocol \"{other}\" (expected off, v1 or v2)"),
                ))
            }
        };
        let tls = match t.tls {
            Some(f) => {
                let cert = f.client_cert.filter(|c| !c.is_empty());
                let private = f.client_key.filter(|k| !k.is_empty());
                let client_cert = if cert.is_none() && private.is_none() {
                    None
                } else {
                    let k = join(key, "tls");
                    Some(self.cert_paths(&k, "client_cert", cert, "client_key", private)?)
                };
                Some(UpstreamTls {
                    ca: f
                        .ca
                        .map(|c| c.items.into_iter().map(PathBuf::from).collect())
                        .unwrap_or_default(),
                    client_cert,
                    server_name: f.server_name.filter(|s| !s.is_empty()),
                    insecure_skip_verify: f.insecure_skip_verify.unwrap_or(false),
                    handshake_timeout: dur(f.handshake_timeout, secs(10)),
                    except_ports: f.except_ports.unwrap_or_default(),
                })
            }
            None => None,
        };
        Ok(Transport {
            dial_timeout: dur(t.dial_timeout, secs(3)),
            response_header_timeout: dur(t.response_header_timeout, None),
            read_timeout: dur(t.read_timeout, None),
            write_timeout: dur(t.write_timeout, None),
            keepalive: t.keepalive.unwrap_or(true),
            idle_timeout: dur(t.idle_timeout, secs(60)),
            max_idle_per_worker: t.max_idle_per_worker.unwrap_or(32),
            tls,
            proxy_protocol,
        })
    }

    fn header_ops(&self, key: &str, ops: Option<Vec<HeaderOpFile>>) -> Res<Vec<HeaderOp>> {
        let mut out = Vec::new();
        for (i, op) in ops.unwrap_or_default().into_iter().enumerate() {
            let item = format!("{key}[{i}]");
            match op {
                HeaderOpFile::Set(fields) => {
                    self.field_ops(&join(&item, "set"), fields, HeaderOp::Set, &mut out)?
                }
                HeaderOpFile::Add(fields) => {
                    self.field_ops(&join(&item, "add"), fields, HeaderOp::Add, &mut out)?
                }
                HeaderOpFile::Remove(names) => {
                    for (j, name) in names.items.iter().enumerate() {
                        let k = names.item_key(&join(&item, "remove"), j);
                        let pattern = name_pattern(name).ok_or_else(|| {
                            let hint = "a name, or a prefix ending in `*`";
                            self.at_value(
                                &k,
                                format!("invalid header name pattern \"{name}\" ({hint})"),
                            )
                        })?;
                        if let NamePattern::Exact(n) = &pattern {
                            self.not_managed(&k, n)?;
                        }
                        out.push(HeaderOp::Remove(pattern));
                    }
                }
                HeaderOpFile::Replace(r) => {
                    let k = join(&item, "replace");
                    self.header_name(&join(&k, "name"), &r.name)?;
                    self.not_managed(&join(&k, "name"), &r.name)?;
                    let regex = Regex::new(&r.regex).map_err(|e| {
                        let text = e.to_string();
                        let reason = text
                            .lines()
                            .find_map(|l| l.strip_prefix("error: "))
                            .unwrap_or(&text)
                            .to_string();
                        self.at_value(&join(&k, "regex"), format!("invalid regex: {reason}"))
                    })?;
                    out.push(HeaderOp::Replace {
                        name: r.name.to_ascii_lowercase(),
                        regex,
                        with: r.with.unwrap_or_default(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// One `set`/`add` op per field, in file order.
    fn field_ops(
        &self,
        key: &str,
        fields: Named<String>,
        op: fn(String, Template) -> HeaderOp,
        out: &mut Vec<HeaderOp>,
    ) -> Res<()> {
        for (name, value) in fields.0 {
            let k = join(key, &name);
            self.header_name(&k, &name)?;
            self.not_managed(&k, &name)?;
            let value = self.header_value(&k, &value)?;
            out.push(op(name, value));
        }
        Ok(())
    }

    fn header_name(&self, key: &str, name: &str) -> Res<()> {
        if is_token(name) {
            Ok(())
        } else {
            Err(self.at_key(key, format!("invalid header name \"{name}\"")))
        }
    }

    /// Framing and hop-by-hop fields belong to the proxy: letting operations touch them would
    /// let a config desynchronise message boundaries (request smuggling).
    fn not_managed(&self, key: &str, name: &str) -> Res<()> {
        if MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name)) {
            return Err(self.at_value(
                key,
                format!("\"{name}\" is managed by the proxy (message framing / hop-by-hop) and cannot be changed"),
            ));
        }
        Ok(())
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

impl Strings {
    /// The key of item `i`: `base[i]` for a list, `base` for a single string.
    fn item_key(&self, base: &str, i: usize) -> String {
        if self.list {
            format!("{base}[{i}]")
        } else {
            base.to_string()
        }
    }
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

fn dur(d: Option<Dur>, default: Option<Duration>) -> Option<Duration> {
    match d {
        Some(Dur(v)) => v,
        None => default,
    }
}

fn size(s: Option<Size>, default: u64) -> u64 {
    s.map_or(default, |Size(n)| n)
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

/// Fields header operations may not touch (see `not_managed`); prefix removals skip them.
pub const MANAGED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// `Server` -> exact `server`; `X-Internal-*` -> prefix `x-internal-`.
fn name_pattern(name: &str) -> Option<NamePattern> {
    let lower = name.to_ascii_lowercase();
    match lower.strip_suffix('*') {
        Some(prefix) if is_token(prefix) && !prefix.contains('*') => {
            Some(NamePattern::Prefix(prefix.to_string()))
        }
        None if is_token(&lower) && !lower.contains('*') => Some(NamePattern::Exact(lower)),
        _ => None,
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `"IP:port"`, `"[v6]:port"`, `"host:port"`, `":port"` (all IPv4 interfaces) or `"unix//path"`.
fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix/") {
        if path.is_empty() {
            return Err("a unix socket needs a path, e.g. \"unix//run/ringway.sock\"".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    if s.contains("://") {
        return Err(format!(
            "invalid listen address \"{s}\" (expected \"host:port\" or \"unix//path\", not a URL)"
        ));
    }
    let (host, port) = split_host_port(s).ok_or_else(|| {
        format!("invalid listen address \"{s}\" (expected \"host:port\", e.g. \"0.0.0.0:8080\")")
    })?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    resolve(host, port).map(ListenAddr::Tcp)
}

/// `"host:port"`, `"http://host[:port]"` or `"unix//path"`.
fn parse_target(s: &str) -> Result<TargetAddr, String> {
    if let Some(path) = s.strip_prefix("unix/") {
        if path.is_empty() {
            return Err("a unix socket needs a path, e.g. \"unix//run/app.sock\"".into());
        }
        return Ok(TargetAddr::Unix(PathBuf::from(path)));
    }
    let (hostport, default_port) = match s.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (rest.strip_suffix('/').unwrap_or(rest), Some(80)),
            "https" => (rest.strip_suffix('/').unwrap_or(rest), Some(443)),
            "h2c" => return Err("not supported yet (HTTP/2 to upstreams is planned)".into()),
            _ => {
                return Err(format!(
                    "unknown scheme \"{scheme}://\" (expected http://, https://, h2c:// or unix//)"
                ))
            }
        },
        None => (s, None),
    };
    if hostport.contains(['/', '?', '#']) {
        return Err(format!("a target address takes no path: \"{s}\""));
    }
    let (host, port) = match (split_host_port(hostport), default_port) {
        (Some(hp), _) => hp,
        (None, None) => return Err(format!("target \"{s}\" needs a port, e.g. \"{s}:8080\"")),
        (None, Some(p)) => match hostport.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => (v6, p),
            None if !hostport.contains(':') => (hostport, p),
            None => return Err(format!("invalid target address \"{s}\"")),
        },
    };
    if host.is_empty() {
        return Err(format!("target \"{s}\" needs a host"));
    }
    let addr = resolve(host, port)?;
    Ok(TargetAddr::Tcp {
        host: hostport.to_string(),
        addr,
    })
}

/// Splits `host:port` / `[v6]:port`; the host comes back without brackets.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let (host, port) = s.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    Some((host, port.parse().ok()?))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("cannot resolve \"{host}\": no addresses")),
        Err(e) => Err(format!("cannot resolve \"{host}\": {e}")),
    }
}

/// `example.com` or `*.example.com`, lower-cased, no port.
fn host_match(h: &str) -> Result<HostMatch, String> {
    let lower = h.to_ascii_lowercase();
    let (name, suffix) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (lower.as_str(), false),
    };
    let valid = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        !suffix && v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !valid {
        return Err(if name.contains(':') && !name.starts_with('[') {
            format!("invalid host \"{h}\" (host matches do not include a port)")
        } else if name.contains('*') {
            format!("invalid host \"{h}\" (a wildcard is only allowed as a leading \"*.\")")
        } else {
            format!("invalid host \"{h}\"")
        });
    }
    Ok(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(lower)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract sits in `shared/` beside the repository (as CI lays it out).
    const CONTRACT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/config.yaml"
    );

    fn contract_text() -> Option<String> {
        let text = std::fs::read_to_string(CONTRACT).ok();
        if text.is_none() {
            eprintln!("skipped: the configuration contract is not at {CONTRACT}");
        }
        text
    }

    /// Strips the leading newline and common indentation so line 1 is the first YAML line.
    fn dedent(s: &str) -> String {
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

    fn ok(yaml: &str) -> Config {
        parse(&dedent(yaml), "t.yaml").unwrap_or_else(|e| panic!("unexpected error: {e}"))
    }

    fn err(yaml: &str) -> ConfigError {
        match parse(&dedent(yaml), "t.yaml") {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e,
        }
    }

    /// Asserts the line, the key and a part of the message.
    #[track_caller]
    fn assert_err(yaml: &str, line: usize, key: &str, message: &str) -> ConfigError {
        let e = err(yaml);
        assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
        assert!(e.message.contains(message), "message of: {e}");
        assert_eq!(e.file, "t.yaml");
        assert!(e.column >= 1, "{e}");
        e
    }

    /// A valid file with `extra` appended to the upstream `api` (indented under it).
    fn with_upstream(extra: &str) -> String {
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

    fn upstream_err(extra: &str) -> ConfigError {
        parse(&with_upstream(extra), "t.yaml").expect_err("expected an error")
    }

    fn routes(c: &Config) -> &[Route] {
        match &c.listeners[0].kind {
            ListenerKind::Http { routes } => routes,
            ListenerKind::Tcp { .. } => panic!("tcp listener"),
        }
    }

    #[test]
    fn streaming_keys_are_accepted_and_buffers_are_bounded() {
        let c = parse(
            &with_upstream("flush_interval: -1\nrequest_buffer: 4KiB\nresponse_buffer: 1MiB"),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.upstreams[0].request_buffer, 4096);
        assert_eq!(c.upstreams[0].response_buffer, 1 << 20);
        let e = upstream_err("request_buffer: 1GiB");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.request_buffer"),
            "{e}"
        );
        assert!(e.message.contains("at most 16 MiB"), "{e}");
    }

    const MINIMAL: &str = r#"
        listeners:
          - listen: 127.0.0.1:8080
            routes:
              - respond: { body: "ok\n" }
    "#;

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
    fn upstream_defaults_follow_the_contract() {
        let c = parse(&with_upstream(""), "t.yaml").unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.name, "api");
        assert_eq!(u.lb.policy, Policy::RandomChoose);
        assert_eq!(u.lb.choose, 2);
        assert_eq!(u.lb.retries, 0);
        assert_eq!(u.lb.try_duration, None);
        assert_eq!(u.lb.try_interval, Duration::from_millis(250));
        assert_eq!(u.lb.retry_methods, ["GET"]);
        let t = &u.transport;
        assert_eq!(t.dial_timeout, Some(Duration::from_secs(3)));
        assert_eq!(t.response_header_timeout, None);
        assert_eq!(t.read_timeout, None);
        assert_eq!(t.write_timeout, None);
        assert!(t.keepalive);
        assert_eq!(t.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(t.max_idle_per_worker, 32);
        assert!(u.headers.request.is_empty() && u.headers.response.is_empty());
        assert_eq!(u.forwarded, Forwarded::Xff);
        assert_eq!(u.targets[0].weight, 1);
        assert_eq!(u.targets[0].max_connections, None);
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
        assert_eq!(m.path.as_deref(), Some("/api"));
        assert_eq!(m.except, ["/api/static"]);
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
    fn error_display_is_file_line_column_key_message() {
        let e = err(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - upstream: api
                  - upstream: apix
            upstreams:
              api:
                targets: [127.0.0.1:9001]
        "#);
        assert_eq!(
            e.to_string(),
            "t.yaml:5:19: listeners[0].routes[1].upstream: unknown upstream \"apix\""
        );
    }

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
    fn bad_duration_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            workers: 1
            limits:
              idle_timeout: 5 minutes
            "#,
            3,
            "limits.idle_timeout",
            "invalid duration \"5 minutes\"",
        );
        assert_eq!(e.column, 17);
        let e = upstream_err("lb:\n  try_interval: 10x\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.lb.try_interval"),
            "{e}"
        );
        assert!(e.message.contains("unknown unit \"x\""), "{e}");
    }

    #[test]
    fn bare_nonzero_integer_duration_needs_a_unit() {
        assert_err(
            "shutdown_timeout: 30\n",
            1,
            "shutdown_timeout",
            "needs a unit",
        );
        assert_err("shutdown_timeout: -5\n", 1, "shutdown_timeout", "negative");
        assert_err(
            "shutdown_timeout: \"30\"\n",
            1,
            "shutdown_timeout",
            "needs a unit",
        );
    }

    #[test]
    fn durations_parse_units_fractions_and_concatenations() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1d"), Duration::from_secs(86400));
        assert_eq!(d("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d(".5ms"), Duration::from_micros(500));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "1m30",
            "-1s",
            "1..5s",
            "5 s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_durations_mean_off() {
        let c = ok(r#"
            limits: { header_read_timeout: 0, idle_timeout: "0s" }
            listeners: [{ listen: "127.0.0.1:1", routes: [{ respond: {} }] }]
        "#);
        assert_eq!(c.limits.header_read_timeout, None);
        assert_eq!(c.limits.idle_timeout, None);
        let c = parse(
            &with_upstream("transport: { dial_timeout: 0, idle_timeout: 0s }"),
            "t",
        )
        .unwrap();
        assert_eq!(c.upstreams[0].transport.dial_timeout, None);
        assert_eq!(c.upstreams[0].transport.idle_timeout, None);
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        let s = |v| parse_size(v).unwrap();
        assert_eq!(s("4096"), 4096);
        assert_eq!(s("10B"), 10);
        assert_eq!(s("64KiB"), 65536);
        assert_eq!(s("1MiB"), 1 << 20);
        assert_eq!(s("1GiB"), 1 << 30);
        assert_eq!(s("4KB"), 4000);
        assert_eq!(s("1MB"), 1_000_000);
        assert_eq!(s("2 kib"), 2048);
        for bad in ["", "KiB", "4XB", "1.5MiB", "-1", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_size_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            limits:
              max_uri_bytes: 8KiB
              max_header_bytes: 64kibibytes
            "#,
            3,
            "limits.max_header_bytes",
            "invalid size \"64kibibytes\"",
        );
        assert_eq!(e.column, 21);
        assert_err(
            "limits: { max_request_body: -1 }\n",
            1,
            "limits.max_request_body",
            "negative",
        );
    }

    #[test]
    fn unknown_upstream_name_is_reported_with_its_line() {
        let e = assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - upstream: apix
            upstreams:
              api:
                targets: [127.0.0.1:9001]
            "#,
            4,
            "listeners[0].routes[0].upstream",
            "unknown upstream \"apix\"",
        );
        assert_eq!(e.column, 19);
    }

    #[test]
    fn route_with_both_respond_and_upstream_is_rejected() {
        assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond: { status: 204 }
                    upstream: api
            upstreams:
              api:
                targets: [127.0.0.1:9001]
            "#,
            5,
            "listeners[0].routes[0].upstream",
            "exactly one of `respond` or `upstream`",
        );
    }

    #[test]
    fn route_with_neither_respond_nor_upstream_is_rejected() {
        let e = assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond: {}
                  - match: { path: /x }
                    strip_prefix: /x
            "#,
            5,
            "listeners[0].routes[1]",
            "needs one of `respond` or `upstream`",
        );
        assert_eq!(e.column, 9);
    }

    #[test]
    fn respond_without_fields_means_an_empty_200() {
        let c = ok(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - respond:
        "#);
        let Action::Respond(r) = &routes(&c)[0].action else {
            panic!("expected respond")
        };
        assert_eq!((r.status, r.body.as_literal()), (200, Some("")));
    }

    #[test]
    fn unknown_lb_policy_lists_the_valid_ones() {
        let e = upstream_err("lb: { policy: fastest }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.lb.policy"),
            "{e}"
        );
        assert_eq!(
            e.message,
            "unknown lb policy \"fastest\" (expected one of random, random_choose, first, \
             round_robin, weighted_round_robin, least_conn, ip_hash, client_ip_hash, uri_hash, \
             query, header, cookie, p2c_ewma)"
        );
    }

    #[test]
    fn every_contract_lb_policy_is_accepted() {
        for p in [
            "random",
            "random_choose",
            "first",
            "round_robin",
            "weighted_round_robin",
            "least_conn",
            "ip_hash",
            "client_ip_hash",
            "uri_hash",
            "cookie",
            "p2c_ewma",
        ] {
            parse(&with_upstream(&format!("lb: {{ policy: {p} }}")), "t").unwrap();
        }
        for p in ["query", "header"] {
            parse(
                &with_upstream(&format!("lb: {{ policy: {p}, key: x }}")),
                "t",
            )
            .unwrap();
        }
    }

    #[test]
    fn header_and_query_policies_need_a_key() {
        let e = upstream_err("lb:\n  policy: header\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.lb.policy"),
            "{e}"
        );
        assert!(e.message.contains("needs `key`"), "{e}");
        let e = upstream_err("lb:\n  policy: query\n  key: \"\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.key"),
            "{e}"
        );
        let e = upstream_err("lb:\n  policy: header\n  key: \"Bad Name\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.key"),
            "{e}"
        );
    }

    #[test]
    fn key_and_secret_are_refused_for_policies_that_do_not_use_them() {
        let e = upstream_err("lb:\n  policy: round_robin\n  key: X-User\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.lb.key"),
            "{e}"
        );
        let e = upstream_err("lb:\n  policy: header\n  key: X-User\n  secret: s\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (11, "upstreams.api.lb.secret"),
            "{e}"
        );
    }

    #[test]
    fn cookie_policy_defaults_its_name_to_lb_and_keeps_the_secret() {
        let c = parse(
            &with_upstream("lb: { policy: cookie, secret: s3cret }"),
            "t",
        )
        .unwrap();
        let lb = &c.upstreams[0].lb;
        assert_eq!(
            (lb.policy, lb.key.as_str(), lb.secret.as_str()),
            (Policy::Cookie, "lb", "s3cret")
        );
        let c = parse(&with_upstream("lb: { policy: cookie, key: sticky }"), "t").unwrap();
        assert_eq!(c.upstreams[0].lb.key, "sticky");
    }

    #[test]
    fn split_targets_follow_the_main_targets() {
        let c = parse(
            &with_upstream("split: { targets: [127.0.0.1:9101, 127.0.0.1:9102], percent: 10 }"),
            "t",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.targets.len(), 3);
        assert_eq!(
            u.split,
            Some(Split {
                start: 1,
                percent: 10
            })
        );
        let e = upstream_err("split:\n  targets: [127.0.0.1:9101]\n  percent: 101\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.split.percent"),
            "{e}"
        );
        let e = upstream_err("split:\n  targets: []\n");
        assert_eq!((e.line, e.key.as_str()), (8, "upstreams.api.split"), "{e}");
        let e = upstream_err("split:\n  targets: [nope]\n");
        assert_eq!(e.key, "upstreams.api.split.targets[0]", "{e}");
    }

    #[test]
    fn status_sets_take_codes_classes_ranges_and_lists() {
        let s = StatusSet::parse("200,204").unwrap();
        assert!(s.contains(200) && s.contains(204) && !s.contains(201));
        let s = StatusSet::parse("2xx").unwrap();
        assert!(s.contains(200) && s.contains(299) && !s.contains(300));
        let s = StatusSet::parse("200-299").unwrap();
        assert!(s.contains(250) && !s.contains(199));
        for bad in ["", "6xx", "299-200", "abc", "99"] {
            assert!(StatusSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn active_health_defaults_and_values_are_validated() {
        let c = parse(&with_upstream("health:\n  active: { uri: /health }"), "t").unwrap();
        let a = c.upstreams[0].health.active.as_ref().unwrap();
        assert_eq!(a.uri.as_deref(), Some("/health"));
        assert_eq!((a.method.as_str(), a.fails, a.passes), ("GET", 2, 2));
        assert_eq!(
            (a.interval, a.timeout),
            (Duration::from_secs(10), Duration::from_secs(5))
        );
        assert!(a.expect_status.contains(204));
        let c = parse(&with_upstream("health:\n  active: { interval: 1s }"), "t").unwrap();
        assert!(c.upstreams[0].health.active.as_ref().unwrap().uri.is_none());
        let cases = [
            (
                "health:\n  active:\n    method: POST",
                10,
                "method",
                "GET or HEAD",
            ),
            (
                "health:\n  active:\n    expect_status: 2zz",
                10,
                "expect_status",
                "invalid status",
            ),
            (
                "health:\n  active:\n    body: \"(\"",
                10,
                "body",
                "invalid regex",
            ),
            (
                "health:\n  active:\n    fails: 0",
                10,
                "fails",
                "at least 1",
            ),
            (
                "health:\n  active:\n    uri: health",
                10,
                "uri",
                "starting with /",
            ),
            (
                "health:\n  active:\n    interval: 1ms",
                10,
                "interval",
                "at least",
            ),
        ];
        for (yaml, line, key, msg) in cases {
            let e = upstream_err(yaml);
            let key = format!("upstreams.api.health.active.{key}");
            assert_eq!((e.line, e.key.as_str()), (line, key.as_str()), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }

    #[test]
    fn passive_health_values_are_validated() {
        let c = parse(
            &with_upstream(
                "health:\n  passive:\n    fail_duration: 10s\n    max_fails: 3\n    \
                 unhealthy_status: [5xx, 429]\n    unhealthy_request_count: 7",
            ),
            "t",
        )
        .unwrap();
        let p = &c.upstreams[0].health.passive;
        assert_eq!(p.fail_duration, Some(Duration::from_secs(10)));
        assert_eq!(p.max_fails, 3);
        assert!(p.unhealthy_status.contains(503) && p.unhealthy_status.contains(429));
        assert!(!p.unhealthy_status.contains(404));
        assert_eq!(p.unhealthy_request_count, Some(7));
        let e = upstream_err("health:\n  passive:\n    max_fails: 0");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.health.passive.max_fails"),
            "{e}"
        );
        let e = upstream_err("health:\n  passive:\n    unhealthy_status: [5xx, 7]");
        assert_eq!(
            e.key, "upstreams.api.health.passive.unhealthy_status[1]",
            "{e}"
        );
    }

    #[test]
    fn lb_choose_below_two_is_rejected() {
        let e = upstream_err("lb: { choose: 1 }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.lb.choose"),
            "{e}"
        );
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
            let e = parse(&text, "t").expect_err(key);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
            assert!(e.message.starts_with("not supported yet"), "{e}");
        }
        let listener: [(&str, usize, &str); 0] = [];
        for (extra, line, key) in listener {
            let text = format!(
                "listeners:\n  - listen: 127.0.0.1:8080\n    {extra}\n    \
                 routes: [{{ respond: {{}} }}]\n"
            );
            let e = parse(&text, "t").expect_err(key);
            assert_eq!((e.line, e.key.as_str()), (line, key), "{e}");
            assert!(e.message.starts_with("not supported yet"), "{e}");
        }
        // Line 8 is the first line after the base file built by `with_upstream`.
        let upstream = [
            ("dynamic:\n  srv: _api._tcp.example", 8, "dynamic"),
            (
                "transport:\n  proxy_protocol: v2",
                9,
                "transport.proxy_protocol",
            ),
        ];
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
        parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
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
    fn tcp_listener_names_its_upstream_and_idle_timeout() {
        let c = ok(r#"
            trusted_proxies: [10.0.0.0/8]
            listeners:
              - name: postgres
                listen: "127.0.0.1:5433"
                protocol: tcp
                proxy_protocol: true
                upstream: db
                idle_timeout: 5m
            upstreams:
              db:
                targets: [127.0.0.1:5432, unix//run/pg.sock]
                transport: { proxy_protocol: v2 }
            "#);
        let l = &c.listeners[0];
        assert!(l.proxy_protocol);
        let ListenerKind::Tcp {
            upstream,
            idle_timeout,
        } = l.kind
        else {
            panic!("expected a tcp listener");
        };
        assert_eq!(upstream, 0);
        assert_eq!(idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(c.upstreams[0].transport.proxy_protocol, ProxyProtocol::V2);
        let c = ok("listeners: [{ listen: \"127.0.0.1:1\", protocol: tcp, upstream: u }]\n\
                    upstreams: { u: { targets: [127.0.0.1:2], transport: { proxy_protocol: v1 } } }\n");
        assert!(!c.listeners[0].proxy_protocol);
        assert!(matches!(
            c.listeners[0].kind,
            ListenerKind::Tcp {
                idle_timeout: None,
                ..
            }
        ));
        assert_eq!(c.upstreams[0].transport.proxy_protocol, ProxyProtocol::V1);
    }

    #[test]
    fn tcp_listener_mistakes_are_located() {
        let up = "upstreams: { db: { targets: [127.0.0.1:5432] } }\n";
        let e = assert_err(
            &format!(
                "listeners:\n  - listen: 127.0.0.1:1\n    protocol: tcp\n    upstream: dbx\n{up}"
            ),
            4,
            "listeners[0].upstream",
            "unknown upstream \"dbx\"",
        );
        assert_eq!(e.column, 15);
        assert_err(
            &format!("listeners:\n  - listen: 127.0.0.1:1\n    protocol: tcp\n{up}"),
            2,
            "listeners[0]",
            "a tcp listener needs an `upstream`",
        );
        assert_err(
            &format!(
                "listeners:\n  - listen: 127.0.0.1:1\n    protocol: tcp\n    upstream: db\n    \
                 routes: [{{ upstream: db }}]\n{up}"
            ),
            5,
            "listeners[0].routes",
            "only valid on http listeners",
        );
        assert_err(
            "listeners: [{ listen: \"127.0.0.1:1\", protocol: udp }]\n",
            1,
            "listeners[0].protocol",
            "unknown protocol \"udp\"",
        );
    }

    #[test]
    fn proxy_protocol_listener_needs_trusted_proxies_and_an_ip_listener() {
        let route = "    routes: [{ respond: {} }]\n";
        assert_err(
            &format!("listeners:\n  - listen: 127.0.0.1:1\n    proxy_protocol: true\n{route}"),
            3,
            "listeners[0].proxy_protocol",
            "needs trusted_proxies",
        );
        assert_err(
            &format!(
                "trusted_proxies: [127.0.0.1]\nlisteners:\n  - listen: unix//tmp/rw.sock\n    \
                 proxy_protocol: true\n{route}"
            ),
            4,
            "listeners[0].proxy_protocol",
            "not supported on unix listeners",
        );
        let c = ok(&format!(
            "trusted_proxies: [127.0.0.1]\nlisteners:\n  - listen: 127.0.0.1:1\n    \
             proxy_protocol: true\n{route}"
        ));
        assert!(c.listeners[0].proxy_protocol);
    }

    #[test]
    fn proxy_protocol_to_upstreams_of_http_routes_is_not_supported_yet() {
        let e = upstream_err("transport:\n  proxy_protocol: v1");
        assert_eq!(
            (e.line, e.key.as_str()),
            (9, "upstreams.api.transport.proxy_protocol")
        );
        assert!(e.message.starts_with("not supported yet"), "{e}");
        assert!(e.message.contains("tcp listeners"), "{e}");
    }

    #[test]
    fn tcp_only_keys_on_an_http_listener_are_rejected() {
        assert_err(
            r#"
            listeners:
              - listen: 127.0.0.1:8080
                upstream: api
                routes: [{ respond: {} }]
            "#,
            3,
            "listeners[0].upstream",
            "protocol: tcp",
        );
    }

    #[test]
    fn contract_file_keys_are_all_known() {
        let Some(text) = contract_text() else { return };
        if let Err(e) = serde_yaml::from_str::<FileConfig>(&text) {
            panic!(
                "{}",
                Validator {
                    file: CONTRACT,
                    spans: &Spans::build(&text)
                }
                .serde_error(&e)
            );
        }
    }

    #[test]
    fn contract_file_fails_only_on_its_example_values_never_on_a_key() {
        let Some(text) = contract_text() else { return };
        // The contract documents every key at once (a route with both respond and upstream,
        // certificate files that do not exist here), so it is refused, but never for a key.
        let e = parse(&text, "config.yaml").expect_err("the contract is documentation");
        assert!(!e.message.contains("unknown key"), "{e}");
        assert!(e.line > 0 && !e.key.is_empty(), "{e}");
    }

    #[test]
    fn upstream_indices_follow_file_order() {
        let c = ok(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - { match: { path: /z }, upstream: zeta }
                  - { match: { path: /a }, upstream: alpha }
                  - upstream: mid
            upstreams:
              zeta: { targets: [127.0.0.1:1] }
              alpha: { targets: [127.0.0.1:2] }
              mid: { targets: [127.0.0.1:3] }
        "#);
        let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        let idx: Vec<usize> = routes(&c)
            .iter()
            .map(|r| match r.action {
                Action::Proxy(i) => i,
                Action::Respond(_) => usize::MAX,
            })
            .collect();
        assert_eq!(idx, [0, 1, 2]);
    }

    #[test]
    fn target_address_forms_are_resolved() {
        let c = parse(
            &with_upstream("").replace(
                "targets: [127.0.0.1:9001]",
                "targets: [\"localhost:9001\", \"[::1]:9002\", \
                 \"http://127.0.0.1\", \"HTTP://[::1]/\"]",
            ),
            "t",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t: Vec<(String, SocketAddr)> = c.upstreams[0]
            .targets
            .iter()
            .map(|t| match &t.addr {
                TargetAddr::Tcp { host, addr } => (host.clone(), *addr),
                TargetAddr::Unix(_) => panic!("unix"),
            })
            .collect();
        assert_eq!(t[0].0, "localhost:9001");
        assert!(t[0].1.ip().is_loopback() && t[0].1.port() == 9001);
        assert_eq!(t[1], ("[::1]:9002".into(), "[::1]:9002".parse().unwrap()));
        assert_eq!(t[2], ("127.0.0.1".into(), "127.0.0.1:80".parse().unwrap()));
        assert_eq!(t[3], ("[::1]".into(), "[::1]:80".parse().unwrap()));
    }

    fn tls_flags(targets: &str, extra: &str) -> Vec<bool> {
        let text = with_upstream(extra).replace("[127.0.0.1:9001]", targets);
        let c = parse(&text, "t").unwrap_or_else(|e| panic!("{e}"));
        c.upstreams[0].targets.iter().map(|t| t.tls).collect()
    }

    #[test]
    fn targets_use_tls_by_scheme_port_443_https_ports_and_tls_block() {
        let targets = r#"["https://127.0.0.1:8443", "127.0.0.1:443", "http://127.0.0.1:443", "127.0.0.1:8443", "127.0.0.1:9000"]"#;
        assert_eq!(tls_flags(targets, ""), [true, true, false, false, false]);
        assert_eq!(
            tls_flags(targets, "transport:\n  https_ports: [8443]"),
            [true, true, false, true, false]
        );
        // A tls block turns TLS on for every target without an explicit scheme, except_ports
        // turns it off again.
        assert_eq!(
            tls_flags(
                targets,
                "transport:\n  tls: { insecure_skip_verify: true, except_ports: [9000, 443] }"
            ),
            [true, false, false, true, false]
        );
        let c = parse(
            &with_upstream("").replace("[127.0.0.1:9001]", "[\"https://localhost\"]"),
            "t",
        )
        .unwrap();
        let up = &c.upstreams[0];
        let TargetAddr::Tcp { host, addr } = &up.targets[0].addr else {
            panic!("tcp")
        };
        assert_eq!((host.as_str(), addr.port()), ("localhost", 443));
        let tls = up
            .transport
            .tls
            .as_ref()
            .expect("defaults for an https target");
        assert!(!tls.insecure_skip_verify && tls.ca.is_empty());
        assert_eq!(tls.handshake_timeout, secs(10));
        assert!(c.upstreams[0].transport.tls.is_some());
    }

    #[test]
    fn plaintext_upstreams_get_no_tls_settings() {
        let c = parse(&with_upstream(""), "t").unwrap();
        assert!(c.upstreams[0].transport.tls.is_none());
        assert!(!c.upstreams[0].targets[0].tls);
    }

    /// Writes a self-signed certificate for `names` and its key (PKCS#8) into `dir`.
    fn write_cert(dir: &std::path::Path, stem: &str, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rw-cfg-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tls_listener(tls: &str) -> String {
        let mut y = String::from("listeners:\n  - listen: 127.0.0.1:8443\n    tls:\n");
        for line in dedent(tls).lines() {
            y.push_str("      ");
            y.push_str(line);
            y.push('\n');
        }
        y.push_str("    routes: [{ respond: {} }]\n");
        y
    }

    #[test]
    fn listener_tls_is_converted_with_defaults() {
        let dir = temp_dir("conv");
        let (cert, key) = write_cert(&dir, "a", &["a.test"]);
        let c = ok(&tls_listener(&format!(
            "certificates:\n  - {{ cert: {cert}, key: {key} }}\n"
        )));
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.certificates[0].cert, PathBuf::from(&cert));
        assert_eq!(tls.min_version, TlsVersion::V12);
        assert_eq!(tls.alpn, ["http/1.1"]);
        assert_eq!(tls.handshake_timeout, secs(10));
        assert!(tls.client_auth.is_none());
        let c = ok(&tls_listener(&format!(
            "certificates:\n  - {{ cert: {cert}, key: {key} }}\nmin_version: \"1.3\"\n\
             handshake_timeout: 2s\nclient_auth: {{ ca: [{cert}], required: false }}\n"
        )));
        let tls = c.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.min_version, TlsVersion::V13);
        assert_eq!(tls.handshake_timeout, secs(2));
        assert!(!tls.client_auth.as_ref().unwrap().required);
        let unquoted = ok(&tls_listener(&format!(
            "certificates: [{{ cert: {cert}, key: {key} }}]\nmin_version: 1.3\n"
        )));
        let tls = unquoted.listeners[0].tls.as_ref().unwrap();
        assert_eq!(tls.min_version, TlsVersion::V13);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn listener_tls_problems_are_reported_at_their_key() {
        let dir = temp_dir("errs");
        let (cert, key) = write_cert(&dir, "a", &["a.test"]);
        let (_, other_key) = write_cert(&dir, "b", &["b.test"]);
        let missing = dir.join("missing.pem").display().to_string();
        let base = "listeners[0].tls";
        let cases = [
            (
                format!("certificates:\n  - cert: {missing}\n    key: {key}\n"),
                5,
                "certificates[0].cert",
                "cannot read",
            ),
            (
                format!("certificates:\n  - cert: {cert}\n    key: {other_key}\n"),
                6,
                "certificates[0].key",
                "does not match the certificate",
            ),
            (
                format!("certificates:\n  - cert: {key}\n    key: {key}\n"),
                5,
                "certificates[0].cert",
                "no CERTIFICATE",
            ),
            (
                format!("certificates:\n  - cert: {cert}\n    key: {cert}\n"),
                6,
                "certificates[0].key",
                "no usable private key",
            ),
            (
                format!("certificates:\n  - cert: {cert}\n"),
                5,
                "certificates[0]",
                "missing key `key`",
            ),
            ("certificates: []\n".to_string(), 4, "certificates", "at least one"),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nmin_version: \"1.1\"\n"),
                5,
                "min_version",
                "unknown TLS version",
            ),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nalpn: [h2]\n"),
                5,
                "alpn[0]",
                "not supported yet",
            ),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nclient_auth: {{ required: true }}\n"),
                5,
                "client_auth",
                "at least one `ca`",
            ),
            (
                format!("certificates: [{{ cert: {cert}, key: {key} }}]\nclient_auth: {{ ca: [{missing}] }}\n"),
                5,
                "client_auth.ca[0]",
                "cannot read",
            ),
        ];
        for (tls, line, key, message) in cases {
            let e = parse(&tls_listener(&tls), "t").expect_err(key);
            assert_eq!(
                (e.line, e.key.as_str()),
                (line, format!("{base}.{key}").as_str()),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
        let unix = tls_listener(&format!("certificates: [{{ cert: {cert}, key: {key} }}]\n"))
            .replace("127.0.0.1:8443", "unix//tmp/rw.sock");
        let e = parse(&unix, "t").unwrap_err();
        assert!(e.message.starts_with("not supported yet"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn upstream_tls_problems_are_reported_at_their_key() {
        let dir = temp_dir("up");
        let (cert, key) = write_cert(&dir, "c", &["client.test"]);
        let missing = dir.join("missing.pem").display().to_string();
        let cases = [
            (format!("transport:\n  tls: {{ ca: [{missing}] }}"), 9, "transport.tls.ca[0]", "cannot read"),
            (format!("transport:\n  tls: {{ client_cert: {cert} }}"), 9, "transport.tls", "missing key `client_key`"),
            (format!("transport:\n  tls: {{ client_cert: {cert}, client_key: {missing} }}"), 9, "transport.tls.client_key", "cannot read"),
            (format!("transport:\n  tls: {{ client_cert: {cert}, client_key: {key}, server_name: \"bad name!\" }}"), 9, "transport.tls.server_name", "invalid name"),
        ];
        for (extra, line, k, message) in cases {
            let e = upstream_err(&extra);
            assert_eq!(
                (e.line, e.key.as_str()),
                (line, format!("upstreams.api.{k}").as_str()),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
        let text = with_upstream("transport:\n  tls: {}")
            .replace("[127.0.0.1:9001]", "[unix//tmp/a.sock]");
        let e = parse(&text, "t").unwrap_err();
        assert!(e.message.starts_with("not supported yet"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_target_addresses_are_rejected_at_their_line() {
        for (target, message) in [
            ("10.0.0.1", "needs a port"),
            ("ftp://10.0.0.1:21", "unknown scheme"),
            ("http://10.0.0.1:8080/api", "no path"),
            ("unix/", "needs a path"),
            ("no-such-host.invalid:80", "cannot resolve"),
        ] {
            let text = with_upstream("").replace(
                "[127.0.0.1:9001]",
                &format!("\n      - 127.0.0.1:1\n      - \"{target}\""),
            );
            let e = parse(&text, "t").expect_err(target);
            assert_eq!(
                (e.line, e.key.as_str()),
                (9, "upstreams.api.targets[1]"),
                "{e}"
            );
            assert!(e.message.contains(message), "{e}");
        }
        let text = with_upstream("").replace(
            "[127.0.0.1:9001]",
            "[{ address: \"127.0.0.1:1\", weight: 0 }]",
        );
        let e = parse(&text, "t").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (7, "upstreams.api.targets[0].weight"),
            "{e}"
        );
    }

    #[test]
    fn upstream_without_targets_is_rejected() {
        let e = err(r#"
            listeners: [{ listen: "127.0.0.1:1", routes: [{ upstream: api }] }]
            upstreams:
              api:
                lb: { policy: first }
        "#);
        assert_eq!((e.line, e.key.as_str()), (3, "upstreams.api"), "{e}");
        assert!(e.message.contains("at least one target"), "{e}");
    }

    #[test]
    fn listen_address_forms_are_parsed() {
        let c = ok(r#"
            listeners:
              - { listen: "0.0.0.0:8080", routes: [{ respond: {} }] }
              - { listen: "[::]:8080", routes: [{ respond: {} }] }
              - { listen: "localhost:8081", routes: [{ respond: {} }] }
              - { listen: ":8082", routes: [{ respond: {} }] }
              - { listen: "unix//tmp/rw.sock", routes: [{ respond: {} }] }
              - { listen: "127.0.0.1:0", routes: [{ respond: {} }] }
              - { name: again, listen: "127.0.0.1:0", routes: [{ respond: {} }] }
        "#);
        let a: Vec<&ListenAddr> = c.listeners.iter().map(|l| &l.addr).collect();
        assert_eq!(*a[0], ListenAddr::Tcp("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(*a[1], ListenAddr::Tcp("[::]:8080".parse().unwrap()));
        assert!(matches!(a[2], ListenAddr::Tcp(s) if s.ip().is_loopback() && s.port() == 8081));
        assert_eq!(*a[3], ListenAddr::Tcp("0.0.0.0:8082".parse().unwrap()));
        assert_eq!(*a[4], ListenAddr::Unix("/tmp/rw.sock".into()));
    }

    #[test]
    fn bad_listen_addresses_are_rejected() {
        for (listen, message) in [
            ("8080", "expected \\\"host:port\\\""),
            ("http://0.0.0.0:8080", "not a URL"),
            ("0.0.0.0:99999", "expected \\\"host:port\\\""),
        ] {
            let text = format!(
                "listeners:\n  - routes: [{{ respond: {{}} }}]\n    listen: \"{listen}\"\n"
            );
            let e = parse(&text, "t").expect_err(listen);
            assert_eq!((e.line, e.key.as_str()), (3, "listeners[0].listen"), "{e}");
            assert!(
                e.to_string().contains(message.replace('\\', "").as_str()),
                "{e}"
            );
        }
        assert_err(
            "listeners:\n  - routes: []\n",
            2,
            "listeners[0]",
            "missing key `listen`",
        );
    }

    #[test]
    fn duplicate_listen_addresses_and_names_are_rejected() {
        assert_err(
            r#"
            listeners:
              - { name: a, listen: "127.0.0.1:8080", routes: [{ respond: {} }] }
              - { name: b, listen: "127.0.0.1:8080", routes: [{ respond: {} }] }
            "#,
            3,
            "listeners[1].listen",
            "duplicate listen address (also used by listener \"a\")",
        );
        assert_err(
            r#"
            listeners:
              - { name: a, listen: "127.0.0.1:8080", routes: [{ respond: {} }] }
              - name: a
                listen: "127.0.0.1:8081"
                routes: [{ respond: {} }]
            "#,
            3,
            "listeners[1].name",
            "duplicate listener name \"a\"",
        );
    }

    #[test]
    fn listeners_are_required_and_need_routes() {
        assert_err("", 1, "listeners", "at least one listener");
        assert_err("workers: 2\n", 1, "listeners", "at least one listener");
        assert_err(
            "listeners:\n  - listen: 127.0.0.1:1\n    routes: []\n",
            3,
            "listeners[0].routes",
            "at least one route",
        );
        assert_err(
            "listeners:\n  - listen: 127.0.0.1:1\n",
            2,
            "listeners[0]",
            "at least one route",
        );
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
    fn invalid_regex_is_reported_at_the_regex() {
        let e = upstream_err(
            "headers:\n  response:\n    - replace: { name: Location, regex: \"(http\" }\n",
        );
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.headers.response[0].replace.regex"),
            "{e}"
        );
        assert!(e.message.starts_with("invalid regex: "), "{e}");
        assert!(!e.message.contains('\n'), "{e}");
    }

    #[test]
    fn header_operations_are_validated() {
        let cases = [
            (
                "- set: { \"Bad Name\": x }",
                "request[0].set.Bad Name",
                "invalid header name",
            ),
            (
                "- add: { X-A: \"a\\nb\" }",
                "request[0].add.X-A",
                "line breaks",
            ),
            (
                "- remove: \"*\"",
                "request[0].remove",
                "invalid header name pattern",
            ),
            (
                "- remove: [X-A, \"X-*-B\"]",
                "request[0].remove[1]",
                "invalid header name pattern",
            ),
            (
                "- delete: [X-A]",
                "request[0].delete",
                "unknown key `delete`",
            ),
            (
                "- { set: { X-A: a }, add: { X-B: b } }",
                "request[0].add",
                "one operation per list item",
            ),
            ("- {}", "request[0]", "empty header operation"),
            (
                "- replace: { name: X-A }",
                "request[0].replace",
                "missing key `regex`",
            ),
        ];
        for (op, key, message) in cases {
            let e = upstream_err(&format!("headers:\n  request:\n    {op}\n"));
            assert_eq!(e.line, 10, "{e}");
            assert_eq!(e.key, format!("upstreams.api.headers.{key}"), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
    }

    #[test]
    fn route_values_are_validated_at_their_line() {
        let base = "listeners:\n  - listen: 127.0.0.1:1\n    routes:\n      - respond: {}\n";
        let cases = [
            (
                "match: { host: \"example.com:8080\" }",
                "match.host",
                "do not include a port",
            ),
            (
                "match: { host: [a.com, \"a.*.com\"] }",
                "match.host[1]",
                "wildcard",
            ),
            ("match: { path: api }", "match.path", "must start with `/`"),
            (
                "match: { except: [/a, b] }",
                "match.except[1]",
                "must start with `/`",
            ),
            (
                "match: { methods: [\"GE T\"] }",
                "match.methods[0]",
                "invalid method",
            ),
            (
                "match: { headers: { \"X A\": b } }",
                "match.headers.X A",
                "invalid header name",
            ),
            ("strip_prefix: api", "strip_prefix", "must start with `/`"),
            ("rewrite: v2", "rewrite", "must start with `/`"),
            (
                "rewrite: \"/{nope}\"",
                "rewrite",
                "unknown placeholder {nope}",
            ),
        ];
        for (extra, key, message) in cases {
            let e = parse(&format!("{base}        {extra}\n"), "t").expect_err(extra);
            assert_eq!(e.line, 5, "{e}");
            assert_eq!(e.key, format!("listeners[0].routes[0].{key}"), "{e}");
            assert!(e.message.contains(message), "{e}");
        }
        let e = parse(&format!("{base}        respond: {{ status: 600 }}\n"), "t").unwrap_err();
        assert!(e.message.contains("duplicate key `respond`"), "{e}");
        let text = concat!(
            "listeners:\n  - listen: 127.0.0.1:1\n    routes:\n",
            "      - respond:\n          status: 600\n"
        );
        let e = parse(text, "t").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (5, "listeners[0].routes[0].respond.status"),
            "{e}"
        );
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

    #[test]
    fn duplicate_key_is_reported_at_the_second_occurrence() {
        assert_err(
            r#"
            workers: 2
            log: { level: info }
            workers: 3
            "#,
            3,
            "workers",
            "duplicate key `workers`",
        );
        let e = upstream_err("headers:\n  request:\n    - set: { X-A: a, X-A: b }\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.headers.request[0].set.X-A"),
            "{e}"
        );
    }

    #[test]
    fn yaml_syntax_error_has_a_location_and_the_nearest_key() {
        let e = err(r#"
            workers: 2
            limits:
              max_headers: [1, 2
            log: {}
        "#);
        assert!(e.line >= 3, "{e}");
        assert!(e.key.starts_with("limits"), "{e}");
        assert!(!e.message.contains(" at line "), "{e}");
        let e = err("workers: 2\nlog: {level: info\nlimits: {}\n");
        assert_eq!((e.line, e.key.as_str()), (3, "log.level"), "{e}");
        let e = err("workers: 2\n- x\n");
        assert_eq!((e.line, e.key.as_str()), (2, "workers"), "{e}");
    }

    #[test]
    fn unknown_forwarded_and_proxy_protocol_values_are_rejected() {
        let e = upstream_err("forwarded: x-forwarded");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.forwarded"),
            "{e}"
        );
        let e = upstream_err("transport: { proxy_protocol: v3 }");
        assert_eq!(
            (e.line, e.key.as_str()),
            (8, "upstreams.api.transport.proxy_protocol"),
            "{e}"
        );
        assert!(e.message.contains("expected off, v1 or v2"), "{e}");
    }
}
