//! Path and host patterns of route matches, parsed from the forms nginx, Caddy and HAProxy
//! users write. Matching them against a request is `route`'s job.

use regex::bytes::{Regex, RegexBuilder};

/// A compiled regex that compares equal by its source text (for config comparisons in tests).
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// Bound on a compiled route regex: a pattern is written by the operator, but a runaway
/// repetition should be refused at validate time rather than bloat every worker.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl Pattern {
    fn compile(source: &str, case_insensitive: bool) -> Result<Pattern, String> {
        let regex = RegexBuilder::new(source)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let text = e.to_string();
                // The last line names the problem; the ones before draw the pattern.
                let reason = text.lines().find_map(|l| l.strip_prefix("error: "));
                format!(
                    "invalid regex \"{source}\": {}",
                    reason.map_or_else(|| one_line(&text), str::to_string)
                )
            })?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }
}

/// Collapses a multi-line message (regex errors draw a caret under the pattern) into one line.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How `match.path` (and each `match.except` entry) is compared with the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `/api`: prefix on segment boundaries (matches `/api` and `/api/x`, not `/apix`).
    Prefix(String),
    /// `= /x`: the whole path, exactly.
    Exact(String),
    /// `/api/*`, `*.js`: `*` stands for any run of bytes, `/` included; the rest is literal
    /// and the whole path must match.
    Glob(String),
    /// `~ ^/api/v[0-9]+` (case-sensitive) or `~* \.jpg$` (case-insensitive): found anywhere
    /// in the path unless anchored.
    Regex(Pattern),
}

/// Characters that cannot appear unencoded in a request path: written in a plain path they
/// are regex or template syntax the user meant as a pattern.
const NOT_IN_PATHS: &[char] = &['^', '[', ']', '|', '\\', '{', '}', '"', '<', '>', '`', ' '];

impl PathMatch {
    pub fn parse(text: &str) -> Result<PathMatch, String> {
        if let Some(re) = text.strip_prefix("~*") {
            return Ok(PathMatch::Regex(Pattern::compile(nonempty(re)?, true)?));
        }
        if let Some(rest) = text.strip_prefix("^~") {
            // nginx's "prefix, and skip regexes": routes are tried in order here anyway.
            return PathMatch::parse(rest.trim_start());
        }
        if let Some(re) = text.strip_prefix('~') {
            return Ok(PathMatch::Regex(Pattern::compile(nonempty(re)?, false)?));
        }
        if let Some(exact) = text.strip_prefix('=') {
            let exact = exact.trim_start();
            rooted(exact)?;
            if exact.contains('*') {
                return Err(format!(
                    "\"{text}\": an exact path takes no `*` (write `{}` for a glob)",
                    exact
                ));
            }
            plain(exact)?;
            return Ok(PathMatch::Exact(exact.to_string()));
        }
        rooted(text)?;
        plain(text)?;
        Ok(if text.contains('*') {
            PathMatch::Glob(text.to_string())
        } else {
            PathMatch::Prefix(text.to_string())
        })
    }
}

fn nonempty(re: &str) -> Result<&str, String> {
    let re = re.trim_start();
    if re.is_empty() {
        return Err("a regex path needs a pattern after `~` (e.g. `~ ^/api/v[0-9]+`)".into());
    }
    Ok(re)
}

fn rooted(p: &str) -> Result<(), String> {
    if p.starts_with('/') || p.starts_with('*') {
        Ok(())
    } else {
        Err(format!(
            "\"{p}\" must start with `/` (or be `= /exact`, `~ regex`, `~* regex`)"
        ))
    }
}

