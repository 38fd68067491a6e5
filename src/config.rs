//! Configuration: the YAML file types -> `validate()` -> the runtime types below.
//!
//! The runtime types are what workers consume: every name resolved (routes point at upstream
//! indices), every duration parsed, every default filled in. `0`/"off" values become `None`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use regex::Regex;

use crate::template::Template;

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Resolved worker count (`auto` -> available parallelism), at least 1.
    pub workers: usize,
    pub pin_workers: bool,
    pub driver: Driver,
    pub shutdown_timeout: Duration,
    pub log: Log,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Upstream>,
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
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    Http { routes: Vec<Route> },
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
    pub targets: Vec<Target>,
    pub lb: Lb,
    pub transport: Transport,
    pub headers: HeaderOps,
    pub forwarded: Forwarded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    /// `host` is what the user wrote (for Host-style placeholders and logs); `addr` is resolved.
    Tcp { host: String, addr: SocketAddr },
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Target {
    pub addr: TargetAddr,
    pub weight: u32,
    /// Across all workers; `None` = unlimited.
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Lb {
    pub policy: Policy,
    pub choose: usize,
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
    parse(&text, &path.display().to_string())
}

/// Validates configuration text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let _ = text;
    Err(ConfigError {
        file: file.to_string(),
        line: 0,
        column: 0,
        key: String::new(),
        message: "config parsing not implemented yet".into(),
    })
}
