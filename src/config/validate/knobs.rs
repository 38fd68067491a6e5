//! Caddy http transport knobs that shape each dial: `forward_proxy_url` (http://, https://,
//! socks5://, with credentials), `dial_fallback_delay` and the socket buffer sizes.

use super::addr::{resolve, split_host_port};
use super::{Res, Validator};
use crate::config::spans::join;
use crate::config::units::{SignedDur, Size};
use crate::config::{defaults, Fallback, ForwardProxy, ProxyKind};

/// A forward proxy URL taken apart, before its host is resolved.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ProxyUrl {
    pub(super) kind: ProxyKind,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) credentials: Option<(String, String)>,
}

/// `scheme://[user[:password]@]host[:port][/]`: http (port 80), https (443) or socks5 (1080),
/// as Go's proxy dialer reads it. User and password are percent-decoded.
pub(super) fn parse_proxy_url(url: &str) -> Result<ProxyUrl, String> {
    let (scheme, rest) = url.split_once("://").ok_or(
        "expected a URL such as http://host:port, https://host:port or socks5://host:port",
    )?;
    let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => (ProxyKind::Http, defaults::HTTP_PORT),
        "https" => (ProxyKind::Https, defaults::HTTPS_PORT),
        "socks5" | "socks5h" => (ProxyKind::Socks5, defaults::SOCKS_PORT),
        other => {
            return Err(format!(
                "unknown proxy scheme \"{other}://\" (expected http://, https:// or socks5://)"
            ))
        }
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!("a proxy URL takes no path: \"{url}\""));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = match split_host_port(hostport) {
        Some((h, p)) => (h.to_string(), p),
        None if !hostport.contains(':') => (hostport.to_string(), default_port),
        None => match hostport.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => (v6.to_string(), default_port),
            None => return Err(format!("invalid proxy address \"{hostport}\"")),
        },
    };
    if host.is_empty() {
        return Err(format!("proxy URL \"{url}\" needs a host"));
    }
    let credentials = match userinfo {
        None => None,
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            let user = decode(user)?;
            let password = decode(password)?;
            credential_problem(kind, &user, &password)?;
            Some((user, password))
        }
    };
    Ok(ProxyUrl {
        kind,
        host,
        port,
        credentials,
    })
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "proxy credentials are not UTF-8 once percent-decoded".into())
}

/// What the proxy's protocol cannot carry: Basic forbids `:` in the user (RFC 7617 §2);
/// RFC 1929 sends each field with a one-byte length.
fn credential_problem(kind: ProxyKind, user: &str, password: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("proxy credentials need a user name (user:password@host)".into());
    }
    match kind {
        ProxyKind::Socks5 if user.len() > 255 || password.is_empty() || password.len() > 255 => {
            Err("SOCKS5 credentials take a user and a password of 1 to 255 bytes each".into())
        }
        ProxyKind::Http | ProxyKind::Https if user.contains(':') => {
            Err("a proxy user name cannot contain ':' (Basic authentication)".into())
        }
        _ => Ok(()),
    }
}

/// `dial_fallback_delay`: not written -> `None`; negative -> sequential; zero -> the default
/// (Go's reading of zero, so a Caddy value means the same here).
pub(super) fn fallback(v: Option<SignedDur>) -> Option<Fallback> {
    match v? {
        SignedDur(None) => Some(Fallback::Sequential),
        SignedDur(Some(d)) if d.is_zero() => Some(Fallback::Race(defaults::DIAL_FALLBACK_DELAY)),
        SignedDur(Some(d)) => Some(Fallback::Race(d)),
    }
}

/// Why a socket buffer size cannot be had: outside ringway's bounds, or above the kernel's
/// `net.core.[rw]mem_max`, which would cap it without a word.
pub(super) fn buffer_problem(n: u64, sysctl_max: Option<u64>, sysctl: &str) -> Option<String> {
    if !(defaults::MIN_SOCKET_BUFFER..=defaults::MAX_SOCKET_BUFFER).contains(&n) {
        return Some(format!(
            "must be between {} KiB and {} MiB",
            defaults::MIN_SOCKET_BUFFER >> 10,
            defaults::MAX_SOCKET_BUFFER >> 20
        ));
    }
    match sysctl_max {
        Some(max) if n > max => Some(format!(
            "{n} bytes is above net.core.{sysctl} ({max}), which the kernel would cap it to: \
             raise the sysctl or ask for less"
        )),
        _ => None,
    }
}

