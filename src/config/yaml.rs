//! A YAML document as a tree of nodes that remember where they were written.
//!
//! serde stops at the first mismatch; a values file is checked as a whole so
//! that `run` and `check` report every problem at once. `serde-saphyr` parses
//! (and rejects duplicate keys, bad syntax, alias bombs); the tree keeps each
//! node's line and column for the schema walk in `values.rs`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: Value,
    /// Source position of the node.
    pub at: Pos,
}

/// A line and column in the values file, both 1-based (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// The value of a YAML node, with scalars resolved by the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i128` (ports are checked later).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string, quoted or plain.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys are kept as written, in order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key as text (YAML keys are read as strings).
    pub name: String,
    /// Where the key is written.
    pub at: Pos,
}

/// The document could not be parsed as YAML (syntax, duplicate key, limits).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser stopped, when it knows.
    pub at: Option<Pos>,
    /// The parser's message without its source snippet.
    pub message: String,
}

/// Parse `text` into a tree. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    // YAML 1.2 core booleans only: `namespace: n` is the string "n", not false.
    // The default node budget (250 000) refuses files past ~16 000 routes; a
    // load-test config may carry 100 000. Other limits (depth, aliases) stay.
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_nodes = 8_000_000;
    budget.max_events = 16_000_000;
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true, budget: Some(budget) };
    match serde_saphyr::from_str_with_options::<Spanned<Value>>(text, options) {
        Ok(spanned) => Ok(node(spanned)),
        Err(e) => {
            let at = e.location().map(|l| Pos {
                line: l.line() as u32,
                column: l.column() as u32,
            });
            Err(SyntaxError {
                at,
                message: clean_message(&e.to_string()),
            })
        }
    }
}

impl Value {
    /// A short name of the YAML type, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

fn node(spanned: Spanned<Value>) -> Node {
    let loc = spanned.referenced;
    Node {
        value: spanned.value,
        at: Pos {
            line: loc.line() as u32,
            column: loc.column() as u32,
        },
    }
}

/// serde-saphyr prefixes "error: line L column C: " and may append a snippet;
/// the caller prints its own location, so keep the bare message.
fn clean_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or(raw);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    }
}

// === impl Deserialize for Value ===

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_i128<E>(self, n: i128) -> Result<Value, E> {
        Ok(Value::Int(n))
    }
    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Value, E> {
        i128::try_from(n)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Float(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value>>()? {
            items.push(node(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        // Keys are read as strings so that `on:` or `5432:` stay text, as
        // Helm's Go YAML reads map[string]interface{} keys.
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            let at = Pos {
                line: key.referenced.line() as u32,
                column: key.referenced.column() as u32,
            };
            entries.push((Key { name: key.value, at }, node(value)));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Key, Node)] {
        match &node.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn keeps_positions_and_scalar_types() {
        let doc = parse("a:\n  port: 5432\n  quoted: \"5432\"\n  off: ~\n  on: yes\n").unwrap();
        let a = &map(&doc)[0];
        assert_eq!(a.0.name, "a");
        let inner = map(&a.1);
        assert_eq!(inner[0].0.at, Pos { line: 2, column: 3 });
        assert_eq!(inner[0].1.value, Value::Int(5432));
        assert_eq!(inner[1].1.value, Value::Str("5432".into()));
        assert_eq!(inner[2].0.name, "off");
        assert_eq!(inner[2].1.value, Value::Null);
        assert_eq!(inner[3].0.name, "on");
    }

    #[test]
    fn duplicate_keys_are_syntax_errors_with_a_line() {
        let err = parse("routes:\n  tls: []\n  tls: []\n").unwrap_err();
        assert_eq!(err.at.map(|p| p.line), Some(3));
        assert!(err.message.contains("duplicate"), "{}", err.message);
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
    }
}
