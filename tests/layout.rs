//! The source-structure bars, checked on the files of src/: no import circles between modules,
//! no file longer than 1000 lines before its tests, no function allowed too many arguments, and
//! every folder named in lib.rs's `# Layout` section.
//!
//! The module graph: each .rs file under src/ is a module (`src/a/b.rs` is `a::b`,
//! `src/a/mod.rs` is `a`; lib.rs and main.rs, the root, are left out). An edge `m -> n` is a
//! path in `m`'s code, outside `#[cfg(test)]` items, that names `n`: `crate::...` (in `use`
//! trees and inline), `super::...` and `self::...` resolved from `m`, and a `use` of one of `m`'s
//! own child modules (`pub use child::X` in a mod.rs). A path resolves to the longest prefix
//! that is a module file. `mod x;` declarations are not edges.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// Longest a source file may be before its `#[cfg(test)]` line.
const MAX_LINES: usize = 1000;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every path under `dir` that `keep` accepts (directories are walked either way), relative
/// to `dir` with `/` separators, sorted.
fn paths_under(dir: &Path, keep: fn(&Path) -> bool) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, keep: fn(&Path) -> bool, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if keep(&path) {
                let rel = path.strip_prefix(root).unwrap();
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
            if path.is_dir() {
                walk(root, &path, keep, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, keep, &mut out);
    out.sort();
    out
}

/// Every .rs file under `dir`.
fn rust_files(dir: &Path) -> Vec<String> {
    paths_under(dir, |p| {
        p.is_file() && p.extension().is_some_and(|e| e == "rs")
    })
}

/// Every directory under `dir`.
fn directories(dir: &Path) -> Vec<String> {
    paths_under(dir, Path::is_dir)
}

/// The module a file under src/ is: `a/b.rs` -> `a::b`, `a/mod.rs` -> `a`; None for the root
/// files (lib.rs, main.rs) and anything under src/bin/.
fn module_of(rel: &str) -> Option<String> {
    if rel == "lib.rs" || rel == "main.rs" || rel.starts_with("bin/") {
        return None;
    }
    let stem = rel.strip_suffix(".rs")?;
    let stem = stem.strip_suffix("/mod").unwrap_or(stem);
    Some(stem.replace('/', "::"))
}

/// The modules of src/ and their source text.
fn source_modules() -> BTreeMap<String, String> {
    let src = src_dir();
    rust_files(&src)
        .into_iter()
        .filter_map(|rel| {
            let module = module_of(&rel)?;
            let text = std::fs::read_to_string(src.join(&rel)).unwrap();
            Some((module, text))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Lexing: comments, strings and char literals out; identifiers and punctuation in.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    /// `#[cfg(test)]` (recognised whole, so the item after it can be skipped).
    CfgTest,
    Punct(char),
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Tokens of `text` with comments, string literals (plain, byte, raw) and char literals gone.
fn tokens(text: &str) -> Vec<Tok> {
    let s: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&s, i + 1);
        } else if (c == 'r' || (c == 'b' && at(i + 1) == 'r'))
            && matches!(at(i + 1 + usize::from(c == 'b')), '"' | '#')
            && is_raw_string_start(&s, i + 1 + usize::from(c == 'b'))
        {
            i = skip_raw_string(&s, i + 1 + usize::from(c == 'b'));
        } else if c == 'b' && at(i + 1) == '"' {
            i = skip_string(&s, i + 2);
        } else if c == 'b' && at(i + 1) == '\'' {
            i = skip_char(&s, i + 1).unwrap_or(i + 2);
        } else if c == '\'' {
            match skip_char(&s, i) {
                Some(end) => i = end,
                // A lifetime or label: skip the quote, the name follows as an identifier.
                None => i += 1,
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            out.push(Tok::Ident(s[start..i].iter().collect()));
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Tok::Path);
            i += 2;
        } else if c == '#' && starts_with(&s, i, "#[cfg(test)]") {
            out.push(Tok::CfgTest);
            i += "#[cfg(test)]".len();
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

fn starts_with(s: &[char], i: usize, pat: &str) -> bool {
    let pat: Vec<char> = pat.chars().collect();
    s.len() >= i + pat.len() && s[i..i + pat.len()] == pat[..]
}

/// After an opening `"` at `i - 1`: the index after the closing quote.
fn skip_string(s: &[char], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// `s[i..]` is `#*"`: the start of a raw string's delimiter.
fn is_raw_string_start(s: &[char], mut i: usize) -> bool {
    while i < s.len() && s[i] == '#' {
        i += 1;
    }
    i < s.len() && s[i] == '"'
}

/// `s[i..]` is `#*"...": the index after the closing `"#*`.
fn skip_raw_string(s: &[char], mut i: usize) -> usize {
    let mut hashes = 0;
    while s[i] == '#' {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    while i < s.len() {
        if s[i] == '"' && (1..=hashes).all(|k| s.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// `s[i]` is `'`: the index after a char literal there, or None for a lifetime or label.
fn skip_char(s: &[char], i: usize) -> Option<usize> {
    match s.get(i + 1)? {
        '\\' => {
            let mut j = i + 2;
            while j < s.len() && s[j] != '\'' {
                j += 1;
            }
            Some(j + 1)
        }
        _ if s.get(i + 2) == Some(&'\'') => Some(i + 3),
        _ => None,
    }
}

/// `toks` without the items that follow a `#[cfg(test)]` (a module, function, `use`...): each
/// is skipped to its `;` or to the end of its first brace block.
fn without_test_items(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i] != Tok::CfgTest {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        i += 1;
        let mut depth = 0usize;
        while i < toks.len() {
            let t = &toks[i];
            i += 1;
            match t {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                Tok::Punct(';') if depth == 0 => break,
                _ => {}
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Paths and the module graph.
// ---------------------------------------------------------------------------------------------

/// The paths a `use` tree starting at `toks[i]` names (each as its segments); returns them and
/// the index after the tree.
fn use_tree(toks: &[Tok], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    if toks.get(i) == Some(&Tok::Path) {
        // `use ::std::x` (2015 style absolute).
        i += 1;
    }
    loop {
        match toks.get(i) {
            Some(Tok::Ident(name)) => {
                path.push(name.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::Path) {
                    i += 1;
                    continue;
                }
                // `as alias`
                if toks.get(i) == Some(&Tok::Ident("as".into())) {
                    i += 2;
                }
                out.push(path);
                return i;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = use_tree(toks, i, &path, out),
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                out.push(path);
                return i + 1;
            }
            _ => {
                if !path.is_empty() {
                    out.push(path);
                }
                return i;
            }
        }
    }
}

/// Every path in `toks` that may name a module of this crate: `use` trees (all of their
/// leaves) and inline paths starting with `crate`, `super` or `self`.
fn paths_in(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(k) if k == "use" => {
                i = use_tree(toks, i + 1, &[], &mut out);
            }
            Tok::Ident(k)
                if (k == "crate" || k == "super" || k == "self")
                    && toks.get(i + 1) == Some(&Tok::Path)
                    // Not the tail of a longer path (`$crate` is fine: `$` is punctuation).
                    && (i == 0 || toks[i - 1] != Tok::Path) =>
            {
                let mut path = vec![k.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::Path) {
                    match toks.get(j + 1) {
                        Some(Tok::Ident(n)) => {
                            path.push(n.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                out.push(path);
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

fn segments(module: &str) -> Vec<String> {
    if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    }
}

/// The module (of `modules`) that `path`, written in `from`, names: the longest prefix of its
/// absolute form that is a module. None for other crates, the root, or nothing known.
fn resolve(path: &[String], from: &str, modules: &BTreeSet<String>) -> Option<String> {
    let here = segments(from);
    let absolute: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("self") => here.iter().chain(&path[1..]).cloned().collect(),
        Some("super") => {
            let mut base = here.clone();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.into_iter().chain(rest.iter().cloned()).collect()
        }
        // `use child::X` in a module with a child module `child`.
        Some(first) => {
            let child = here
                .iter()
                .chain([first.to_string()].iter())
                .cloned()
                .collect::<Vec<_>>();
            if !modules.contains(&child.join("::")) {
                return None;
            }
            here.iter().chain(path).cloned().collect()
        }
        None => return None,
    };
    (1..=absolute.len())
        .rev()
        .map(|n| absolute[..n].join("::"))
        .find(|m| modules.contains(m))
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of `sources` (module name -> source text).
fn import_graph(sources: &BTreeMap<String, String>) -> Graph {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, text) in sources {
        let toks = without_test_items(tokens(text));
        let edges = graph.entry(module.clone()).or_default();
        for path in paths_in(&toks) {
            if let Some(to) = resolve(&path, module, &modules) {
                if &to != module {
                    edges.insert(to);
                }
            }
        }
    }
    graph
}

/// The cycles of `graph`: for every edge that lies on a circle, the shortest circle through
/// it, each printed as `a -> b -> c -> a` starting at its smallest module; sorted, no repeats.
fn cycles(graph: &Graph) -> Vec<String> {
    let mut found = BTreeSet::new();
    for (from, tos) in graph {
        for to in tos {
            if from == to {
                continue;
            }
            // Shortest path to -> ... -> from.
            let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = VecDeque::from([to.as_str()]);
            let mut seen = BTreeSet::from([to.as_str()]);
            let mut reached = false;
            while let Some(n) = queue.pop_front() {
                if n == from {
                    reached = true;
                    break;
                }
                for next in graph.get(n).into_iter().flatten() {
                    if seen.insert(next.as_str()) {
                        prev.insert(next.as_str(), n);
                        queue.push_back(next.as_str());
                    }
                }
            }
            if !reached {
                continue;
            }
            let mut circle = vec![from.as_str()];
            let mut n = from.as_str();
            while n != to {
                n = prev[n];
                circle.push(n);
            }
            // `circle` is from <- ... <- to; the circle runs from -> to -> ... -> from.
            circle[1..].reverse();
            let start = (0..circle.len()).min_by_key(|&k| circle[k]).unwrap();
            circle.rotate_left(start);
            let first = circle[0];
            circle.push(first);
            found.insert(circle.join(" -> "));
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let sources = source_modules();
    assert!(
        sources.len() > 5,
        "found only {} modules under {}",
        sources.len(),
        src_dir().display()
    );
    let graph = import_graph(&sources);
    // The scan must see the crate's real imports, or an empty graph would pass.
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(edges >= sources.len(), "only {edges} import edges found");
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "{} import circles (each: a module importing another that imports it back, \
         directly or through others):\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

#[test]
fn no_source_file_has_more_than_1000_lines_before_its_tests() {
    let src = src_dir();
    let mut long = Vec::new();
    let files = rust_files(&src);
    assert!(!files.is_empty());
    for rel in files {
        let text = std::fs::read_to_string(src.join(&rel)).unwrap();
        let lines = text
            .lines()
            .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
            .count();
        if lines > MAX_LINES {
            long.push(format!("src/{rel}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "files with more than {MAX_LINES} lines before their first #[cfg(test)]:\n  {}",
        long.join("\n  ")
    );
}

#[test]
fn no_function_needs_too_many_arguments() {
    let src = src_dir();
    let mut found = Vec::new();
    for rel in rust_files(&src) {
        let text = std::fs::read_to_string(src.join(&rel)).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("too_many_arguments") {
                found.push(format!("src/{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} allowances of too_many_arguments (group the arguments into a struct):\n  {}",
        found.len(),
        found.join("\n  ")
    );
}

/// The text of the `# Layout` section of lib.rs's crate docs (`//!` lines up to the next
/// heading).
fn layout_section(lib: &str) -> Option<String> {
    let docs: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let start = docs.iter().position(|l| *l == "# Layout")?;
    let section = docs[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    Some(section)
}

/// Whether `layout` names the directory `dir` (`a/b`): as `` [`b`] ``, `` [`a::b`] ``, `b/` or
/// `a/b/`.
fn names_directory(layout: &str, dir: &str) -> bool {
    let last = dir.rsplit('/').next().unwrap();
    [
        format!("[`{last}`]"),
        format!("[`{}`]", dir.replace('/', "::")),
        format!("`{dir}/`"),
        format!("{dir}/"),
    ]
    .iter()
    .any(|form| {
        layout.match_indices(form.as_str()).any(|(i, _)| {
            // `b/` must not be the end of another name (`xb/`).
            !form.ends_with('/')
                || i == 0
                || !layout[..i].chars().next_back().is_some_and(is_ident_char)
        })
    })
}

#[test]
fn lib_layout_names_every_folder() {
    let src = src_dir();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layout = layout_section(&lib).expect("lib.rs has a `//! # Layout` section");
    let missing: Vec<String> = directories(&src)
        .into_iter()
        .filter(|d| !names_directory(&layout, d))
        .collect();
    assert!(
        missing.is_empty(),
        "folders under src/ that lib.rs's `# Layout` does not name (as [`name`] or name/):\n  {}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The checkers themselves, on made-up input.
// ---------------------------------------------------------------------------------------------

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry(a.to_string()).or_default().insert(b.to_string());
        g.entry(b.to_string()).or_default();
    }
    g
}

/// A made-up graph's edges and the circles the finder must report for it.
type CycleCase<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn cycle_finder_reports_every_circle_and_nothing_else() {
    let table: &[CycleCase] = &[
        (&[], &[]),
        (&[("a", "b"), ("b", "c"), ("a", "c")], &[]),
        (&[("a", "a")], &[]),
        (&[("a", "b"), ("b", "a")], &["a -> b -> a"]),
        (
            &[("d", "a"), ("b", "c"), ("c", "a"), ("a", "b")],
            &["a -> b -> c -> a"],
        ),
        (
            &[
                ("a", "b"),
                ("b", "a"),
                ("c", "d"),
                ("d", "e"),
                ("e", "c"),
                ("b", "c"),
            ],
            &["a -> b -> a", "c -> d -> e -> c"],
        ),
        // Two circles sharing a module: both reported.
        (
            &[("x", "y"), ("y", "x"), ("y", "z"), ("z", "y")],
            &["x -> y -> x", "y -> z -> y"],
        ),
        // A long way round and a shortcut: each edge's shortest circle.
        (
            &[("a", "b"), ("b", "c"), ("c", "d"), ("d", "a"), ("c", "a")],
            &["a -> b -> c -> a", "a -> b -> c -> d -> a"],
        ),
    ];
    for (edges, want) in table {
        let got = cycles(&graph_of(edges));
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "edges {edges:?}");
    }
}

fn sources_of(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, text)| (module_of(path).unwrap(), text.to_string()))
        .collect()
}

fn edges_of(graph: &Graph) -> Vec<String> {
    graph
        .iter()
        .flat_map(|(a, bs)| bs.iter().map(move |b| format!("{a} -> {b}")))
        .collect()
}

#[test]
fn import_scanner_finds_use_trees_inline_paths_and_relative_paths() {
    let sources = sources_of(&[
        (
            "upstream/mod.rs",
            "mod connect;\npub use connect::dial;\npub use self::pool::Pool;\n",
        ),
        (
            "upstream/connect.rs",
            "use super::Pool;\nuse crate::config::{\n    Upstream,\n    TargetAddr as T,\n};\n",
        ),
        ("upstream/pool.rs", "pub struct Pool;\n"),
        (
            "config.rs",
            "// crate::proxy::x in a comment is not an import\n\
             const S: &str = \"crate::proxy::y\";\n\
             const R: &str = r#\"crate::proxy::\"z\"#;\n\
             fn f<'a>(x: &'a str) -> char { let _ = crate::l4::serve; '{' }\n\
             #[cfg(test)]\nmod tests {\n    use crate::proxy::Thing;\n    fn g() { let _ = '}'; }\n}\n\
             fn h() { crate::upstream::connect::dial(); }\n",
        ),
        ("proxy.rs", "use std::io;\nuse crate::{config, upstream::{self, Pool}};\n"),
        ("l4.rs", "use monoio::net::TcpStream;\n"),
    ]);
    let graph = import_graph(&sources);
    assert_eq!(
        edges_of(&graph),
        [
            "config -> l4",
            "config -> upstream::connect",
            "proxy -> config",
            "proxy -> upstream",
            "upstream -> upstream::connect",
            "upstream -> upstream::pool",
            "upstream::connect -> config",
            "upstream::connect -> upstream",
        ]
    );
    assert_eq!(
        cycles(&graph),
        [
            "config -> upstream::connect -> config",
            "upstream -> upstream::connect -> upstream",
        ]
    );
}

#[test]
fn length_and_layout_checks_read_their_markers() {
    assert_eq!(module_of("a/b.rs").as_deref(), Some("a::b"));
    assert_eq!(module_of("a/mod.rs").as_deref(), Some("a"));
    assert_eq!(module_of("lib.rs"), None);
    let lib = "//! Crate.\n//!\n//! # Layout\n//!\n//! - [`config`]: files.\n//! - `worker/`: \
               threads.\n//!\n//! # Other\n//!\n//! - [`net`]\n\npub mod config;\n";
    let layout = layout_section(lib).unwrap();
    assert!(names_directory(&layout, "config"));
    assert!(names_directory(&layout, "worker"));
    assert!(!names_directory(&layout, "net"), "outside the section");
    assert!(!names_directory(&layout, "ker"));
}
