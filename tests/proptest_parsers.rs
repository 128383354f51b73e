//! Property tests for the parsers a client or a values file can reach:
//! SNI normalisation and matching against a naive reference, the values-file
//! loader on arbitrary text and on mutations of a valid file, ClientHello
//! sniffing in random chunkings, and PROXY v2 headers read back.
//!
//! Case counts are proptest's (256 per property); `PROPTEST_CASES=N` scales
//! them. The fuzz targets under `fuzz/` cover the same parsers with
//! coverage guidance; these run on every `cargo test`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use sni_router::config::{self, Severity, SniPattern};
use sni_router::proxy_protocol;
use sni_router::routes::{Backends, RouteTable};
use sni_router::sniff::{self, Sniffed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// === SNI matching ===

/// A few labels, so that generated names and patterns collide often.
const LABELS: &[&str] = &["a", "b", "db", "x-1", "lab", "example", "com", "9"];

/// One `routes.tls` item: a pattern and a gateway port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Item {
    wildcard: bool,
    labels: Vec<&'static str>,
    port: u16,
}

impl Item {
    fn fqdn(&self) -> String {
        let name = self.labels.join(".");
        if self.wildcard {
            format!("*.{name}")
        } else {
            name
        }
    }
}

fn item() -> impl Strategy<Value = Item> {
    (
        any::<bool>(),
        prop::collection::vec(prop::sample::select(LABELS), 1..4),
        prop::sample::select(&[443u16, 5432][..]),
    )
        .prop_map(|(wildcard, labels, port)| Item { wildcard, labels, port })
}

/// Route items with distinct (port, fqdn), as `load` requires.
fn items() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec(item(), 0..12).prop_map(|items| {
        let mut seen = BTreeSet::new();
        items.into_iter().filter(|i| seen.insert((i.port, i.fqdn()))).collect()
    })
}

/// A name a client might send: labels from the same pool, each letter's case
/// flipped at random, sometimes one or two trailing dots, sometimes an empty
/// label or a leading dot.
fn query() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(LABELS), 0..5),
        any::<u64>(),
        0..3usize,
        0..6usize,
    )
        .prop_map(|(labels, case_bits, dots, shape)| {
            let mut name = labels.join(".");
            match shape {
                0 => name.insert(0, '.'),
                1 if !labels.is_empty() => name = name.replacen('.', "..", 1),
                _ => {}
            }
            let mut out: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if case_bits >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            out.extend(std::iter::repeat_n('.', dots));
            out
        })
}

fn values_for(items: &[Item]) -> String {
    let mut yaml =
        String::from("gateways:\n  external: {name: gw, namespace: envoy-gateway, className: eg}\nroutes:\n  tls:\n");
    for (i, item) in items.iter().enumerate() {
        yaml.push_str(&format!(
            "    - {{fqdn: '{}', name: r{i}, gatewayPort: {}, service: {{name: s{i}, port: 443}}}}\n",
            item.fqdn(),
            item.port
        ));
    }
    yaml
}

/// The rules as DESIGN.md states them, by brute force over every item:
/// case-insensitive, one trailing dot ignored, exact name first, then the
/// longest wildcard suffix; `*.example.com` matches a name with at least one
/// more (non-empty) label in front, not `example.com` itself.
fn reference(items: &[Item], port: u16, sni: &str) -> Option<usize> {
    let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
    if name.is_empty() {
        return None;
    }
    let on_port = || items.iter().enumerate().filter(|(_, i)| i.port == port);
    if let Some((i, _)) = on_port().find(|(_, i)| !i.wildcard && i.labels.join(".") == name) {
        return Some(i);
    }
    on_port()
        .filter(|(_, i)| i.wildcard)
        .filter(|(_, i)| {
            let suffix = i.labels.join(".");
            name.strip_suffix(&suffix)
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty())
        })
        .max_by_key(|(_, i)| i.labels.join(".").len())
        .map(|(i, _)| i)
}

