//! The CGI/1.1 parameters of a request, as nginx's `fastcgi_params` (with php's
//! SCRIPT_FILENAME and REDIRECT_STATUS) and Caddy's FastCGI transport set them.

use std::io::Write as _;

use crate::config::Fastcgi;
use crate::http1::forward::ReqInfo;
use crate::http1::parse::{Framing, HeaderIdx, HeaderKind, Version};
use crate::route;

use super::record;

/// A request path split into the script and what follows it.
#[derive(Debug, PartialEq, Eq)]
pub struct ScriptPath {
    /// Percent-decoded, starting with `/`; the index appended to a directory path.
    pub script_name: Vec<u8>,
    pub path_info: Vec<u8>,
}

/// Why a path cannot name a script under the root; each is answered with this status.
pub const BAD_PATH: u16 = 400;

/// Decodes `path` and splits it after the first split extension that ends a segment. Paths
/// that could leave the root are refused: `.`/`..` segments, encoded `/`, NUL, bad escapes.
pub fn split(path: &[u8], fc: &Fastcgi) -> Result<ScriptPath, u16> {
    if path.first() != Some(&b'/') {
        return Err(BAD_PATH);
    }
    let mut decoded = Vec::with_capacity(path.len() + fc.index.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'%' {
            let hex = path.get(i + 1..i + 3).ok_or(BAD_PATH)?;
            let text = std::str::from_utf8(hex).map_err(|_| BAD_PATH)?;
            let v = u8::from_str_radix(text, 16).map_err(|_| BAD_PATH)?;
            // An encoded separator would split differently for us and for the file system.
            if matches!(v, b'/' | b'\\' | 0) {
                return Err(BAD_PATH);
            }
            decoded.push(v);
            i += 3;
        } else {
            if b == 0 {
                return Err(BAD_PATH);
            }
            decoded.push(b);
            i += 1;
        }
    }
    if decoded
        .split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
    {
        return Err(BAD_PATH);
    }
    if decoded.last() == Some(&b'/') {
        decoded.extend_from_slice(fc.index.as_bytes());
    }
    let lower = decoded.to_ascii_lowercase();
    for ext in &fc.split_path {
        let ext = ext.as_bytes();
        let mut from = 0;
        while let Some(at) = find(&lower[from..], ext) {
            let end = from + at + ext.len();
            if end == lower.len() || lower[end] == b'/' {
                let path_info = decoded.split_off(end);
                return Ok(ScriptPath {
                    script_name: decoded,
                    path_info,
                });
            }
            from += at + 1;
        }
    }
    Ok(ScriptPath {
        script_name: decoded,
        path_info: Vec::new(),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The request as the parameters describe it.
pub(crate) struct Params<'a> {
    pub(crate) fc: &'a Fastcgi,
    pub(crate) info: &'a ReqInfo<'a>,
    pub(crate) script: &'a ScriptPath,
    pub(crate) method: &'a [u8],
    pub(crate) framing: Framing,
    pub(crate) version: Version,
    /// The client connection's local address (TCP listeners).
    pub(crate) local: Option<std::net::SocketAddr>,
}

/// Appends the encoded name-value pairs of every parameter to `out`.
pub(crate) fn write(p: &Params, out: &mut Vec<u8>, tmp: &mut Vec<u8>) {
    let (info, fc, script) = (p.info, p.fc, p.script);
    let (buf, head) = (info.buf, info.head);
    let https = info.client.scheme == "https";
    let mut pair = |name: &[u8], value: &[u8]| record::name_value(out, name, value);
    pair(b"GATEWAY_INTERFACE", b"CGI/1.1");
    pair(
        b"SERVER_SOFTWARE",
        concat!("ringway/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    pair(
        b"SERVER_PROTOCOL",
        match p.version {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        },
    );
    pair(b"REQUEST_METHOD", p.method);
    pair(b"REQUEST_SCHEME", info.client.scheme.as_bytes());
    if https {
        pair(b"HTTPS", b"on");
    }
    pair(b"REQUEST_URI", head.target.get(buf));
    pair(b"QUERY_STRING", info.query.unwrap_or_default());
    let root = fc.root.trim_end_matches('/').as_bytes();
    pair(b"DOCUMENT_ROOT", fc.root.as_bytes());
    pair(b"SCRIPT_NAME", &script.script_name);
    tmp.clear();
    tmp.extend_from_slice(root);
    tmp.extend_from_slice(&script.script_name);
    pair(b"SCRIPT_FILENAME", tmp);
    pair(b"PATH_INFO", &script.path_info);
    if !script.path_info.is_empty() {
        tmp.clear();
        tmp.extend_from_slice(root);
        tmp.extend_from_slice(&script.path_info);
        pair(b"PATH_TRANSLATED", tmp);
    }
    tmp.clear();
    tmp.extend_from_slice(&script.script_name);
    tmp.extend_from_slice(&script.path_info);
    pair(b"DOCUMENT_URI", tmp);
    // php's cgi.force_redirect wants proof that a server, not a visitor, ran the script.
    pair(b"REDIRECT_STATUS", b"200");
    tmp.clear();
    if let Framing::Length(n) = p.framing {
        let _ = write!(tmp, "{n}");
    }
    pair(b"CONTENT_LENGTH", tmp);
    let content_type = info.headers.iter().find(|h| {
        h.kind == HeaderKind::Other && h.name.get(buf).eq_ignore_ascii_case(b"content-type")
    });
    pair(
        b"CONTENT_TYPE",
        content_type.map(|h| h.value.get(buf)).unwrap_or_default(),
    );
    tmp.clear();
    tmp.extend_from_slice(info.client.ip_text.as_bytes());
    pair(b"REMOTE_ADDR", tmp);
    tmp.clear();
    if let Some(peer) = info.client.peer {
        let _ = write!(tmp, "{}", peer.port());
    }
    pair(b"REMOTE_PORT", tmp);
    let host = head.host.map(|h| h.get(buf)).unwrap_or_default();
    pair(b"SERVER_NAME", route::host_without_port(host));
    // As nginx: the address and port that took the connection; else the Host's port.
    tmp.clear();
    match (p.local, host_port(host)) {
        (Some(local), _) => {
            let _ = write!(tmp, "{}", local.ip());
            pair(b"SERVER_ADDR", tmp);
            tmp.clear();
            let _ = write!(tmp, "{}", local.port());
        }
        (None, Some(port)) => tmp.extend_from_slice(port),
        (None, None) => tmp.extend_from_slice(if https { b"443" } else { b"80" }),
    }
    pair(b"SERVER_PORT", tmp);
    http_fields(info.headers, buf, out, tmp);
    for (name, value) in &fc.env {
        tmp.clear();
        value.render(info, tmp);
        record::name_value(out, name.as_bytes(), tmp);
    }
}

/// The port of a Host value (`host:port`, `[v6]:port`), if it names one.
fn host_port(host: &[u8]) -> Option<&[u8]> {
    let colon = host.iter().rposition(|&b| b == b':')?;
    let port = &host[colon + 1..];
    let v6_inside = host.contains(&b']') && !host[..colon].ends_with(b"]");
    (!port.is_empty() && port.iter().all(u8::is_ascii_digit) && !v6_inside).then_some(port)
}

/// `HTTP_*` for each request field: upper-case, `-` as `_`, repeated fields joined with
/// ", " (cookies with "; "). Hop-by-hop fields, Content-Type/-Length (they have their own
/// parameters), `Proxy` (httpoxy) and names with `_` (which would pass for a `-` name, as
/// nginx's underscores_in_headers off) are left out.
fn http_fields(headers: &[HeaderIdx], buf: &[u8], out: &mut Vec<u8>, tmp: &mut Vec<u8>) {
    for (i, h) in headers.iter().enumerate() {
        let name = h.name.get(buf);
        let skip = h.hop_by_hop
            || matches!(
                h.kind,
                HeaderKind::ContentLength | HeaderKind::TransferEncoding | HeaderKind::Expect
            )
            || name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"proxy")
            || name.contains(&b'_')
            || !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        // The first field of a name carries all of them.
        let seen = headers[..i]
            .iter()
            .any(|e| e.name.get(buf).eq_ignore_ascii_case(name));
        if skip || seen {
            continue;
        }
        let sep: &[u8] = if name.eq_ignore_ascii_case(b"cookie") {
            b"; "
        } else {
            b", "
        };
        tmp.clear();
        for (n, same) in headers[i..]
            .iter()
            .filter(|e| e.name.get(buf).eq_ignore_ascii_case(name))
            .enumerate()
        {
            if n > 0 {
                tmp.extend_from_slice(sep);
            }
            tmp.extend_from_slice(same.value.get(buf));
        }
        let mut key = Vec::with_capacity(5 + name.len());
        key.extend_from_slice(b"HTTP_");
        key.extend(name.iter().map(|b| match b {
            b'-' => b'_',
            b => b.to_ascii_uppercase(),
        }));
        record::name_value(out, &key, tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fc(split: &[&str]) -> Fastcgi {
        Fastcgi {
            root: "/srv/www".into(),
            split_path: split.iter().map(|s| s.to_string()).collect(),
            index: "index.php".into(),
            env: vec![],
            capture_stderr: false,
        }
    }

    fn ok(script: &str, info: &str) -> Result<ScriptPath, u16> {
        Ok(ScriptPath {
            script_name: script.as_bytes().to_vec(),
            path_info: info.as_bytes().to_vec(),
        })
    }

    #[test]
    fn paths_split_after_the_first_extension_ending_a_segment() {
        let php = fc(&[".php"]);
        let cases = [
            ("/index.php", ok("/index.php", "")),
            ("/", ok("/index.php", "")),
            ("/blog/", ok("/blog/index.php", "")),
            ("/app.php/users/7", ok("/app.php", "/users/7")),
            ("/APP.PHP/x", ok("/APP.PHP", "/x")),
            ("/a.phpx/b.php/c", ok("/a.phpx/b.php", "/c")),
            ("/a.php/b.php/c", ok("/a.php", "/b.php/c")),
            ("/style.css", ok("/style.css", "")),
            ("/caf%C3%A9.php/x%20y", ok("/café.php", "/x y")),
        ];
        for (path, want) in cases {
            assert_eq!(split(path.as_bytes(), &php), want, "{path}");
        }
        let two = fc(&[".php5", ".php"]);
        assert_eq!(split(b"/a.php/b.php5/c", &two), ok("/a.php/b.php5", "/c"));
    }

    #[test]
    fn paths_that_could_leave_the_root_are_refused() {
        let php = fc(&[".php"]);
        for path in [
            "/../etc/passwd",
            "/a/../../x.php",
            "/a/%2e%2e/x.php",
            "/%2E%2E/x.php",
            "/a/./b.php",
            "/a%2fb.php",
            "/a%5Cb.php",
            "/a%00.php",
            "/a%zz.php",
            "/a%2",
            "relative.php",
            "",
        ] {
            assert_eq!(split(path.as_bytes(), &php), Err(BAD_PATH), "{path}");
        }
    }

    #[test]
    fn host_port_is_taken_only_from_a_real_port() {
        let cases: [(&str, Option<&str>); 6] = [
            ("example.com:8080", Some("8080")),
            ("example.com", None),
            ("[::1]:443", Some("443")),
            ("[::1]", None),
            ("example.com:", None),
            ("a:b", None),
        ];
        for (host, want) in cases {
            assert_eq!(
                host_port(host.as_bytes()),
                want.map(str::as_bytes),
                "{host}"
            );
        }
    }
}
