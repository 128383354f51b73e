//! A small document tree and its YAML and JSON text, for `render` and `check`.
//!
//! Hand-written rather than a serializer because the output carries comments
//! (what Envoy cannot do, which chart template an object comes from) and keys
//! in the order the chart and Envoy's docs use; scalars are quoted only when
//! YAML would read them as something else.

use std::fmt::Write;

/// One value of a rendered document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A string (quoted on output only when needed).
    Str(String),
    /// An integer.
    Int(i64),
    /// `true` / `false`.
    Bool(bool),
    /// A mapping, keys in insertion order.
    Map(Map),
    /// A sequence.
    Seq(Vec<Node>),
}

/// A mapping whose entries may carry comment lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map(pub Vec<Entry>);

/// One key of a mapping, with the comment lines printed above it in YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Comment lines (without `# `).
    pub comment: Vec<String>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Node,
}

// === impl Map ===

impl Map {
    /// An empty mapping.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Append `key: value`.
    pub fn with(mut self, key: &str, value: impl Into<Node>) -> Self {
        self.push(key, value);
        self
    }

    /// Append `key: value` when `value` is `Some`.
    pub fn with_opt(mut self, key: &str, value: Option<impl Into<Node>>) -> Self {
        if let Some(value) = value {
            self.push(key, value);
        }
        self
    }

    /// Append `key: value` with comment lines above it.
    pub fn with_comment(mut self, comment: &[String], key: &str, value: impl Into<Node>) -> Self {
        self.0.push(Entry {
            comment: comment.to_vec(),
            key: key.to_string(),
            value: value.into(),
        });
        self
    }

    /// Append `key: value`.
    pub fn push(&mut self, key: &str, value: impl Into<Node>) {
        self.0.push(Entry {
            comment: Vec::new(),
            key: key.to_string(),
            value: value.into(),
        });
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.0.iter().find(|e| e.key == key).map(|e| &e.value)
    }
}

