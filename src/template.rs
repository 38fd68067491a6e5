//! Placeholder templates (`{client_ip}`, `{header.NAME}`, ...) for header values, rewrites and
//! respond bodies: parsed once at config load, rendered per request without allocating.

/// One placeholder from the config contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    ClientIp,
    ClientPort,
    Host,
    Method,
    Scheme,
    Path,
    Query,
    Uri,
    /// `{header.NAME}`; the name stored lower-case.
    Header(String),
    UpstreamHostport,
    Worker,
    /// `{rp.*}`: the upstream response a `handle_response` rule matched (nothing elsewhere).
    Response(ResponsePart),
}

/// The parts of an upstream response head a `handle_response` template can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponsePart {
    /// `{rp.status_code}`
    StatusCode,
    /// `{rp.status_text}`
    StatusText,
    /// `{rp.header.NAME}`; the name stored lower-case.
    Header(String),
}

/// Where a template gets placeholder values from (the request being handled).
pub trait Placeholders {
    /// Appends the value of `p` to `out` (nothing when it has no value).
    fn write(&self, p: &Placeholder, out: &mut Vec<u8>);
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// `{name}` with a known name is a placeholder, with an unknown one an error; any other `{`
    /// (JSON bodies, a lone brace) is literal text.
    pub fn parse(text: &str) -> Result<Template, String> {
        Template::parse_with(text, false)
    }

    /// Like `parse`, and `{rp.status_code}`, `{rp.status_text}`, `{rp.header.NAME}` name the
    /// upstream response (only `handle_response` rules have one).
    pub fn parse_response(text: &str) -> Result<Template, String> {
        Template::parse_with(text, true)
    }

    /// Text taken as it is, braces and all (a value rendered once already).
    pub fn literal(text: String) -> Template {
        let parts = if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Literal(text)]
        };
        Template { parts }
    }

    fn parse_with(text: &str, response: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                .count();
            if len > 0 && after.as_bytes().get(len) == Some(&b'}') {
                let name = &after[..len];
                let p = match (placeholder(name), response) {
                    (Some(Placeholder::Response(_)), false) => {
                        return Err(format!(
                            "{{{name}}} names the upstream response: only handle_response rules \
                             have one"
                        ))
                    }
                    (Some(p), _) => p,
                    (None, _) => return Err(format!("unknown placeholder {{{name}}}")),
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Placeholder(p));
                rest = &after[len + 1..];
            } else {
                literal.push('{');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, ctx: &impl Placeholders, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Placeholder(p) => ctx.write(p, out),
            }
        }
    }

    /// The text when the template has no placeholders.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }
}

