//! A route's response shaping: `handle_response` rules and `error_pages` files.

use std::path::{Path, PathBuf};

use super::{Res, Validator};
use crate::config::file::{HandleResponseFile, Named, RespondFile};
use crate::config::spans::join;
use crate::config::{
    defaults, ErrorPage, HeaderMatch, Respond, ResponseRule, RuleAction, StatusSet,
};
use crate::template::Template;

impl Validator<'_> {
    /// `error_pages`: each key a code or class within 400-599, each file read now (a reload
    /// reads it again); relative paths are taken from the configuration file's directory.
    pub(super) fn error_pages(
        &self,
        key: &str,
        pages: Option<Named<String>>,
    ) -> Res<Vec<ErrorPage>> {
        let mut out = Vec::new();
        for (code, file) in pages.map(|p| p.0).unwrap_or_default() {
            let k = join(key, &code);
            let status = StatusSet::parse(&code).map_err(|m| self.at_key(&k, m))?;
            if status.0.iter().any(|&(lo, hi)| lo < 400 || hi > 599) {
                return Err(self.at_key(&k, "error pages replace error answers: use 4xx/5xx codes"));
            }
            let path = self.relative_to_config(&file);
            let body = std::fs::read(&path).map_err(|e| {
                self.at_value(
                    &k,
                    format!("cannot read error page {}: {e}", path.display()),
                )
            })?;
            out.push(ErrorPage {
                status,
                content_type: content_type_of(&path),
                path,
                body: body.into(),
            });
        }
        Ok(out)
    }

    fn relative_to_config(&self, file: &str) -> PathBuf {
        let p = Path::new(file);
        match Path::new(self.file).parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    pub(super) fn handle_response(
        &self,
        key: &str,
        rules: Option<Vec<HandleResponseFile>>,
        upstreams: &[&str],
    ) -> Res<Vec<ResponseRule>> {
        rules
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.response_rule(&format!("{key}[{i}]"), r, upstreams))
            .collect()
    }

    fn response_rule(
        &self,
        key: &str,
        r: HandleResponseFile,
        upstreams: &[&str],
    ) -> Res<ResponseRule> {
        let mut status = StatusSet::default();
        let mut headers = Vec::new();
        if let Some(m) = r.matcher {
            let mk = join(key, "match");
            if let Some(list) = &m.status {
                for (i, s) in list.items.iter().enumerate() {
                    let set = StatusSet::parse(s)
                        .map_err(|e| self.at_value(&list.item_key(&join(&mk, "status"), i), e))?;
                    status.0.extend(set.0);
                }
            }
            for (name, value) in m.headers.map(|h| h.0).unwrap_or_default() {
                let k = join(&join(&mk, "headers"), &name);
                self.header_name(&k, &name)?;
                let want = if value == "*" {
                    HeaderMatch::Present
                } else {
                    HeaderMatch::Exact(value)
                };
                headers.push((name.to_ascii_lowercase(), want));
            }
        }
        let respond_key = join(key, "respond");
        let respond = r
            .respond
            .or_else(|| self.spans.knows(&respond_key).then(RespondFile::default));
        let written = [
            r.replace_status.is_some(),
            respond.is_some(),
            r.upstream.is_some(),
        ];
        if written.iter().filter(|w| **w).count() != 1 {
            return Err(self.at_key(
                key,
                "a handle_response rule takes exactly one of `replace_status`, `respond` or \
                 `upstream`",
            ));
        }
        for (k, set) in [
            ("rewrite", r.rewrite.is_some()),
            ("method", r.method.is_some()),
        ] {
            if set && r.upstream.is_none() {
                return Err(self.at_key(&join(key, k), "only valid with `upstream`"));
            }
        }
        if r.copy_response_headers.is_some() && r.replace_status.is_some() {
            return Err(self.at_key(
                &join(key, "copy_response_headers"),
                "only valid with `respond` or `upstream` (replace_status keeps every header)",
            ));
        }
        let mut copy_headers = Vec::new();
        if let Some(list) = &r.copy_response_headers {
            let base = join(key, "copy_response_headers");
            for (i, name) in list.items.iter().enumerate() {
                self.header_name(&list.item_key(&base, i), name)?;
                copy_headers.push(name.to_ascii_lowercase());
            }
        }
        let action = if let Some(code) = r.replace_status {
            // A bodiless status would leave the kept body without a place in the stream.
            if !(200..=599).contains(&code) || code == 204 || code == 304 {
                return Err(self.at_value(
                    &join(key, "replace_status"),
                    format!(
                        "status {code} cannot carry the upstream's body (use 200-599, not 204 \
                         or 304)"
                    ),
                ));
            }
            RuleAction::ReplaceStatus(code)
        } else if let Some(resp) = respond {
            RuleAction::Respond(self.rule_respond(&respond_key, resp)?)
        } else {
            let name = r.upstream.unwrap_or_default();
            let Some(upstream) = upstreams.iter().position(|u| *u == name) else {
                return Err(self.at_value(
                    &join(key, "upstream"),
                    format!("unknown upstream \"{name}\""),
                ));
            };
            let rewrite = match &r.rewrite {
                Some(t) => {
                    let k = join(key, "rewrite");
                    if !t.starts_with(['/', '{']) {
                        return Err(self.at_value(
                            &k,
                            "must start with `/` (or a placeholder such as {rp.header.X-Accel-Redirect})",
                        ));
                    }
                    Some(self.response_template(&k, t)?)
                }
                None => None,
            };
            let method = match &r.method {
                Some(m) => Some(self.method(&join(key, "method"), m)?),
                None => None,
            };
            RuleAction::Upstream {
                upstream,
                rewrite,
                method,
            }
        };
        Ok(ResponseRule {
            status,
            headers,
            action,
            copy_headers,
        })
    }

    /// A rule's `respond`, whose templates may name the upstream response.
    fn rule_respond(&self, key: &str, r: RespondFile) -> Res<Respond> {
        let status = r.status.unwrap_or(defaults::RESPOND_STATUS);
        if !(200..=599).contains(&status) {
            return Err(self.at_value(
                &join(key, "status"),
                format!("status {status} is out of range (200-599)"),
            ));
        }
        let body = self.response_template(&join(key, "body"), r.body.as_deref().unwrap_or(""))?;
        let mut headers = Vec::new();
        for (name, value) in r.headers.map(|h| h.0).unwrap_or_default() {
            let k = join(&join(key, "headers"), &name);
            self.header_name(&k, &name)?;
            if value.contains(['\r', '\n', '\0']) {
                return Err(self.at_value(&k, "a header value cannot contain line breaks or NUL"));
            }
            headers.push((name, self.response_template(&k, &value)?));
        }
        Ok(Respond {
            status,
            body,
            headers,
        })
    }

    fn response_template(&self, key: &str, text: &str) -> Res<Template> {
        Template::parse_response(text).map_err(|m| self.at_value(key, m))
    }
}