fn plain(p: &str) -> Result<(), String> {
    match p.chars().find(|c| NOT_IN_PATHS.contains(c)) {
        Some(c) => Err(format!(
            "\"{p}\" has `{c}`, which is not literal in a path: for a regex write `~ {p}` \
             (`~*` ignores case); `*` globs and `= /exact` are the other forms"
        )),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com` (lower-case): matches `a.example.com`, not `example.com`.
    Suffix(String),
    /// nginx's `.example.com`, stored as `.example.com`: `example.com` and every subdomain.
    Domain(String),
    /// nginx's `www.example.*`, stored as `www.example.`: any last labels after the prefix.
    Prefix(String),
    /// `~ ^api[0-9]+\.example\.com$`: case-insensitive, found anywhere unless anchored.
    Regex(Pattern),
}

const HOST_FORMS: &str =
    "expected example.com, *.example.com, .example.com, www.example.* or ~ regex";

impl HostMatch {
    /// `example.com`, `*.example.com`, `.example.com`, `www.example.*` or `~ regex`; lower-cased,
    /// no port.
    pub fn parse(h: &str) -> Result<HostMatch, String> {
        if let Some(re) = h.strip_prefix('~') {
            let re = re.strip_prefix('*').unwrap_or(re).trim_start();
            if re.is_empty() {
                return Err(format!(
                    "a regex host needs a pattern after `~` ({HOST_FORMS})"
                ));
            }
            return Ok(HostMatch::Regex(Pattern::compile(re, true)?));
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v6) = lower.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return match v6.parse::<std::net::Ipv6Addr>() {
                Ok(_) => Ok(HostMatch::Exact(lower)),
                Err(_) => Err(format!("invalid host \"{h}\"")),
            };
        }
        let (name, make): (&str, fn(String) -> HostMatch) =
            if let Some(rest) = lower.strip_prefix("*.") {
                (rest, |n| HostMatch::Suffix(format!(".{n}")))
            } else if let Some(rest) = lower.strip_suffix(".*") {
                (rest, |n| HostMatch::Prefix(format!("{n}.")))
            } else if let Some(rest) = lower.strip_prefix('.') {
                (rest, |n| HostMatch::Domain(format!(".{n}")))
            } else {
                (lower.as_str(), HostMatch::Exact)
            };
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if valid {
            return Ok(make(name.to_string()));
        }
        Err(if name.contains(':') && !name.starts_with('[') {
            format!("invalid host \"{h}\" (host matches do not include a port)")
        } else if name.contains('*') {
            format!(
                "invalid host \"{h}\" (a wildcard is a whole first or last label; {HOST_FORMS})"
            )
        } else if name.contains(['^', '$', '[', '(', '|', '\\', '+', '?']) {
            format!("invalid host \"{h}\" (for a regex write `~ {h}`)")
        } else {
            format!("invalid host \"{h}\" ({HOST_FORMS})")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_forms_parse_to_their_kinds() {
        let cases: &[(&str, &str)] = &[
            ("/api", "prefix /api"),
            ("/", "prefix /"),
            ("/api/*", "glob /api/*"),
            ("*.js", "glob *.js"),
            ("/a/*/b", "glob /a/*/b"),
            ("= /x", "exact /x"),
            ("=/x", "exact /x"),
            ("^~ /static", "prefix /static"),
            ("~ ^/api/v[0-9]+", "regex ^/api/v[0-9]+"),
            ("~^/x$", "regex ^/x$"),
            ("~* \\.JPG$", "regex* \\.JPG$"),
        ];
        for (text, want) in cases {
            let got = match PathMatch::parse(text).unwrap() {
                PathMatch::Prefix(p) => format!("prefix {p}"),
                PathMatch::Exact(p) => format!("exact {p}"),
                PathMatch::Glob(p) => format!("glob {p}"),
                PathMatch::Regex(p) if p.regex.is_match(b"/A.jpg") => {
                    format!("regex* {}", p.source)
                }
                PathMatch::Regex(p) => format!("regex {}", p.source),
            };
            assert_eq!(&got, want, "{text}");
        }
    }

    #[test]
    fn bad_paths_are_refused_with_a_hint() {
        let cases: &[(&str, &str)] = &[
            ("api", "must start with `/`"),
            ("= api", "must start with `/`"),
            ("= /a/*", "an exact path takes no `*`"),
            ("~ ^/api/(", "invalid regex \"^/api/(\": "),
            ("~", "needs a pattern after `~`"),
            ("~*  ", "needs a pattern after `~`"),
            ("/api/v[0-9]+", "for a regex write `~ /api/v[0-9]+`"),
            ("^/api", "must start with `/`"),
            ("/a b", "has ` `"),
        ];
        for (text, want) in cases {
            let e = PathMatch::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: multi-line error {e:?}");
        }
    }

    #[test]
    fn host_forms_parse_to_their_kinds() {
        let cases: &[(&str, HostMatch)] = &[
            ("Example.COM", HostMatch::Exact("example.com".into())),
            ("*.example.com", HostMatch::Suffix(".example.com".into())),
            (".example.com", HostMatch::Domain(".example.com".into())),
            ("www.example.*", HostMatch::Prefix("www.example.".into())),
            ("[::1]", HostMatch::Exact("[::1]".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&HostMatch::parse(text).unwrap(), want, "{text}");
        }
        let HostMatch::Regex(p) = HostMatch::parse("~ ^api[0-9]+\\.test$").unwrap() else {
            panic!("not a regex");
        };
        assert!(p.regex.is_match(b"API7.test"));
    }

    #[test]
    fn bad_hosts_are_refused_with_a_hint() {
        let cases: &[(&str, &str)] = &[
            ("example.com:8080", "do not include a port"),
            (
                "a.*.example.com",
                "a wildcard is a whole first or last label",
            ),
            ("*example.com", "a wildcard is a whole first or last label"),
            ("*", "a wildcard is a whole first or last label"),
            ("^api\\.test$", "for a regex write `~ ^api\\.test$`"),
            ("~ (", "invalid regex"),
            ("~", "needs a pattern"),
            ("[zz]", "invalid host"),
            ("a..", "invalid host"),
            ("", "invalid host"),
        ];
        for (text, want) in cases {
            let e = HostMatch::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: multi-line error {e:?}");
        }
    }
}