proptest! {
    #[test]
    fn lookup_agrees_with_the_naive_reference(items in items(), queries in prop::collection::vec(query(), 1..16)) {
        let config = config::load(&values_for(&items), Path::new("p.yaml")).expect("generated values load");
        let table = RouteTable::new(&config, &Backends::default());
        for sni in &queries {
            for port in [443u16, 5432, 6379] {
                let got = table.lookup(port, sni).map(|t| t.route.name.clone());
                let want = reference(&items, port, sni).map(|i| format!("r{i}"));
                prop_assert_eq!(&got, &want, "port {} sni {:?} routes {:?}", port, sni, items);
                // What matched must match by the pattern's own rule too.
                if let Some(t) = table.lookup(port, sni) {
                    let name = sni.strip_suffix('.').unwrap_or(sni).to_ascii_lowercase();
                    prop_assert!(t.route.sni.matches(&name), "{} matched {:?}", t.route.sni, sni);
                }
            }
        }
    }

    #[test]
    fn sni_pattern_parse_never_panics_and_round_trips(text in "\\PC{0,80}") {
        if let Ok(pattern) = SniPattern::parse(&text) {
            prop_assert_eq!(pattern.to_string(), text.clone());
            prop_assert!(!text.ends_with('.') && !text.bytes().any(|b| b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn generated_host_names_parse_and_match_themselves(item in item(), front in prop::sample::select(LABELS)) {
        let pattern = SniPattern::parse(&item.fqdn()).expect("generated fqdn is valid");
        prop_assert_eq!(pattern.to_string(), item.fqdn());
        let name = item.labels.join(".");
        let under = format!("{front}.{name}");
        match &pattern {
            SniPattern::Exact(_) => {
                prop_assert!(pattern.matches(&name));
                prop_assert!(!pattern.matches(&under));
            }
            SniPattern::Wildcard(_) => {
                prop_assert!(!pattern.matches(&name), "a wildcard does not match its own suffix");
                prop_assert!(pattern.matches(&under));
            }
        }
        // Upper case and a trailing dot are refused in the file (normalised only at lookup).
        let dotted = format!("{}.", item.fqdn());
        prop_assert!(SniPattern::parse(&dotted).is_err(), "{} is refused", dotted);
        let upper = item.fqdn().to_ascii_uppercase();
        prop_assert!(upper == item.fqdn() || SniPattern::parse(&upper).is_err(), "{} is refused", upper);
    }
}

/// The deterministic case behind the property above: a wildcard route must
/// not serve a name whose first label is empty, as `SniPattern::matches`
/// (and its unit test in `src/config/tests.rs`) and Envoy's wildcard lookup,
/// which starts its search for a dot at index 1, agree.
#[test]
fn wildcard_does_not_match_an_empty_first_label() {
    let items = [Item {
        wildcard: true,
        labels: vec!["example", "com"],
        port: 443,
    }];
    let config = config::load(&values_for(&items), Path::new("p.yaml")).unwrap();
    let table = RouteTable::new(&config, &Backends::default());
    assert!(table.lookup(443, "a.example.com").is_some());
    assert!(!SniPattern::Wildcard("example.com".into()).matches(".example.com"));
    assert!(
        table.lookup(443, ".example.com").is_none(),
        "RouteTable::lookup routes \".example.com\" to *.example.com; SniPattern::matches says no"
    );
}

// === the values-file loader ===

/// A valid values file with every kind of key, for mutation.
const VALID: &str = "\
gateways:
  external:
    name: gateway-external
    namespace: envoy-gateway
    className: eg
    port: 8443
routes:
  http:
    - fqdn: web.example.com
      service: {name: web, port: 80, backendType: http}
  tls:
    - fqdn: nautobot-db.lab.example.com
      name: nautobot-db
      namespace: nautobot
      gatewayPort: 5432
      service:
        name: nautobot-cluster-rw
        port: 5432
      clientTrafficPolicy:
        tcpKeepalive:
          idleTime: 120s
          interval: 30s
          probes: 3
    - fqdn: '*.lab.example.com'
      from: Selector
      selector: {team: db}
      service: {name: wide, port: 443}
";

/// Check `load`'s contract on `text`: it returns (never panics); a refusal
/// carries at least one error; each error of a text that has lines names a
/// line inside it.
fn check_load(text: &str) -> Result<(), TestCaseError> {
    // YAML breaks lines at LF, CR LF and a lone CR alike.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u32;
    match config::load(text, Path::new("p.yaml")) {
        Ok(config) => {
            // What loads also builds a table without panicking.
            let table = RouteTable::new(&config, &Backends::default());
            prop_assert_eq!(table.all().count(), config.routes.len());
        }
        Err(e) => {
            let errors: Vec<_> = e.problems.iter().filter(|p| p.severity == Severity::Error).collect();
            prop_assert!(!errors.is_empty(), "refused without an error: {}", e);
            for p in errors {
                if !text.trim().is_empty() {
                    prop_assert!(p.at.line >= 1, "error without a line: {}", e);
                }
                prop_assert!(p.at.line <= lines + 1, "line {} of {} lines: {}", p.at.line, lines, e);
                prop_assert!(e.to_string().contains("p.yaml"), "the message names the file: {}", e);
            }
        }
    }
    Ok(())
}

/// One edit of a text: what a hand editing YAML gets wrong.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, usize),
    Dedent(usize),
    Insert(usize, String),
    ReplaceByte(usize, char),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = prop_oneof![
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("{".to_string()),
        Just("'".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("\t".to_string()),
        Just("\"5432\"".to_string()),
        Just("70000".to_string()),
        Just("-1".to_string()),
        Just("~".to_string()),
        Just("!!binary ".to_string()),
        Just("<<: ".to_string()),
        Just("\n  extra: 1\n".to_string()),
        "\\PC{1,12}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<usize>(), 1..5usize).prop_map(|(a, n)| Mutation::Indent(a, n)),
        any::<usize>().prop_map(Mutation::Dedent),
        (any::<usize>(), junk).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), any::<char>()).prop_map(|(a, c)| Mutation::ReplaceByte(a, c)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let n = lines.len();
    let at_char = |i: usize| {
        let chars = text.chars().count().max(1);
        text.char_indices().nth(i % chars).map_or(text.len(), |(b, _)| b)
    };
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i % n);
        }
        Mutation::DuplicateLine(i) => {
            let line = lines[i % n].clone();
            lines.insert(i % n, line);
        }
        Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
        Mutation::Indent(i, k) => lines[i % n].insert_str(0, &" ".repeat(*k)),
        Mutation::Dedent(i) => {
            let line = &mut lines[i % n];
            if line.starts_with(' ') {
                line.remove(0);
            }
        }
        Mutation::Insert(i, s) => {
            let mut t = text.to_string();
            t.insert_str(at_char(*i), s);
            return t;
        }
        Mutation::ReplaceByte(i, c) => {
            let mut t = text.to_string();
            let at = at_char(*i);
            if at < t.len() {
                let len = t[at..].chars().next().map_or(0, char::len_utf8);
                t.replace_range(at..at + len, &c.to_string());
            }
            return t;
        }
        Mutation::Truncate(i) => return text[..at_char(*i)].to_string(),
    }
    lines.join("\n")
}

proptest! {
    #[test]
    fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        check_load(&text)?;
    }

    #[test]
    fn loader_never_panics_on_yaml_shaped_text(
        parts in prop::collection::vec(prop_oneof![
            Just("routes:"), Just("tls:"), Just("http:"), Just("gateways:"), Just("external:"),
            Just("- "), Just("fqdn: "), Just("service: "), Just("{name: a, port: 1}"), Just("port: "),
            Just("gatewayPort: "), Just("'*.example.com'"), Just("db.example.com"), Just("\n"),
            Just("\n  "), Just("\n    "), Just("["), Just("]"), Just(", "), Just("65536"), Just("0"),
            Just("clientTrafficPolicy: {tcpKeepalive: {idleTime: "), Just("}"), Just("120s"), Just("probes: 0"),
        ], 0..60)
    ) {
        check_load(&parts.concat())?;
    }

    #[test]
    fn loader_locates_errors_in_mutated_valid_files(mutations in prop::collection::vec(mutation(), 1..5)) {
        let text = mutations.iter().fold(VALID.to_string(), |t, m| apply(&t, m));
        check_load(&text)?;
    }
}

