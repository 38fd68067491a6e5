//! The shape of access log lines: `text`, `json`, nginx's `combined`, or a template of
//! `{field}` placeholders. Parsed here (the config is a leaf); `observe::access` renders.

/// Every field an access log line can carry, by the name it has in JSON lines and templates.
pub const FIELDS: &[&str] = &[
    "time",
    "time_local",
    "event",
    "client",
    "client_port",
    "listener",
    "protocol",
    "method",
    "host",
    "uri",
    "status",
    "bytes_in",
    "bytes_out",
    "body_bytes_out",
    "duration_ms",
    "route",
    "upstream",
    "upstream_addr",
    "upstream_connect_ms",
    "upstream_response_ms",
    "user_agent",
    "referer",
    "request_id",
    "worker",
    "end",
    "reason",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessFormat {
    /// Follows `log.format`: space-separated `key=value` text, or one JSON object per line.
    Text,
    Json,
    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`.
    Combined,
    Template(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    /// An index into [`FIELDS`].
    Field(usize),
}

impl AccessFormat {
    /// `text`, `json`, `combined`, or a template such as `{client} "{method} {uri}" {status}`.
    pub fn parse(text: &str) -> Result<AccessFormat, String> {
        match text {
            "text" => return Ok(AccessFormat::Text),
            "json" => return Ok(AccessFormat::Json),
            "combined" => return Ok(AccessFormat::Combined),
            _ => {}
        }
        if !text.contains('{') {
            return Err(format!(
                "unknown access log format \"{text}\" (expected text, json, combined or a \
                 template with {{field}} placeholders such as \"{{client}} {{status}}\")"
            ));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("unclosed `{{` in access log format \"{text}\""));
            };
            let name = &after[..close];
            match FIELDS.iter().position(|f| *f == name) {
                Some(i) => pieces.push(Piece::Field(i)),
                None => {
                    return Err(format!(
                        "unknown access log field {{{name}}} (known: {})",
                        FIELDS.join(", ")
                    ))
                }
            }
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(AccessFormat::Template(pieces))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_templates_parse() {
        assert_eq!(AccessFormat::parse("combined"), Ok(AccessFormat::Combined));
        assert_eq!(AccessFormat::parse("json"), Ok(AccessFormat::Json));
        let field = |n: &str| Piece::Field(FIELDS.iter().position(|f| *f == n).unwrap());
        assert_eq!(
            AccessFormat::parse("{client} \"{method}\" {status}"),
            Ok(AccessFormat::Template(vec![
                field("client"),
                Piece::Literal(" \"".into()),
                field("method"),
                Piece::Literal("\" ".into()),
                field("status"),
            ]))
        );
        for (bad, says) in [
            ("nginx", "unknown access log format"),
            ("{client", "unclosed"),
            ("{cleint}", "unknown access log field {cleint}"),
        ] {
            let e = AccessFormat::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