fn placeholder(name: &str) -> Option<Placeholder> {
    Some(match name {
        "client_ip" => Placeholder::ClientIp,
        "client_port" => Placeholder::ClientPort,
        "host" => Placeholder::Host,
        "method" => Placeholder::Method,
        "scheme" => Placeholder::Scheme,
        "path" => Placeholder::Path,
        "query" => Placeholder::Query,
        "uri" => Placeholder::Uri,
        "upstream_hostport" => Placeholder::UpstreamHostport,
        "worker" => Placeholder::Worker,
        "rp.status_code" => Placeholder::Response(ResponsePart::StatusCode),
        "rp.status_text" => Placeholder::Response(ResponsePart::StatusText),
        _ if name.starts_with("rp.header.") => {
            let header = &name["rp.header.".len()..];
            if header.is_empty() {
                return None;
            }
            Placeholder::Response(ResponsePart::Header(header.to_ascii_lowercase()))
        }
        _ => {
            let header = name.strip_prefix("header.")?;
            if header.is_empty() {
                return None;
            }
            Placeholder::Header(header.to_ascii_lowercase())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx;

    impl Placeholders for Ctx {
        fn write(&self, p: &Placeholder, out: &mut Vec<u8>) {
            match p {
                Placeholder::ClientIp => out.extend_from_slice(b"10.0.0.1"),
                Placeholder::Path => out.extend_from_slice(b"/a/b"),
                Placeholder::Query => {}
                Placeholder::Header(name) => out.extend_from_slice(name.as_bytes()),
                _ => out.extend_from_slice(b"?"),
            }
        }
    }

    fn render(t: &Template) -> String {
        let mut out = Vec::new();
        t.render(&Ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_without_braces_is_a_literal() {
        let t = Template::parse("ok\n").unwrap();
        assert_eq!(t.as_literal(), Some("ok\n"));
        assert_eq!(render(&t), "ok\n");
    }

    #[test]
    fn empty_text_is_the_empty_literal() {
        let t = Template::parse("").unwrap();
        assert_eq!(t.parts, vec![]);
        assert_eq!(t.as_literal(), Some(""));
        assert_eq!(render(&t), "");
    }

    #[test]
    fn every_contract_placeholder_is_recognised() {
        let t = Template::parse(
            "{client_ip}{client_port}{host}{method}{scheme}{path}{query}{uri}\
             {header.X-Id}{upstream_hostport}{worker}",
        )
        .unwrap();
        use Placeholder::*;
        let expected = [
            ClientIp,
            ClientPort,
            Host,
            Method,
            Scheme,
            Path,
            Query,
            Uri,
            Header("x-id".into()),
            UpstreamHostport,
            Worker,
        ];
        let parts: Vec<Part> = expected.into_iter().map(Part::Placeholder).collect();
        assert_eq!(t.parts, parts);
        assert_eq!(t.as_literal(), None);
    }

    #[test]
    fn header_placeholder_stores_the_name_lower_case() {
        let t = Template::parse("{header.X-Request-ID}").unwrap();
        assert_eq!(
            t.parts,
            vec![Part::Placeholder(Placeholder::Header(
                "x-request-id".into()
            ))]
        );
    }

    #[test]
    fn literals_and_placeholders_alternate() {
        let t = Template::parse("/v2{path}?{query}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("/v2".into()),
                Part::Placeholder(Placeholder::Path),
                Part::Literal("?".into()),
                Part::Placeholder(Placeholder::Query),
            ]
        );
        assert_eq!(render(&t), "/v2/a/b?");
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        assert_eq!(
            Template::parse("x {foo} y"),
            Err("unknown placeholder {foo}".to_string())
        );
        assert_eq!(
            Template::parse("{header.}"),
            Err("unknown placeholder {header.}".to_string())
        );
        assert_eq!(
            Template::parse("{Path}"),
            Err("unknown placeholder {Path}".to_string())
        );
    }

    #[test]
    fn json_braces_stay_literal_text() {
        let body = r#"{"ok":true,"ip":"x"}"#;
        let t = Template::parse(body).unwrap();
        assert_eq!(t.as_literal(), Some(body));
    }

    #[test]
    fn lone_empty_and_unclosed_braces_stay_literal_text() {
        for text in ["{", "}", "{}", "a { b }", "{path", "{pa th}", "{{", "{/x}"] {
            let t = Template::parse(text).unwrap();
            assert_eq!(t.as_literal(), Some(text), "{text}");
        }
    }

    #[test]
    fn adjacent_literal_text_merges_into_one_part() {
        let t = Template::parse("a{ {b{client_ip}{").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("a{ {b".into()),
                Part::Placeholder(Placeholder::ClientIp),
                Part::Literal("{".into()),
            ]
        );
    }

    #[test]
    fn brace_before_a_placeholder_stays_literal() {
        let t = Template::parse("{{path}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("{".into()),
                Part::Placeholder(Placeholder::Path),
                Part::Literal("}".into()),
            ]
        );
        assert_eq!(render(&t), "{/a/b}");
    }

    #[test]
    fn render_appends_to_what_is_already_in_out() {
        let t = Template::parse("ip={client_ip} h={header.Host}").unwrap();
        let mut out = b"X: ".to_vec();
        t.render(&Ctx, &mut out);
        assert_eq!(out, b"X: ip=10.0.0.1 h=host");
    }

    #[test]
    fn response_placeholders_parse_only_where_a_response_exists() {
        let t = Template::parse_response(
            "{rp.status_code} {rp.status_text}{rp.header.X-Accel-Redirect}",
        )
        .unwrap();
        use ResponsePart::*;
        assert_eq!(
            t.parts,
            vec![
                Part::Placeholder(Placeholder::Response(StatusCode)),
                Part::Literal(" ".into()),
                Part::Placeholder(Placeholder::Response(StatusText)),
                Part::Placeholder(Placeholder::Response(Header("x-accel-redirect".into()))),
            ]
        );
        let e = Template::parse("a {rp.status_code}").unwrap_err();
        assert!(e.contains("only handle_response"), "{e}");
        assert_eq!(
            Template::parse_response("{rp.header.}"),
            Err("unknown placeholder {rp.header.}".to_string())
        );
        assert_eq!(
            Template::parse_response("{rp.status}"),
            Err("unknown placeholder {rp.status}".to_string())
        );
    }

    #[test]
    fn literal_keeps_braces_as_text() {
        let t = Template::literal("/a/{path}".into());
        assert_eq!(t.as_literal(), Some("/a/{path}"));
        assert_eq!(Template::literal(String::new()).as_literal(), Some(""));
    }

    #[test]
    fn multibyte_text_around_placeholders_is_kept() {
        let t = Template::parse("héllo {path} ✓").unwrap();
        assert_eq!(render(&t), "héllo /a/b ✓");
    }
}