impl From<Map> for Node {
    fn from(map: Map) -> Self {
        Node::Map(map)
    }
}
impl From<&str> for Node {
    fn from(s: &str) -> Self {
        Node::Str(s.to_string())
    }
}
impl From<String> for Node {
    fn from(s: String) -> Self {
        Node::Str(s)
    }
}
impl From<&String> for Node {
    fn from(s: &String) -> Self {
        Node::Str(s.clone())
    }
}
impl From<u16> for Node {
    fn from(n: u16) -> Self {
        Node::Int(n.into())
    }
}
impl From<u32> for Node {
    fn from(n: u32) -> Self {
        Node::Int(n.into())
    }
}
impl From<u64> for Node {
    fn from(n: u64) -> Self {
        Node::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Node {
    fn from(n: usize) -> Self {
        Node::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<bool> for Node {
    fn from(b: bool) -> Self {
        Node::Bool(b)
    }
}
impl From<Vec<Node>> for Node {
    fn from(items: Vec<Node>) -> Self {
        Node::Seq(items)
    }
}

// === YAML ===

/// One YAML document: `---`, the header comment lines, then the tree.
pub fn yaml_document(out: &mut String, header: &[String], root: &Node) {
    out.push_str("---\n");
    for line in header {
        comment(out, 0, line);
    }
    match root {
        Node::Map(map) => yaml_map_with_comments(out, map, 0),
        Node::Seq(items) => yaml_seq(out, items, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// One entry; the caller has written the indentation of its first line.
fn yaml_entry(out: &mut String, entry: &Entry, indent: usize) {
    out.push_str(&yaml_key(&entry.key));
    out.push(':');
    match &entry.value {
        Node::Map(map) if map.0.is_empty() => out.push_str(" {}\n"),
        Node::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(map) => {
            out.push('\n');
            yaml_map_with_comments(out, map, indent + 2);
        }
        Node::Seq(items) => {
            out.push('\n');
            yaml_seq(out, items, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// A mapping on lines of its own: every entry indented, comments above.
fn yaml_map_with_comments(out: &mut String, map: &Map, indent: usize) {
    for entry in &map.0 {
        for line in &entry.comment {
            comment(out, indent, line);
        }
        pad(out, indent);
        yaml_entry(out, entry, indent);
    }
}

fn yaml_seq(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        match item {
            Node::Map(map) if !map.0.is_empty() => {
                // Comments of the first entry go above the `- ` line.
                for line in &map.0[0].comment {
                    comment(out, indent, line);
                }
                pad(out, indent);
                out.push_str("- ");
                yaml_entry(out, &map.0[0], indent + 2);
                yaml_map_with_comments(out, &Map(map.0[1..].to_vec()), indent + 2);
            }
            Node::Map(_) => {
                pad(out, indent);
                out.push_str("- {}\n");
            }
            Node::Seq(inner) if !inner.is_empty() => {
                pad(out, indent);
                out.push_str("-\n");
                yaml_seq(out, inner, indent + 2);
            }
            Node::Seq(_) => {
                pad(out, indent);
                out.push_str("- []\n");
            }
            scalar => {
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

fn comment(out: &mut String, indent: usize, line: &str) {
    pad(out, indent);
    if line.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {line}");
    }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn yaml_key(key: &str) -> String {
    yaml_str(key)
}

fn yaml_scalar(node: &Node) -> String {
    match node {
        Node::Str(s) => yaml_str(s),
        Node::Int(n) => n.to_string(),
        Node::Bool(b) => b.to_string(),
        // Only scalars reach here.
        Node::Map(_) | Node::Seq(_) => String::new(),
    }
}

/// A string as a plain YAML scalar when YAML 1.1 and 1.2 both read it back as
/// the same string, else double-quoted.
pub fn yaml_str(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        json_string(s)
    }
}

fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphanumeric() || first == '/') {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-' | ':'))
    {
        return false;
    }
    if s.ends_with(':') || s.contains(": ") {
        return false;
    }
    const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "null", "y", "n"];
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)) {
        return false;
    }
    // Anything number-like (5432, 1.5, 1e3, 0x1f, 0o17, 1:20 sexagesimal in YAML 1.1).
    if first.is_ascii_digit() {
        let lower = s.to_ascii_lowercase();
        if s.parse::<f64>().is_ok()
            || lower.starts_with("0x")
            || lower.starts_with("0o")
            || lower.starts_with("0b")
            || s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | ':' | '-'))
        {
            return false;
        }
    }
    true
}

// === JSON ===

/// A JSON string literal, escaped per RFC 8259.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The tree as pretty-printed JSON (two-space indent, comments dropped).
pub fn json(node: &Node) -> String {
    let mut out = String::new();
    json_node(&mut out, node, 0);
    out.push('\n');
    out
}

fn json_node(out: &mut String, node: &Node, indent: usize) {
    match node {
        Node::Str(s) => out.push_str(&json_string(s)),
        Node::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Node::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Node::Map(map) if map.0.is_empty() => out.push_str("{}"),
        Node::Seq(items) if items.is_empty() => out.push_str("[]"),
        Node::Map(map) => {
            out.push_str("{\n");
            for (i, entry) in map.0.iter().enumerate() {
                pad(out, indent + 2);
                out.push_str(&json_string(&entry.key));
                out.push_str(": ");
                json_node(out, &entry.value, indent + 2);
                out.push_str(if i + 1 < map.0.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
        Node::Seq(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, indent + 2);
                json_node(out, item, indent + 2);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::{self, Value};

    #[test]
    fn quotes_only_what_yaml_would_misread() {
        for plain in [
            "db.example.com",
            "nautobot",
            "120s",
            "3600s",
            "a/b:5432",
            "type.googleapis.com/x.V3",
        ] {
            assert_eq!(yaml_str(plain), plain);
        }
        for quoted in [
            "*.example.com",
            "@type",
            "5432",
            "1.5",
            "1e3",
            "0x1f",
            "1:20",
            "true",
            "No",
            "null",
            "",
            "a: b",
            "-x",
            "x:",
            "has space",
            "line\nbreak",
        ] {
            assert!(yaml_str(quoted).starts_with('"'), "{quoted:?} left plain");
        }
    }

    #[test]
    fn yaml_round_trips_through_the_loader_parser() {
        let tree = Node::Map(
            Map::new()
                .with("name", "x")
                .with_comment(&["a comment".into()], "port", 5432u16)
                .with("empty", Map::new())
                .with("none", Vec::<Node>::new())
                .with(
                    "items",
                    vec![
                        Node::Map(Map::new().with("a", "*.w").with("b", Map::new().with("c", true))),
                        Node::from("5432"),
                    ],
                ),
        );
        let mut out = String::new();
        yaml_document(&mut out, &["header".into()], &tree);
        let doc = yaml::parse(out.trim_start_matches("---\n")).unwrap();
        let Value::Map(top) = doc.value else { panic!("{out}") };
        assert_eq!(top[1].1.value, Value::Int(5432));
        let Value::Seq(items) = &top[4].1.value else {
            panic!("{out}")
        };
        assert_eq!(items[1].value, Value::Str("5432".into()));
        let Value::Map(first) = &items[0].value else {
            panic!("{out}")
        };
        assert_eq!(first[0].1.value, Value::Str("*.w".into()));
        assert!(
            out.contains("  # a comment\n") || out.contains("# a comment\nport"),
            "{out}"
        );
    }

    #[test]
    fn json_escapes_and_nests() {
        let tree = Node::Map(Map::new().with("k\"", vec![Node::Int(1), Node::from("a\u{1}")]));
        assert_eq!(json(&tree), "{\n  \"k\\\"\": [\n    1,\n    \"a\\u0001\"\n  ]\n}\n");
    }
}