/// The Content-Type an error page file is served with, from its extension.
fn content_type_of(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt" | "text") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::content_type_of;
    use crate::config::test_support::*;
    use crate::config::*;

    fn with_route(extra: &str) -> String {
        format!(
            "listeners:\n  - listen: 127.0.0.1:8080\n    routes:\n      - upstream: api\n{extra}\
             upstreams:\n  api:\n    targets: [127.0.0.1:9001]\n  files:\n    targets: [127.0.0.1:9002]\n"
        )
    }

    fn route_err(extra: &str) -> ConfigError {
        Config::parse(&with_route(extra), "t.yaml").expect_err("expected an error")
    }

    #[test]
    fn content_type_follows_the_extension_case_insensitively() {
        for (file, want) in [
            ("502.html", "text/html; charset=utf-8"),
            ("a/B.HTM", "text/html; charset=utf-8"),
            ("oops.txt", "text/plain; charset=utf-8"),
            ("err.json", "application/json"),
            ("logo.svg", "image/svg+xml"),
            ("x.png", "image/png"),
            ("noext", "application/octet-stream"),
            ("weird.bin", "application/octet-stream"),
        ] {
            assert_eq!(content_type_of(std::path::Path::new(file)), want, "{file}");
        }
    }

    #[test]
    fn error_pages_are_read_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("rw-pages-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pages")).unwrap();
        std::fs::write(dir.join("pages/5xx.html"), "<h1>down</h1>").unwrap();
        std::fs::write(dir.join("404.txt"), "nothing here").unwrap();
        let file = dir.join("ringway.yaml");
        std::fs::write(
            &file,
            with_route("        error_pages: { 5xx: pages/5xx.html, \"404\": 404.txt }\n"),
        )
        .unwrap();
        let c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let pages = &routes(&c)[0].error_pages;
        assert_eq!(pages.len(), 2);
        assert!(pages[0].status.contains(503) && !pages[0].status.contains(404));
        assert_eq!(
            (pages[0].content_type, &pages[0].body[..]),
            ("text/html; charset=utf-8", &b"<h1>down</h1>"[..])
        );
        assert_eq!(pages[1].content_type, "text/plain; charset=utf-8");
        assert!(pages[1].status.contains(404));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_error_page_file_is_refused_at_its_key() {
        let e = route_err("        error_pages:\n          502: /nonexistent/rw/502.html\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (6, "listeners[0].routes[0].error_pages.502"),
            "{e}"
        );
        assert!(e.message.contains("cannot read error page"), "{e}");
    }

    #[test]
    fn error_page_keys_are_error_codes_or_classes() {
        for bad in ["200", "3xx", "abc", "399-400"] {
            let e = route_err(&format!(
                "        error_pages: {{ \"{bad}\": /etc/hostname }}\n"
            ));
            assert_eq!(
                e.key,
                format!("listeners[0].routes[0].error_pages.{bad}"),
                "{e}"
            );
        }
    }

    #[test]
    fn handle_response_rules_are_read_in_order() {
        let c = Config::parse(
            &with_route(
                "        handle_response:
          - match: { status: [5xx, 404] }
            replace_status: 503
          - match: { headers: { X-Accel-Redirect: \"*\", X-Mode: fast } }
            upstream: files
            rewrite: \"{rp.header.X-Accel-Redirect}\"
            method: get
            copy_response_headers: [Set-Cookie]
          - respond: { status: 502, body: \"said {rp.status_code}\", headers: { X-S: \"{rp.status_text}\" } }
",
            ),
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rules = &routes(&c)[0].handle_response;
        assert_eq!(rules.len(), 3);
        assert!(rules[0].status.contains(500) && rules[0].status.contains(404));
        assert!(matches!(rules[0].action, RuleAction::ReplaceStatus(503)));
        assert_eq!(
            rules[1].headers,
            vec![
                ("x-accel-redirect".to_string(), HeaderMatch::Present),
                ("x-mode".to_string(), HeaderMatch::Exact("fast".into()))
            ]
        );
        let RuleAction::Upstream {
            upstream, method, ..
        } = &rules[1].action
        else {
            panic!("upstream rule")
        };
        assert_eq!((*upstream, method.as_deref()), (1, Some("GET")));
        assert_eq!(rules[1].copy_headers, vec!["set-cookie".to_string()]);
        assert!(rules[2].status.is_empty());
        assert!(matches!(&rules[2].action, RuleAction::Respond(r) if r.status == 502));
    }

    #[test]
    fn bad_handle_response_rules_are_refused_at_their_key() {
        let base = "listeners[0].routes[0].handle_response[0]";
        let cases = [
            (
                "[{ replace_status: 503, upstream: files }]",
                base.to_string(),
                "exactly one",
            ),
            (
                "[{ match: { status: [5xx] } }]",
                base.to_string(),
                "exactly one",
            ),
            (
                "[{ upstream: nope }]",
                format!("{base}.upstream"),
                "unknown upstream",
            ),
            (
                "[{ replace_status: 204 }]",
                format!("{base}.replace_status"),
                "cannot carry",
            ),
            (
                "[{ replace_status: 99 }]",
                format!("{base}.replace_status"),
                "cannot carry",
            ),
            (
                "[{ replace_status: 503, rewrite: /x }]",
                format!("{base}.rewrite"),
                "only valid with `upstream`",
            ),
            (
                "[{ respond: {}, method: GET }]",
                format!("{base}.method"),
                "only valid with `upstream`",
            ),
            (
                "[{ replace_status: 503, copy_response_headers: [A] }]",
                format!("{base}.copy_response_headers"),
                "only valid with",
            ),
            (
                "[{ upstream: files, rewrite: x }]",
                format!("{base}.rewrite"),
                "must start with",
            ),
            (
                "[{ upstream: files, rewrite: \"/{rp.nope}\" }]",
                format!("{base}.rewrite"),
                "unknown placeholder",
            ),
            (
                "[{ match: { status: [6xx] }, replace_status: 503 }]",
                format!("{base}.match.status[0]"),
                "invalid status",
            ),
            (
                "[{ respond: { body: \"{rp.header.}\" } }]",
                format!("{base}.respond.body"),
                "unknown placeholder",
            ),
        ];
        for (rules, key, message) in cases {
            let e = route_err(&format!("        handle_response: {rules}\n"));
            assert_eq!(e.key, key, "{rules}: {e}");
            assert_eq!(e.line, 5, "{rules}: {e}");
            assert!(e.message.contains(message), "{rules}: {e}");
        }
    }

    #[test]
    fn response_placeholders_stay_refused_outside_handle_response() {
        let e = route_err("        rewrite: \"/{rp.status_code}\"\n");
        assert_eq!(e.key, "listeners[0].routes[0].rewrite", "{e}");
        assert!(e.message.contains("only handle_response"), "{e}");
    }

    #[test]
    fn respond_routes_have_no_response_to_shape() {
        let e = Config::parse(
            "listeners:\n  - listen: 127.0.0.1:8080\n    routes:\n      - respond: {}\n        \
             handle_response: [{ replace_status: 503 }]\n",
            "t.yaml",
        )
        .expect_err("refused");
        assert_eq!(e.key, "listeners[0].routes[0].handle_response", "{e}");
        assert_eq!(e.line, 5, "{e}");
    }
}
