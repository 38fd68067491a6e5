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

pub mod access_format;
pub mod defaults;
pub use pattern::{HostMatch, PathMatch, Pattern};
mod doc_keys;
mod file;
mod load;
pub mod pattern;
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
    /// The shape of access log lines (defaults to `format`).
    pub access_format: access_format::AccessFormat,
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
    /// `protocols`: the HTTP versions an http listener serves (unused on tcp listeners).
    pub protocols: Protocols,
    /// `http2`: per-connection limits for HTTP/2 clients.
    pub http2: Http2Limits,
}

/// `listeners[].protocols`: which HTTP versions a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub h1: bool,
    /// HTTP/2 offered by TLS ALPN.
    pub h2: bool,
    /// HTTP/2 in cleartext with prior knowledge (the connection preface).
    pub h2c: bool,
}

/// `listeners[].http2`: each a bound per HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    /// Per-stream receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_window: u32,
    /// Largest decoded header block (SETTINGS_MAX_HEADER_LIST_SIZE).
    pub max_header_list: u32,
    /// Streams a client may reset per second before the connection is closed.
    pub max_resets_per_s: u32,
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
    /// For the access log; `None` logs the route's index.
    pub name: Option<String>,
    pub matcher: Match,
    pub strip_prefix: Option<String>,
    /// New path and query for the upstream request.
    pub rewrite: Option<Template>,
    pub method: Option<String>,
    pub action: Action,
    /// `handle_response`: tried in order on the upstream response head.
    pub handle_response: Vec<ResponseRule>,
    /// `error_pages`: error answers replaced by files.
    pub error_pages: Vec<ErrorPage>,
}

/// Every condition given must hold; an empty `Match` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Match {
    pub hosts: Vec<HostMatch>,
    pub path: Option<PathMatch>,
    /// Paths that do not match, whatever else does.
    pub except: Vec<PathMatch>,
    /// Upper-case method names.
    pub methods: Vec<String>,
    /// Exact, case-sensitive value match on a case-insensitive name.
    pub headers: Vec<(String, String)>,
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

/// One `handle_response` rule: every condition given must hold on the upstream response head.
#[derive(Debug, Clone)]
pub struct ResponseRule {
    /// Empty: any status.
    pub status: StatusSet,
    /// Lower-case names; every one must match.
    pub headers: Vec<(String, HeaderMatch)>,
    pub action: RuleAction,
    /// Lower-case names of upstream headers kept on `respond` / `upstream` answers.
    pub copy_headers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `"*"`: the field is present, whatever its value.
    Present,
    /// The exact (case-sensitive) value of one of the fields of that name.
    Exact(String),
}

#[derive(Debug, Clone)]
pub enum RuleAction {
    /// A new status line; the upstream's headers and body stay.
    ReplaceStatus(u16),
    /// A local answer; the upstream body is not forwarded. Templates may use `{rp.*}`.
    Respond(Respond),
    /// The original request goes to another upstream (X-Accel-Redirect).
    Upstream {
        /// Index into `Config::upstreams`.
        upstream: usize,
        /// New path and query; may use `{rp.*}`.
        rewrite: Option<Template>,
        method: Option<String>,
    },
}

/// An `error_pages` entry: a file read when the configuration was loaded.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    /// 4xx/5xx codes or classes the page replaces.
    pub status: StatusSet,
    pub path: PathBuf,
    /// From the file name's extension.
    pub content_type: &'static str,
    pub body: std::sync::Arc<[u8]>,
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
    /// Targets discovered from DNS by the control side, merged after the main `targets`.
    pub dynamic: Option<Dynamic>,
}

/// `upstreams.*.dynamic`: names resolved off the data path, again every `refresh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dynamic {
    /// `a: {name, port}`: every A and AAAA address of `name`, at `port`.
    pub a: Option<(String, u16)>,
    /// An SRV name: each record's target host at the record's port.
    pub srv: Option<String>,
    pub refresh: Duration,
    /// Empty: the system's `/etc/resolv.conf` (its `search` and `ndots` too).
    pub resolvers: Vec<SocketAddr>,
}

