//! Where each key path (`listeners[0].routes[1].upstream`) sits in the YAML text.
//!
//! serde_yaml has no spans, so errors found after deserializing would have no place in the
//! file; a second pass with yaml-rust2's event parser records line and column of every node.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pos {
    pub(super) line: usize,
    pub(super) column: usize,
}

#[derive(Debug, Default)]
pub(super) struct Spans {
    /// Where each mapping key, or each sequence item, starts.
    pub(super) keys: HashMap<String, Pos>,
    /// Where each value starts.
    pub(super) values: HashMap<String, Pos>,
    /// The first key written twice in one mapping, at its second occurrence.
    pub(super) duplicate: Option<(String, Pos)>,
    /// False when yaml-rust2 stopped at a syntax error.
    pub(super) complete: bool,
}

enum Frame {
    Map {
        path: String,
        /// `Some` while the value of this key is expected.
        key: Option<String>,
        /// Block mappings start one column late in yaml-rust2; fix from the first key.
        fix: bool,
        is_item: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

impl Spans {
    pub(super) fn build(text: &str) -> Spans {
        let lines: Vec<&str> = text.lines().collect();
        let mut s = Spans::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        loop {
            let Ok((event, mark)) = parser.next_token() else {
                return s;
            };
            let pos = Pos {
                line: mark.line(),
                column: mark.col() + 1,
            };
            match &event {
                Event::StreamEnd | Event::DocumentEnd => {
                    s.complete = true;
                    return s;
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Scalar(..) | Event::Alias(_) => {
                    s.node(&mut stack, &event, pos);
                }
                Event::MappingStart(..) => {
                    let (path, is_item) = s.node(&mut stack, &event, pos);
                    let flow = lines
                        .get(pos.line.wrapping_sub(1))
                        .and_then(|l| l.chars().nth(pos.column - 1))
                        == Some('{');
                    stack.push(Frame::Map {
                        path,
                        key: None,
                        fix: !flow,
                        is_item,
                    });
                }
                Event::SequenceStart(..) => {
                    let (path, _) = s.node(&mut stack, &event, pos);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                _ => {}
            }
        }
    }

    /// Records a node starting at `pos`; returns its path and whether it is a sequence item.
    fn node(&mut self, stack: &mut [Frame], event: &Event, pos: Pos) -> (String, bool) {
        match stack.last_mut() {
            None => {
                self.values.insert(String::new(), pos);
                (String::new(), false)
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.keys.insert(p.clone(), pos);
                self.values.insert(p.clone(), pos);
                (p, true)
            }
            Some(Frame::Map {
                path,
                key,
                fix,
                is_item,
            }) => {
                if let Some(k) = key.take() {
                    let p = join(path, &k);
                    self.values.insert(p.clone(), pos);
                    return (p, false);
                }
                if *fix {
                    *fix = false;
                    self.values.insert(path.clone(), pos);
                    if *is_item {
                        self.keys.insert(path.clone(), pos);
                    }
                }
                let name = match event {
                    Event::Scalar(v, ..) => v.clone(),
                    _ => "?".to_string(),
                };
                let p = join(path, &name);
                if self.keys.insert(p.clone(), pos).is_some()
                    && self.duplicate.is_none()
                    && name != "?"
                    && name != "<<"
                {
                    self.duplicate = Some((p.clone(), pos));
                }
                *key = Some(name);
                (p, false)
            }
        }
    }

    pub(super) fn knows(&self, path: &str) -> bool {
        self.keys.contains_key(path) || self.values.contains_key(path)
    }

    /// The position of `path`, else of its nearest written ancestor.
    pub(super) fn find(&self, path: &str, value: bool) -> Pos {
        let mut p = path;
        loop {
            let (first, second) = if value {
                (&self.values, &self.keys)
            } else {
                (&self.keys, &self.values)
            };
            if let Some(pos) = first.get(p).or_else(|| second.get(p)) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// The key written last at or before `pos` (to name the place of a syntax error).
    pub(super) fn key_before(&self, pos: Pos) -> String {
        self.keys
            .iter()
            .filter(|(_, p)| **p <= pos)
            .max_by_key(|(k, p)| (**p, k.len()))
            .map(|(k, _)| k.clone())
            .unwrap_or_default()
    }
}

pub(super) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub(super) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn keys_and_values_are_found_by_path() {
        let s = Spans::build("a:\n  b: [x, y]\nc: { d: 1 }\n");
        assert!(s.complete && s.duplicate.is_none());
        assert_eq!(s.find("a.b", false), Pos { line: 2, column: 3 });
        assert_eq!(
            s.find("a.b[1]", true),
            Pos {
                line: 2,
                column: 10
            }
        );
        assert_eq!(s.find("c.d", true), Pos { line: 3, column: 9 });
        // A path that is not written is placed at its nearest written ancestor.
        assert_eq!(s.find("a.b.z", false), s.find("a.b", false));
        assert_eq!(join("a.b", "c"), "a.b.c");
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn duplicate_key_is_reported_at_the_second_occurrence() {
        assert_err(
            r#"
            workers: 2
            log: { level: info }
            workers: 3
            "#,
            3,
            "workers",
            "duplicate key `workers`",
        );
        let e = upstream_err("headers:\n  request:\n    - set: { X-A: a, X-A: b }\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (10, "upstreams.api.headers.request[0].set.X-A"),
            "{e}"
        );
    }

    #[test]
    fn yaml_syntax_error_has_a_location_and_the_nearest_key() {
        let e = err(r#"
            workers: 2
            limits:
              max_headers: [1, 2
            log: {}
        "#);
        assert!(e.line >= 3, "{e}");
        assert!(e.key.starts_with("limits"), "{e}");
        assert!(!e.message.contains(" at line "), "{e}");
        let e = err("workers: 2\nlog: {level: info\nlimits: {}\n");
        assert_eq!((e.line, e.key.as_str()), (3, "log.level"), "{e}");
        let e = err("workers: 2\n- x\n");
        assert_eq!((e.line, e.key.as_str()), (2, "workers"), "{e}");
    }
}
