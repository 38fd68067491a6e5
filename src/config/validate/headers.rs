//! Header operations of an upstream (`headers.request` / `headers.response`).

use regex::Regex;

use super::{is_token, Res, Validator};
use crate::config::file::{HeaderOpFile, Named};
use crate::config::spans::join;
use crate::config::{HeaderOp, NamePattern};
use crate::template::Template;

impl Validator<'_> {
    pub(super) fn header_ops(
        &self,
        key: &str,
        ops: Option<Vec<HeaderOpFile>>,
    ) -> Res<Vec<HeaderOp>> {
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
    pub(super) fn field_ops(
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

    /// Framing and hop-by-hop fields belong to the proxy: letting operations touch them would
    /// let a config desynchronise message boundaries (request smuggling).
    pub(super) fn not_managed(&self, key: &str, name: &str) -> Res<()> {
        if MANAGED_HEADERS.iter().any(|m| m.eq_ignore_ascii_case(name)) {
            return Err(self.at_value(
                key,
                format!("\"{name}\" is managed by the proxy (message framing / hop-by-hop) and cannot be changed"),
            ));
        }
        Ok(())
    }
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
pub(super) fn name_pattern(name: &str) -> Option<NamePattern> {
    let lower = name.to_ascii_lowercase();
    match lower.strip_suffix('*') {
        Some(prefix) if is_token(prefix) && !prefix.contains('*') => {
            Some(NamePattern::Prefix(prefix.to_string()))
        }
        None if is_token(&lower) && !lower.contains('*') => Some(NamePattern::Exact(lower)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

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
}
