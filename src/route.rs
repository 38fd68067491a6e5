//! Route matching: the first route whose every condition holds wins. Works on the request's
//! bytes in place; nothing is allocated or lower-cased into a copy.

use crate::config::{HostMatch, Match, PathMatch, Route};
use crate::http1::parse::{HeaderIdx, RequestHead};

pub fn find<'a>(
    routes: &'a [Route],
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderIdx],
) -> Option<&'a Route> {
    find_at(routes, buf, head, headers).map(|(_, r)| r)
}

/// Like [`find`], with the route's index in `routes`.
pub fn find_at<'a>(
    routes: &'a [Route],
    buf: &[u8],
    head: &RequestHead,
    headers: &[HeaderIdx],
) -> Option<(usize, &'a Route)> {
    routes
        .iter()
        .enumerate()
        .find(|(_, r)| matches(&r.matcher, buf, head, headers))
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
    if let Some(p) = &m.path {
        if !path_matches(p, path) {
            return false;
        }
    }
    if m.except.iter().any(|e| path_matches(e, path)) {
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

pub fn path_matches(m: &PathMatch, path: &[u8]) -> bool {
    match m {
        PathMatch::Prefix(p) => path_has_prefix(path, p.as_bytes()),
        PathMatch::Exact(p) => path == p.as_bytes(),
        PathMatch::Glob(g) => glob_matches(g.as_bytes(), path),
        PathMatch::Regex(r) => r.regex.is_match(path),
    }
}

/// Whole-input glob: `*` matches any run of bytes (`/` included), everything else itself.
/// Greedy with one backtrack point, so linear in practice and never exponential.
pub fn glob_matches(glob: &[u8], input: &[u8]) -> bool {
    let (mut g, mut i) = (0, 0);
    // Where the last `*` was and how much input it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while i < input.len() {
        if g < glob.len() && glob[g] == b'*' {
            star = Some((g, i));
            g += 1;
        } else if g < glob.len() && glob[g] == input[i] {
            g += 1;
            i += 1;
        } else if let Some((sg, si)) = star {
            g = sg + 1;
            i = si + 1;
            star = Some((sg, si + 1));
        } else {
            return false;
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
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
        HostMatch::Domain(d) => {
            host.len() >= d.len() - 1
                && host[host.len() + 1 - d.len()..].eq_ignore_ascii_case(&d.as_bytes()[1..])
                && (host.len() == d.len() - 1 || host[host.len() - d.len()] == b'.')
        }
        HostMatch::Prefix(p) => {
            host.len() > p.len() && host[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        }
        HostMatch::Regex(r) => r.regex.is_match(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_match_as_nginx_and_caddy_users_expect() {
        // (pattern, path, matches)
        let cases: &[(&str, &str, bool)] = &[
            ("/api", "/api", true),
            ("/api", "/api/x", true),
            ("/api", "/apix", false),
            ("/api/*", "/api/", true),
            ("/api/*", "/api/users/1", true),
            ("/api/*", "/api", false),
            ("/api/*", "/apix/y", false),
            ("/api*", "/apix", true),
            ("*.js", "/static/app.js", true),
            ("*.js", "/static/app.json", false),
            ("/a/*/c", "/a/b/c", true),
            ("/a/*/c", "/a/b/b/c", true),
            ("/a/*/c", "/a/c", false),
            ("/a/*/c", "/a/b/cd", false),
            ("/*/*/z", "/x/y/z", true),
            ("/**", "/", true),
            ("= /x", "/x", true),
            ("= /x", "/x/", false),
            ("= /x", "/x/y", false),
            ("~ ^/api/v[0-9]+", "/api/v2/users", true),
            ("~ ^/api/v[0-9]+", "/api/vx", false),
            ("~ ^/api/v[0-9]+", "/x/api/v2", false),
            ("~ \\.php$", "/index.php", true),
            ("~ \\.php$", "/index.PHP", false),
            ("~* \\.php$", "/index.PHP", true),
        ];
        for &(pattern, path, want) in cases {
            let m = PathMatch::parse(pattern).unwrap();
            assert_eq!(
                path_matches(&m, path.as_bytes()),
                want,
                "{pattern:?} on {path:?}"
            );
        }
    }

    #[test]
    fn host_patterns_match_as_nginx_users_expect() {
        // (pattern, host as sent without port, matches)
        let cases: &[(&str, &str, bool)] = &[
            ("example.com", "EXAMPLE.com.", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            (".example.com", "example.com", true),
            (".example.com", "www.Example.com", true),
            (".example.com", "badexample.com", false),
            (".example.com", "xample.com", false),
            ("www.example.*", "www.example.org", true),
            ("www.example.*", "www.example.co.uk", true),
            ("www.example.*", "www.example.", false),
            ("www.example.*", "www.examples.org", false),
            ("~ ^api[0-9]+\\.test$", "API12.test", true),
            ("~ ^api[0-9]+\\.test$", "api.test", false),
        ];
        for &(pattern, host, want) in cases {
            let m = HostMatch::parse(pattern).unwrap();
            assert_eq!(
                host_matches(&m, host.as_bytes()),
                want,
                "{pattern:?} on {host:?}"
            );
        }
    }

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
