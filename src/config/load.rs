//! Reading a configuration: text -> spans and file types -> validated `Config`.

use std::path::Path;

use super::file::FileConfig;
use super::spans::Spans;
use super::validate::Validator;
use super::{Config, ConfigError};

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Validates configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let spans = Spans::build(text);
        let v = Validator {
            file,
            spans: &spans,
        };
        // yaml-rust2 sees duplicate keys that serde would accept (maps) or place badly (structs).
        if spans.complete {
            if let Some((path, pos)) = &spans.duplicate {
                let key = path.rsplit('.').next().unwrap_or(path);
                return Err(v.error(path, *pos, format!("duplicate key `{key}`")));
            }
        }
        let raw: FileConfig = serde_yaml::from_str(text).map_err(|e| v.serde_error(&e))?;
        v.config(raw)
    }
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
