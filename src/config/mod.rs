//! Configuration: the YAML file types -> validation -> the runtime types below.
//!
//! The runtime types are what workers consume: every name resolved (routes point at upstream
//! indices), every duration parsed, every default filled in. `0`/"off" values become `None`.
//!
//! This module is a leaf (workers, tls and the admin page import it); the work of reading a
//! file lives in the submodules and is reached through `Config::load` / `Config::parse`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;

use crate::template::Template;

pub mod defaults;
mod file;
mod load;
mod spans;
#[cfg(test)]
pub(crate) mod test_support;
mod units;
mod validate;

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
    /// Empty: the operating system's trust store (webpki roots when it has none).
    pub ca: Vec<PathBuf>,
    /// Key exchange groups offered, in order, by their lower-case names; empty: rustls's own.
    pub curves: Vec<String>,
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
    /// A request already sent is retried only when it also matches this (path, headers...).
    pub retry_match: Option<Match>,
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
    /// `None` disables passive health (`fail_duration: 0s`); 10s by default.
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
            fail_duration: Some(defaults::FAIL_DURATION),
            max_fails: defaults::PASSIVE_MAX_FAILS,
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
    /// How long an HTTP request waits for a connection slot when every target is full;
    /// `None`: answer 503 at once.
    pub queue_timeout: Option<Duration>,
    /// Connections to all targets together, across workers; `None` = unlimited.
    pub max_connections: Option<u32>,
    /// Largest upstream response head accepted.
    pub max_response_header: usize,
    /// TCP keep-alive probes on upstream connections idle this long (and then this often).
    pub keepalive_interval: Option<Duration>,
    /// The address upstream connections are made from.
    pub local_address: Option<std::net::IpAddr>,
    /// Upgraded (WebSocket) connections are closed after this long; `None` = never.
    pub stream_timeout: Option<Duration>,
    /// TCP targets are reached through this HTTP proxy's CONNECT tunnels.
    pub forward_proxy: Option<SocketAddr>,
    /// Idle pooled connections kept per worker across all targets; `None` = no total cap.
    pub keepalive_idle_conns: Option<usize>,
    /// Upgraded connections of a replaced configuration close this long after a reload;
    /// `None`: they live on.
    pub stream_close_delay: Option<Duration>,
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
