//! Route matching: the first route whose every condition holds wins. Works on the request's
//! bytes in place; nothing is allocated or lower-cased into a copy.

use crate::config::{HostMatch, Match, Route};
use crate::http1::parse::{HeaderIdx, RequestHead};

pub fn find<'a>(
    routes: &'a [Route],
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderIdx],
) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| matches(&r.matcher, buf, head, headers))
}

/// Whether a request meets every condition of `m` (routes, and `lb.retry_match`).
pub fn matches(m: &Match, buf: &[u8], head: &RequestHead, headers: &[HeaderIdx]) -> bool {
    if !m.methods.is_empty() {
        let method = head.method.get(buf);
        if !m.methods.iter().any(|x| x.as_bytes() == method) {
            return false;
        }
    }
    let path = head.path.get(buf);
    if let Some(prefix) = &m.path {
        if !path_has_prefix(path, prefix.as_bytes()) {
            return false;
        }
    }
    if m.except.iter().any(|e| path_has_prefix(path, e.as_bytes())) {
        return false;
    }
    if !m.hosts.is_empty() {
        let Some(host) = head.host.map(|h| host_without_port(h.get(buf))) else {
            return false;
        };
        if !m.hosts.iter().any(|h| host_matches(h, host)) {
            return false;
        }
    }
    m.headers.iter().all(|(name, value)| {
        headers.iter().any(|h| {
            h.name.get(buf).eq_ignore_ascii_case(name.as_bytes())
                && h.value.get(buf) == value.as_bytes()
        })
    })
}

/// Prefix match on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
pub fn path_has_prefix(path: &[u8], prefix: &[u8]) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    path.len() == prefix.len() || prefix.ends_with(b"/") || path[prefix.len()] == b'/'
}

/// The path with `prefix` removed when it matches on a segment boundary; `/` when nothing is
/// left. Other paths pass through unchanged.
pub fn strip_prefix<'a>(path: &'a [u8], prefix: &[u8]) -> &'a [u8] {
    if !path_has_prefix(path, prefix) {
        return path;
    }
    let rest = &path[prefix.len()..];
    if rest.is_empty() {
        b"/"
    } else if rest[0] != b'/' {
        // Prefix ended in '/': keep the rest rooted.
        &path[prefix.len() - 1..]
    } else {
        rest
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

fn host_matches(m: &HostMatch, host: &[u8]) -> bool {
    let host = host.strip_suffix(b".").unwrap_or(host);
    match m {
        HostMatch::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
        HostMatch::Suffix(s) => {
            host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_prefix_matches_only_on_segment_boundaries() {
        assert!(path_has_prefix(b"/api", b"/api"));
        assert!(path_has_prefix(b"/api/x", b"/api"));
        assert!(!path_has_prefix(b"/apix", b"/api"));
        assert!(path_has_prefix(b"/api/x", b"/api/"));
        assert!(path_has_prefix(b"/anything", b"/"));
    }

    #[test]
    fn strip_prefix_keeps_the_rest_rooted() {
        assert_eq!(strip_prefix(b"/api/users", b"/api"), b"/users");
        assert_eq!(strip_prefix(b"/api", b"/api"), b"/");
        assert_eq!(strip_prefix(b"/api/users", b"/api/"), b"/users");
        assert_eq!(strip_prefix(b"/apix", b"/api"), b"/apix");
    }

    #[test]
    fn host_port_is_ignored_and_wildcards_need_a_label() {
        assert_eq!(host_without_port(b"example.com:8080"), b"example.com");
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
        let wild = HostMatch::Suffix(".example.com".into());
        assert!(host_matches(&wild, b"a.example.com"));
        assert!(host_matches(&wild, b"A.Example.COM"));
        assert!(!host_matches(&wild, b"example.com"));
        assert!(host_matches(
            &HostMatch::Exact("example.com".into()),
            b"EXAMPLE.com."
        ));
    }
}
