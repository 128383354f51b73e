//! A YAML document as a tree of nodes that remember where they were written.
//!
//! serde stops at the first mismatch; a values file is checked as a whole so
//! that `run` and `check` report every problem at once. `serde-saphyr` parses
//! (and rejects duplicate keys, bad syntax, alias bombs); the tree keeps each
//! node's line and column for the schema walk in `values.rs`.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node and where it starts (1-based line and column). Text
/// borrows from the document where the parser allows it (`'a`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    /// What the node holds.
    pub value: Value<'a>,
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
pub enum Value<'a> {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i128` (ports are checked later).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string, quoted or plain.
    Str(Cow<'a, str>),
    /// A sequence.
    Seq(Vec<Node<'a>>),
    /// A mapping; keys are kept as written, in order.
    Map(Vec<(Key<'a>, Node<'a>)>),
}

/// A mapping key and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key<'a> {
    /// The key as text (YAML keys are read as strings).
    pub name: Cow<'a, str>,
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

/// Fuzzing only: when the fast path takes `text`, the tree it builds equals
/// serde-saphyr's, positions included. Panics otherwise.
#[cfg(fuzzing)]
pub fn check_fast_path(text: &str) {
    if let Some(fast) = fast::parse(text, &budget()) {
        let slow = parse_with_serde(text, budget());
        assert_eq!(Ok(&fast), slow.as_ref().map_err(|e| e.message.clone()), "{text:?}");
    }
}

/// Parse `text` into a tree. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node<'_>, SyntaxError> {
    let budget = budget();
    // serde-saphyr's Spanned<Value> tree costs ~30 µs per route (100 000
    // routes: 3 s); plain files are built straight from the parser's events.
    if let Some(root) = fast::parse(text, &budget) {
        return Ok(root);
    }
    parse_with_serde(text, budget)
}

/// Parser limits. The default node budget (250 000) refuses files past
/// ~16 000 routes; a load-test config may carry 100 000. Other limits
/// (depth, aliases) stay.
fn budget() -> serde_saphyr::budget::Budget {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_nodes = 8_000_000;
    budget.max_events = 16_000_000;
    budget
}

/// The reference path: every construct, every limit, and the error messages.
fn parse_with_serde(text: &str, budget: serde_saphyr::budget::Budget) -> Result<Node<'static>, SyntaxError> {
    // YAML 1.2 core booleans only: `namespace: n` is the string "n", not false.
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true, budget: Some(budget) };
    match serde_saphyr::from_str_with_options::<Spanned<Value<'static>>>(text, options) {
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

impl Value<'_> {
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

