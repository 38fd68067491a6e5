//! Reading a configuration: text -> spans and file types -> validated `Config`.

use std::path::Path;

use super::file::FileConfig;
use super::spans::Spans;
use super::validate::Validator;
use super::{Config, ConfigError};

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_all(path).map_err(|mut all| all.swap_remove(0))
    }

    /// Validates configuration text; `file` names it in errors. The error is the first
    /// problem in file order.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse_all(text, file).map_err(|mut all| all.swap_remove(0))
    }

    /// Like `load`, but on failure every problem found, in file order (never empty).
    pub fn load_all(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        let mut config = Config::parse_all(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Like `parse`, but on failure every problem found, in file order (never empty). A YAML
    /// syntax or type error stops the reading, so it comes alone.
    pub fn parse_all(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
        let spans = Spans::build(text);
        let v = Validator::new(file, &spans);
        // yaml-rust2 sees duplicate keys that serde would accept (maps) or place badly (structs).
        if spans.complete {
            if let Some((path, pos)) = &spans.duplicate {
                let key = path.rsplit('.').next().unwrap_or(path);
                return Err(vec![v.error(path, *pos, format!("duplicate key `{key}`"))]);
            }
        }
        let raw: FileConfig = match serde_yaml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return Err(vec![tab_hint(v.serde_error(&e), text)]),
        };
        match v.config(raw) {
            Ok(c) => Ok(c),
            Err(e) => {
                v.keep::<()>(Err(e));
                Err(v.take_errors())
            }
        }
    }
}

/// YAML forbids tabs in indentation, and the parser's words for it ("found character that
/// cannot start any token") do not say so: name the tab when the failing line has one.
fn tab_hint(mut e: ConfigError, text: &str) -> ConfigError {
    let lines: Vec<&str> = text.lines().collect();
    // The parser may stop on the line after the tab (a tab ends the indentation it measures).
    let near = [e.line, e.line.saturating_sub(1)];
    if let Some(&n) = near
        .iter()
        .find(|&&n| n > 0 && lines.get(n - 1).is_some_and(|l| l.contains('\t')))
    {
        let col = lines[n - 1].find('\t').map_or(1, |c| c + 1);
        e.line = n;
        e.column = col;
        e.message = format!(
            "tab character: YAML indents with spaces only ({})",
            e.message
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn error_display_is_file_line_column_key_message() {
        let e = err(r#"
            listeners:
              - listen: 127.0.0.1:8080
                routes:
                  - upstream: api
                  - upstream: apix
            upstreams:
              api:
                targets: [127.0.0.1:9001]
        "#);
        assert_eq!(
            e.to_string(),
            "t.yaml:5:19: listeners[0].routes[1].upstream: unknown upstream \"apix\""
        );
    }
}
