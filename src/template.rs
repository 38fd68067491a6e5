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
    pub fn parse(text: &str) -> Result<Template, String> {
        Ok(Template {
            parts: vec![Part::Literal(text.to_string())],
        })
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