fn node(spanned: Spanned<Value<'static>>) -> Node<'static> {
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

/// A tree builder on granit-parser's events for files made only of
/// mappings, sequences and plain or quoted scalars, resolving scalars as
/// serde-saphyr does. It gives up (`None`) on anything else (anchors,
/// aliases, tags, merge keys, directives, several documents, a duplicate or
/// non-text key, a scalar it cannot be sure how serde-saphyr reads, a syntax
/// error, nearing a budget limit), and the caller then parses with
/// serde-saphyr, so errors and unusual files read exactly as before.
mod fast {
    use std::borrow::Cow;

    use granit_parser::{Event, Parser, ScalarStyle, Span};
    use serde_saphyr::budget::Budget;

    use super::{Key, Node, Pos, Value};

    /// Mappings larger than this go to serde-saphyr: duplicate keys are found
    /// by a linear scan here.
    const MAX_KEYS: usize = 64;

    /// An open collection: its position, where its children start on the
    /// shared stacks (each collection then gets one exact allocation), and
    /// for a mapping the key waiting for its value.
    enum Frame<'a> {
        Seq(Pos, usize),
        Map(Pos, usize, Option<Key<'a>>),
    }

    pub(super) fn parse<'a>(text: &'a str, budget: &Budget) -> Option<Node<'a>> {
        // The parser limits serde-saphyr sets from the same budget, so nothing
        // parses here that it would refuse.
        let options = granit_parser::options! {
            simple_key_max_lookahead: budget.simple_key_max_lookahead,
            flow_nesting_limit: budget.flow_nesting_limit,
            block_nesting_limit: granit_parser::Options::default()
                .block_nesting_limit
                .max(budget.max_depth.saturating_add(1)),
        };
        // Scalars borrow `text` wherever the parser does (plain, or quoted with
        // no escape or line fold): no allocation per key or value.
        let parser = Parser::new_from_str_with_options(text, options);
        let (mut events, mut nodes, mut scalar_bytes, mut documents) = (0usize, 0usize, 0usize, 0usize);
        let mut stack: Vec<Frame<'a>> = Vec::new();
        let (mut items, mut entries): (Vec<Node<'a>>, Vec<(Key<'a>, Node<'a>)>) = (Vec::new(), Vec::new());
        let mut root = None;
        for event in parser {
            let (event, span) = event.ok()?;
            events += 1;
            // Well inside every limit, or serde-saphyr decides (and words the breach).
            if events * 2 > budget.max_events || nodes * 2 > budget.max_nodes || stack.len() * 2 > budget.max_depth {
                return None;
            }
            let node = match event {
                Event::StreamStart | Event::DocumentEnd => continue,
                Event::StreamEnd => break,
                Event::DocumentStart(_, None) if documents == 0 => {
                    documents += 1;
                    continue;
                }
                Event::Scalar(text, style, 0, None) => {
                    nodes += 1;
                    scalar_bytes += text.len();
                    if scalar_bytes * 2 > budget.max_total_scalar_bytes {
                        return None;
                    }
                    if let Some(Frame::Map(_, start, key @ None)) = stack.last_mut() {
                        let name = key_text(text, style)?;
                        let siblings = &entries[*start..];
                        if siblings.len() >= MAX_KEYS || siblings.iter().any(|(k, _)| k.name == name) {
                            return None;
                        }
                        *key = Some(Key { name, at: pos(&span) });
                        continue;
                    }
                    Node {
                        value: scalar(text, style)?,
                        at: pos(&span),
                    }
                }
                Event::SequenceStart(_, 0, None) => {
                    nodes += 1;
                    stack.push(Frame::Seq(pos(&span), items.len()));
                    continue;
                }
                Event::MappingStart(_, 0, None) => {
                    nodes += 1;
                    stack.push(Frame::Map(pos(&span), entries.len(), None));
                    continue;
                }
                Event::SequenceEnd => match stack.pop()? {
                    Frame::Seq(at, start) => Node {
                        value: Value::Seq(items.drain(start..).collect()),
                        at,
                    },
                    Frame::Map(..) => return None,
                },
                Event::MappingEnd => match stack.pop()? {
                    Frame::Map(at, start, None) => Node {
                        value: Value::Map(entries.drain(start..).collect()),
                        at,
                    },
                    _ => return None,
                },
                _ => return None,
            };
            match stack.last_mut() {
                Some(Frame::Seq(..)) => items.push(node),
                Some(Frame::Map(_, _, key)) => entries.push((key.take()?, node)),
                None if root.is_none() => root = Some(node),
                None => return None,
            }
        }
        // Only a mapping at the root: an empty or scalar document is rare and cheap.
        root.filter(|r: &Node<'a>| matches!(r.value, Value::Map(_)) && stack.is_empty())
    }

    fn pos(span: &Span) -> Pos {
        Pos {
            line: span.start.line() as u32,
            column: span.start.col() as u32 + 1,
        }
    }

    /// A key serde-saphyr reads as this same text: quoted, or plain and
    /// starting with a letter (no null, number or merge key).
    fn key_text(text: Cow<'_, str>, style: ScalarStyle) -> Option<Cow<'_, str>> {
        match scalar(text, style)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// serde-saphyr's `deserialize_any` for an untagged scalar (YAML 1.2 core
    /// schema, strict booleans), for the cases that are certain; `None` otherwise.
    fn scalar(text: Cow<'_, str>, style: ScalarStyle) -> Option<Value<'_>> {
        match style {
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted | ScalarStyle::Literal | ScalarStyle::Folded => {
                return Some(Value::Str(text))
            }
            ScalarStyle::Plain => {}
            #[allow(unreachable_patterns)]
            _ => return None,
        }
        let bytes = text.as_bytes();
        match &*text {
            "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
            "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
            "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
            _ => {}
        }
        // A decimal without sign or leading zero that fits u64: an integer.
        if bytes.iter().all(u8::is_ascii_digit) && bytes.len() <= 18 && (bytes.len() == 1 || bytes[0] != b'0') {
            return text.parse::<i128>().ok().map(Value::Int);
        }
        // A digit, then a letter no radix prefix or exponent uses (`120s`,
        // `1h30m`): no number parser takes it.
        if bytes[0].is_ascii_digit()
            && !matches!(bytes.get(1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B'))
            && bytes
                .iter()
                .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'))
            && !bytes.contains(&b'$')
        {
            return Some(Value::Str(text));
        }
        // Starts with a letter: text, except spellings a float parser might take.
        let float_word = text
            .get(..3)
            .is_some_and(|head| head.eq_ignore_ascii_case("inf") || head.eq_ignore_ascii_case("nan"));
        if bytes[0].is_ascii_alphabetic() && !float_word && !bytes.contains(&b'$') {
            return Some(Value::Str(text));
        }
        None
    }
}

// === impl Deserialize for Value ===

impl<'de> Deserialize<'de> for Value<'static> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'static>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value<'static>, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value<'static>, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value<'static>, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value<'static>, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value<'static>, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value<'static>, E> {
        Ok(Value::Int(n.into()))
    }
    fn visit_i128<E>(self, n: i128) -> Result<Value<'static>, E> {
        Ok(Value::Int(n))
    }
    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Value<'static>, E> {
        i128::try_from(n)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value<'static>, E> {
        Ok(Value::Float(n))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value<'static>, E> {
        Ok(Value::Str(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Value<'static>, E> {
        Ok(Value::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'static>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Value<'static>>>()? {
            items.push(node(item));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'static>, A::Error> {
        let mut entries = Vec::new();
        // Keys are read as strings so that `on:` or `5432:` stay text, as
        // Helm's Go YAML reads map[string]interface{} keys.
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Value<'static>>>()?;
            let at = Pos {
                line: key.referenced.line() as u32,
                column: key.referenced.column() as u32,
            };
            entries.push((
                Key {
                    name: Cow::Owned(key.value),
                    at,
                },
                node(value),
            ));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<'n, 'a>(node: &'n Node<'a>) -> &'n [(Key<'a>, Node<'a>)] {
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

    /// The fast path builds the same tree as serde-saphyr, or declines.
    fn same_as_serde(text: &str) -> bool {
        let slow = parse_with_serde(text, budget());
        match fast::parse(text, &budget()) {
            Some(fast) => {
                assert_eq!(Ok(&fast), slow.as_ref().map_err(|e| e.message.clone()), "{text}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn fast_path_matches_serde_saphyr() {
        for file in [
            "config/values.example.yaml",
            "tests/golden/wide.values.yaml",
            "tests/golden/broken.values.yaml",
        ] {
            let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + file).unwrap();
            assert!(same_as_serde(&text), "{file} took the slow path");
        }
        let taken = [
            "a:\n  port: 5432\n  quoted: \"5432\"\n  off: ~\n  on: yes\n",
            "routes:\n  tls:\n    - {fqdn: a.example.com, service: {name: s, port: 1}}\n    - fqdn: 'b'\n      x: [1, 2, \"3\"]\n",
            "a: true\nb: False\nc: null\nd:\ne: \"\"\nf: |\n  text\n  more\ng: >\n  folded\n  text\nh: 0\ni: x y z\n",
            "# comment\n---\na: {b: [], c: {}}\n...\n",
            "a: 120s\nb: 1h30m\nc: 500ms\nd: 5s\n",
            "a:\n- 1\n- - 2\n  - 3\n-\n- k: v\n  l: w\n",
            "a: \"multi\n  line\"\nb: plain\n  continued\n",
        ];
        for text in taken {
            assert!(same_as_serde(text), "{text} took the slow path");
        }
        let declined = [
            "",
            "- 1\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "base: &b {x: 1}\nc:\n  <<: *b\n",
            "a: 1\na: 2\n",
            "5432: x\n",
            "a: 012\n",
            "a: -1\n",
            "a: 1.5\n",
            "a: .inf\n",
            "a: inf\n",
            "a: NaN\n",
            "a: 0x1f\n",
            "a: 1_000\n",
            "a: 1e5\n",
            "a: 0b1\n",
            "a: 10.0.0.1\n",
            "a: 99999999999999999999\n",
            "a: b\n---\nc: d\n",
            "%YAML 1.2\n---\na: b\n",
            "a: [1, 2\n",
            "a:\n  b: 1\n c: 2\n",
            "? [a]\n: b\n",
        ];
        for text in declined {
            assert!(!same_as_serde(text), "{text:?} took the fast path");
        }
    }

    #[test]
    fn fast_path_matches_serde_saphyr_on_a_generated_file() {
        let mut text = String::from(
            "gateways:\n  external: {name: gw, namespace: envoy-gateway, className: eg}\nroutes:\n  tls:\n",
        );
        for i in 0..200 {
            text.push_str(&format!(
                "    - {{fqdn: svc{i}.example.com, name: e{i}, namespace: bench, gatewayPort: 443, service: {{name: bench, port: 1}}}}\n"
            ));
            text.push_str(&format!(
                "    - fqdn: '*.w{i}.example.net'\n      service:\n        name: b\n        port: {}\n",
                i + 1
            ));
        }
        assert!(same_as_serde(&text));
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
    }
}