impl Validator<'_> {
    /// `transport.forward_proxy_url`, its host resolved now.
    pub(super) fn forward_proxy(&self, key: &str, url: Option<&str>) -> Res<Option<ForwardProxy>> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let k = join(key, "forward_proxy_url");
        let p = parse_proxy_url(url).map_err(|m| self.at_value(&k, m))?;
        let addr = resolve(&p.host, p.port).map_err(|m| self.at_value(&k, m))?;
        Ok(Some(ForwardProxy {
            kind: p.kind,
            host: p.host,
            addr,
            credentials: p.credentials,
        }))
    }

    /// `transport.read_buffer` / `write_buffer`: SO_RCVBUF / SO_SNDBUF of upstream sockets.
    pub(super) fn socket_buffer(
        &self,
        key: &str,
        name: &str,
        v: Option<Size>,
    ) -> Res<Option<usize>> {
        let Some(Size(n)) = v else {
            return Ok(None);
        };
        let sysctl = if name == "read_buffer" {
            "rmem_max"
        } else {
            "wmem_max"
        };
        let max = std::fs::read_to_string(format!("/proc/sys/net/core/{sysctl}"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        match buffer_problem(n, max, sysctl) {
            Some(m) => Err(self.at_value(&join(key, name), m)),
            None => Ok(Some(n as usize)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn url(kind: ProxyKind, host: &str, port: u16, creds: Option<(&str, &str)>) -> ProxyUrl {
        ProxyUrl {
            kind,
            host: host.into(),
            port,
            credentials: creds.map(|(u, p)| (u.into(), p.into())),
        }
    }

    #[test]
    fn proxy_urls_are_taken_apart_as_go_reads_them() {
        use ProxyKind::*;
        let ok = [
            ("http://proxy:3128", url(Http, "proxy", 3128, None)),
            ("http://proxy", url(Http, "proxy", 80, None)),
            ("HTTPS://proxy/", url(Https, "proxy", 443, None)),
            ("socks5://10.0.0.1", url(Socks5, "10.0.0.1", 1080, None)),
            ("socks5h://[::1]:9050", url(Socks5, "::1", 9050, None)),
            ("socks5://[::1]", url(Socks5, "::1", 1080, None)),
            (
                "http://al%40ice:p%3Ass%20w@proxy:8080",
                url(Http, "proxy", 8080, Some(("al@ice", "p:ss w"))),
            ),
            (
                "http://bob@proxy",
                url(Http, "proxy", 80, Some(("bob", ""))),
            ),
            (
                "socks5://u:p@w@proxy:1",
                url(Socks5, "proxy", 1, Some(("u", "p@w"))),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse_proxy_url(text).as_ref(), Ok(&want), "{text}");
        }
        let bad = [
            ("proxy:3128", "expected a URL"),
            ("ftp://proxy", "unknown proxy scheme"),
            ("http://proxy:3128/x", "no path"),
            ("http://proxy:99999", "invalid proxy address"),
            ("http://:3128", "needs a host"),
            ("http://:pw@proxy", "need a user name"),
            ("http://a%3Ab:pw@proxy", "cannot contain ':'"),
            ("socks5://user@proxy", "1 to 255 bytes"),
            ("http://%FF:x@proxy", "not UTF-8"),
        ];
        for (text, want) in bad {
            let e = parse_proxy_url(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn fallback_delay_reads_negative_as_sequential_and_zero_as_the_default() {
        let ms = |n| Duration::from_millis(n);
        for (written, want) in [
            (None, None),
            (Some(SignedDur(None)), Some(Fallback::Sequential)),
            (
                Some(SignedDur(Some(Duration::ZERO))),
                Some(Fallback::Race(ms(300))),
            ),
            (Some(SignedDur(Some(ms(50)))), Some(Fallback::Race(ms(50)))),
        ] {
            assert_eq!(fallback(written), want);
        }
    }

    #[test]
    fn socket_buffers_are_bounded_by_ringway_and_the_kernel() {
        for (n, max, problem) in [
            (4096, Some(212_992), None),
            (512, None, Some("between 1 KiB and 64 MiB")),
            (128 << 20, None, Some("between 1 KiB and 64 MiB")),
            (
                1 << 20,
                Some(212_992),
                Some("above net.core.rmem_max (212992)"),
            ),
            (1 << 20, None, None),
        ] {
            let got = buffer_problem(n, max, "rmem_max");
            match problem {
                None => assert_eq!(got, None, "{n}"),
                Some(p) => assert!(got.as_deref().unwrap_or("").contains(p), "{n}: {got:?}"),
            }
        }
    }
}