/// Where a target came from (the admin endpoint shows it; SRV priority tiers selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSource {
    /// Written in `targets`, an address or a name resolved once at load.
    #[default]
    Static,
    /// A `targets` hostname, re-resolved: one target per address.
    Hostname,
    /// `dynamic.a`.
    A,
    /// `dynamic.srv`: only the lowest priority with a healthy target takes traffic.
    Srv { priority: u16 },
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
    /// Spoken to in cleartext HTTP/2 with prior knowledge (`h2c://`, `unix+h2c//`, or a
    /// plaintext target of an upstream whose `transport.versions` is `["2"]`).
    pub h2c: bool,
    pub weight: u32,
    /// Across all workers; `None` = unlimited.
    pub max_connections: Option<u32>,
    pub source: TargetSource,
    /// A hostname's other addresses, in resolution order, dialed after `addr` RFC 8305-style
    /// (`transport.dial_fallback_delay`); empty otherwise.
    pub fallbacks: Vec<SocketAddr>,
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
    /// TCP targets are reached through this forward proxy (`forward_proxy_url`).
    pub forward_proxy: Option<ForwardProxy>,
    /// `dial_fallback_delay`: a hostname target stays one target that dials all the addresses
    /// its name resolves to, RFC 8305-style; `None`: one target per address.
    pub fallback: Option<Fallback>,
    /// With `Expect: 100-continue`, how long the upstream has to answer the request head
    /// before the body is sent anyway; `None`: the body waits for its 100 (or final answer).
    pub expect_continue_timeout: Option<Duration>,
    /// SO_RCVBUF / SO_SNDBUF of upstream sockets (`read_buffer` / `write_buffer`); `None`:
    /// the kernel's autotuning.
    pub read_buffer: Option<usize>,
    pub write_buffer: Option<usize>,
    /// Idle pooled connections kept per worker across all targets; `None` = no total cap.
    pub keepalive_idle_conns: Option<usize>,
    /// Upgraded connections of a replaced configuration close this long after a reload;
    /// `None`: they live on.
    pub stream_close_delay: Option<Duration>,
    /// `protocol: fastcgi`: targets are FastCGI applications (php-fpm), not HTTP servers.
    pub fastcgi: Option<Fastcgi>,
    /// `versions`: what TLS targets are offered by ALPN, most preferred first (never empty).
    pub versions: Vec<HttpVersion>,
}

/// An HTTP version ringway speaks to upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http11,
    Http2,
}

impl Transport {
    /// The ALPN protocol names offered to TLS targets, in preference order.
    pub fn alpn(&self) -> Vec<Vec<u8>> {
        self.versions
            .iter()
            .map(|v| match v {
                HttpVersion::Http11 => b"http/1.1".to_vec(),
                HttpVersion::Http2 => b"h2".to_vec(),
            })
            .collect()
    }

    /// `versions: ["2"]`: HTTP/2 or nothing (plaintext targets then speak h2c).
    pub fn h2_only(&self) -> bool {
        !self.versions.contains(&HttpVersion::Http11)
    }

    /// Whether target `t` may be spoken to in HTTP/2 (h2c, or offered by ALPN).
    pub fn may_speak_h2(&self, t: &Target) -> bool {
        t.h2c || (t.tls && self.versions.contains(&HttpVersion::Http2))
    }
}

/// `transport.fastcgi`: how a request becomes FastCGI parameters.
#[derive(Debug, Clone)]
pub struct Fastcgi {
    /// Absolute document root; SCRIPT_FILENAME = root + script path.
    pub root: String,
    /// The path splits after the first of these (lower-case, each starting with `.`).
    pub split_path: Vec<String>,
    /// Appended to paths that end in `/`.
    pub index: String,
    /// Extra parameters, rendered per request.
    pub env: Vec<(String, Template)>,
    /// Log what the application writes to FastCGI stderr at warn (else at debug).
    pub capture_stderr: bool,
}

/// How a target's several addresses are dialed (`transport.dial_fallback_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The next address is tried this long after the previous one started (or at once when
    /// every attempt so far failed); the first to connect wins.
    Race(Duration),
    /// A negative delay: one address at a time, each after the previous one failed.
    Sequential,
}

/// `transport.forward_proxy_url`: the first hop of every TCP dial.
#[derive(Clone, PartialEq, Eq)]
pub struct ForwardProxy {
    pub kind: ProxyKind,
    /// The proxy's host as written (the TLS server name of an `https://` proxy).
    pub host: String,
    pub addr: SocketAddr,
    /// Percent-decoded `user:password` of the URL.
    pub credentials: Option<(String, String)>,
}

impl std::fmt::Debug for ForwardProxy {
    // The password stays out of logs and configuration dumps.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: an HTTP CONNECT tunnel.
    Http,
    /// `https://`: TLS to the proxy, then CONNECT inside it.
    Https,
    /// `socks5://`: RFC 1928 CONNECT, names resolved by the proxy.
    Socks5,
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