#[test]
fn the_unmutated_file_loads() {
    let config = config::load(VALID, Path::new("p.yaml")).unwrap();
    assert_eq!(config.routes.len(), 2);
}

// === ClientHello sniffing in random chunkings ===

/// A ClientHello with `sni`, `alpn` and `padding` bytes of padding extension,
/// split into records of at most `record` bytes.
fn hello(sni: &str, alpn: &[String], padding: usize, record: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push = |kind: u16, data: &[u8]| {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    };
    let mut names = vec![0u8];
    names.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    names.extend_from_slice(sni.as_bytes());
    push(0, &[&(names.len() as u16).to_be_bytes()[..], &names].concat());
    if !alpn.is_empty() {
        let list: Vec<u8> = alpn
            .iter()
            .flat_map(|p| std::iter::once(p.len() as u8).chain(p.bytes()))
            .collect();
        push(16, &[&(list.len() as u16).to_be_bytes()[..], &list].concat());
    }
    if padding > 0 {
        push(21, &vec![0u8; padding]);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    hs.chunks(record)
        .flat_map(|part| [&[0x16, 3, 1][..], &(part.len() as u16).to_be_bytes(), part].concat())
        .collect()
}

/// Sniff what a client sends through an in-memory duplex: `negotiation`
/// first (waiting for the router's one-byte answer, as libpq does), then
/// `bytes` in writes of the sizes in `chunks`, cycled.
fn sniff_in_chunks(
    negotiation: Option<&[u8]>,
    bytes: &[u8],
    chunks: &[usize],
) -> (Result<Sniffed, sniff::SniffError>, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let negotiation = negotiation.map(<[u8]>::to_vec);
        let bytes = bytes.to_vec();
        let chunks = chunks.to_vec();
        let writer = tokio::spawn(async move {
            let mut answers = Vec::new();
            if let Some(request) = negotiation {
                client.write_all(&request).await.unwrap();
                let mut answer = [0u8; 1];
                client.read_exact(&mut answer).await.unwrap();
                answers.push(answer[0]);
            }
            let mut at = 0;
            for size in chunks.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + size).min(bytes.len());
                client.write_all(&bytes[at..end]).await.unwrap();
                at = end;
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
            let _ = client.read_to_end(&mut answers).await;
            answers
        });
        let result = sniff::sniff(&mut server, sniff::DEFAULT_MAX_HELLO).await;
        drop(server);
        (result, writer.await.unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hello_in_any_chunking_and_record_split_gives_the_same_sni(
        sni in "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){0,4}\\.?",
        alpn in prop::collection::vec("[a-z0-9/.]{1,12}", 0..3),
        padding in prop_oneof![Just(0usize), 1..2000usize],
        record in prop_oneof![Just(16_384usize), 1..600usize],
        chunks in prop::collection::vec(1..700usize, 1..8),
        ssl_request in any::<bool>(),
    ) {
        let bytes = hello(&sni, &alpn, padding, record);
        let negotiation = ssl_request.then_some(&sniff::postgres::SSL_REQUEST[..]);
        let (result, answers) = sniff_in_chunks(negotiation, &bytes, &chunks);
        let Ok(Sniffed::Tls(h)) = result else {
            return Err(TestCaseError::fail(format!("{result:?}")));
        };
        prop_assert_eq!(h.hello.sni.as_deref(), Some(sni.as_str()));
        prop_assert_eq!(h.hello.alpn, alpn);
        prop_assert_eq!(h.bytes, bytes, "replayed byte for byte");
        prop_assert_eq!(answers, if ssl_request { b"S".to_vec() } else { vec![] });
    }

    #[test]
    fn proxy_v2_headers_read_back(
        src in any::<SocketAddr>(),
        dst in any::<SocketAddr>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
        chunk in 1..40usize,
    ) {
        let header = proxy_protocol::encode_v2(src, dst);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (read, rest) = runtime.block_on(async {
            let (mut a, mut b) = tokio::io::duplex(4096);
            let sent = [&header[..], &tail].concat();
            let writer = tokio::spawn(async move {
                for part in sent.chunks(chunk) {
                    a.write_all(part).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let read = proxy_protocol::read_header(&mut b, Duration::from_secs(5)).await;
            writer.await.unwrap();
            let mut rest = Vec::new();
            b.read_to_end(&mut rest).await.unwrap();
            (read, rest)
        });
        let (s, d) = read.expect("an encoded header reads").addresses.expect("PROXY carries addresses");
        let canonical = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        prop_assert_eq!((canonical(s.ip()), s.port()), (canonical(src.ip()), src.port()));
        prop_assert_eq!((canonical(d.ip()), d.port()), (canonical(dst.ip()), dst.port()));
        prop_assert_eq!(rest, tail, "exactly the header was consumed");
    }
}
