//! Listen and target addresses as users write them, parsed and resolved.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::config::{defaults, ListenAddr, TargetAddr};

/// `"IP:port"`, `"[v6]:port"`, `"host:port"`, `":port"` (all IPv4 interfaces) or `"unix//path"`.
pub(super) fn parse_listen(s: &str) -> Result<ListenAddr, String> {
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

/// Splits `host:port` / `[v6]:port`; the host comes back without brackets.
pub(super) fn split_host_port(s: &str) -> Option<(&str, u16)> {
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

pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
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

/// `"host[:port]"`, `"http://host[:port]"` (80 by default), `"https://host[:port]"` (443),
/// `"h2c://host[:port]"` (80), `"unix//path"` or `"unix+h2c//path"`.
pub(super) fn parse_target(s: &str) -> Result<TargetAddr, String> {
    if let Some(path) = s
        .strip_prefix("unix/")
        .or_else(|| s.strip_prefix("unix+h2c/"))
    {
        if path.is_empty() {
            return Err("a unix socket needs a path, e.g. \"unix//run/app.sock\"".into());
        }
        return Ok(TargetAddr::Unix(PathBuf::from(path)));
    }
    let (hostport, default_port) = match s.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (rest.strip_suffix('/').unwrap_or(rest), defaults::HTTP_PORT),
            "https" => (rest.strip_suffix('/').unwrap_or(rest), defaults::HTTPS_PORT),
            "h2c" => (rest.strip_suffix('/').unwrap_or(rest), defaults::HTTP_PORT),
            _ => {
                return Err(format!(
                    "unknown scheme \"{scheme}://\" (expected http://, https://, h2c://, unix// or \
                     unix+h2c//)"
                ))
            }
        },
        // Caddy's rule: a bare host is dialed on 80.
        None => (s, defaults::HTTP_PORT),
    };
    if hostport.contains(['/', '?', '#']) {
        return Err(format!("a target address takes no path: \"{s}\""));
    }
    let (host, port) = match split_host_port(hostport) {
        Some(hp) => hp,
        None => match hostport.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => (v6, default_port),
            None if !hostport.contains(':') => (hostport, default_port),
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
