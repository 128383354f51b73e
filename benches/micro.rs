//! Micro benchmarks of the per-connection hot path and of config load.
//!
//! * `hello/*`: `HelloReader` reassembly + `tls-parser` parse of a real
//!   rustls ClientHello padded to 512 bytes (the size Chrome and many clients
//!   pad to), and of a post-quantum-size hello (~1.8 KB): the same rustls hello
//!   with an X25519MLKEM768 key share (group 0x11ec, 1216 bytes) added to its
//!   `key_share` and `supported_groups`, as Chrome and Firefox send it. rustls'
//!   ring provider does not offer that group, so the share is synthetic; the
//!   router only walks past it, so its content does not matter. Each is fed
//!   whole, in 64-byte and (PQ) 1448-byte TCP segments (the reader sees the
//!   growing buffer), and split over 256-byte TLS records.
//! * `lookup/*`: `RouteTable::lookup` with 10, 10 000 and 100 000 routes on
//!   one port (90 % exact names, 10 % wildcards): an exact hit, a wildcard hit
//!   two labels below its suffix, a miss, and an upper-case exact hit. The
//!   tables are built from a `Config` made in code, so they do not depend on
//!   the loader accepting a file that large.
//! * `config_load/*`: `config::load` of a values file with 10 000 and 100 000
//!   routes (issue 7's target: 100 000 in under 1 s), and `RouteTable::new`
//!   from the loaded config, and `check::check` (every rule of
//!   `sni-router check`). A file the loader refuses is reported (printed)
//!   and skipped.
//!
//! Run: `cargo bench --bench micro` (add a filter, e.g. `-- lookup`).

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sni_router::config::{Config, Pos, Route, Service, SniPattern, Values};
use sni_router::routes::{Backends, RouteTable};
use sni_router::sniff::tls::HelloReader;

#[path = "common/hello.rs"]
mod hello;

/// The router's default ClientHello bound.
const LIMIT: usize = 64 * 1024;
/// A typical MSS on a real network path: the hello arrives in segments this big.
const SEGMENT: usize = 1448;

fn hello_benches(c: &mut Criterion) {
    let small = hello::padded("db.bench.example.com", 512);
    let pq = hello::post_quantum("db.bench.example.com", 1800);
    assert_eq!(small.len(), 512);
    assert_eq!(pq.len(), 1800);
    for bytes in [&small, &pq] {
        // Sanity: the hello parses and the SNI is found.
        let (hello, used) = HelloReader::new(LIMIT).advance(bytes).unwrap().unwrap();
        assert_eq!(hello.sni.as_deref(), Some("db.bench.example.com"));
        assert_eq!(used, bytes.len());
    }

    let mut group = c.benchmark_group("hello");
    for (name, bytes) in [("512B", small), ("pq_1800B", pq)] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("whole", name), &bytes, |b, bytes| {
            b.iter(|| HelloReader::new(LIMIT).advance(black_box(bytes)).unwrap().unwrap())
        });
        // The reader is called with the growing buffer after each segment:
        // a slow or hostile client's 64-byte segments, and a real path's MSS.
        group.bench_with_input(BenchmarkId::new("segments_64B", name), &bytes, |b, bytes| {
            b.iter(|| feed(black_box(bytes), 64))
        });
        if bytes.len() > SEGMENT {
            group.bench_with_input(BenchmarkId::new("segments_1448B", name), &bytes, |b, bytes| {
                b.iter(|| feed(black_box(bytes), SEGMENT))
            });
        }
        // The same handshake message split over records of 256 bytes.
        let split = hello::rerecord(&bytes, 256);
        group.throughput(Throughput::Bytes(split.len() as u64));
        group.bench_with_input(BenchmarkId::new("records_256B", name), &split, |b, bytes| {
            b.iter(|| HelloReader::new(LIMIT).advance(black_box(bytes)).unwrap().unwrap())
        });
    }
    group.finish();
}

/// Feed `bytes` to a fresh reader in segments of `segment` bytes.
fn feed(bytes: &[u8], segment: usize) -> usize {
    let mut reader = HelloReader::new(LIMIT);
    let mut end = 0;
    loop {
        end = (end + segment).min(bytes.len());
        if let Some((_, used)) = reader.advance(&bytes[..end]).unwrap() {
            return used;
        }
    }
}

fn lookup_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for n in [10usize, 10_000, 100_000] {
        // Built directly: `config::load` may refuse a file this large (see config_load).
        let table = RouteTable::new(&config(n, 443), &backends());
        let (exact, wild) = split(n);
        let exact_name = format!("svc{}.bench.example.com", exact / 2);
        let upper_name = exact_name.to_ascii_uppercase();
        let wild_name = format!("a.b.w{}.example.net", wild / 2);
        let miss_name = "nothing.here.example.org".to_string();
        assert!(table.lookup(443, &exact_name).is_some());
        assert!(table.lookup(443, &upper_name).is_some());
        assert!(table.lookup(443, &wild_name).is_some());
        assert!(table.lookup(443, &miss_name).is_none());
        for (case, name) in [
            ("exact_hit", exact_name),
            ("wildcard_hit", wild_name),
            ("miss", miss_name),
            ("exact_hit_upper", upper_name),
        ] {
            group.bench_with_input(BenchmarkId::new(case, n), &name, |b, name| {
                b.iter(|| table.lookup(black_box(443), black_box(name)).is_some())
            });
        }
    }
    group.finish();
}

fn config_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for n in [10_000usize, 100_000] {
        let text = values(n, 443);
        let config = match sni_router::config::load(&text, Path::new("bench.yaml")) {
            Ok(config) => config,
            Err(e) => {
                // Say so plainly instead of failing the whole bench run.
                let first = e.problems.first().map_or(String::new(), |p| p.message.clone());
                println!("config_load/load/{n}: the values file does not load: {first}");
                continue;
            }
        };
        assert_eq!(config.routes.len(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("load", n), &text, |b, text| {
            b.iter(|| sni_router::config::load(black_box(text), Path::new("bench.yaml")).unwrap())
        });
        let backends = backends();
        group.bench_with_input(BenchmarkId::new("route_table", n), &config, |b, config| {
            b.iter(|| RouteTable::new(black_box(config), &backends))
        });
        // `sni-router check`: the load plus every chart rule (pairs of routes
        // are found through an index, not compared one by one).
        group.bench_with_input(BenchmarkId::new("check", n), &text, |b, text| {
            b.iter(|| sni_router::check::check(black_box(text), Path::new("bench.yaml")))
        });
    }
    group.finish();
}

// === values files ===

/// How many of `n` routes are exact names and how many wildcards (at least one each).
fn split(n: usize) -> (usize, usize) {
    let wild = (n / 10).max(1);
    (n - wild, wild)
}

/// A values file with `n` TLS routes on gateway port `port`, all to one
/// service (`bench.bench`): `svcI.bench.example.com` and `*.wI.example.net`.
fn values(n: usize, port: u16) -> String {
    let (exact, wild) = split(n);
    let mut out = String::with_capacity(n * 110);
    out.push_str("gateways:\n  external: {name: gw, namespace: envoy-gateway, className: eg}\nroutes:\n  tls:\n");
    for i in 0..exact {
        out.push_str(&format!(
            "    - {{fqdn: svc{i}.bench.example.com, name: e{i}, namespace: bench, gatewayPort: {port}, \
             service: {{name: bench, port: 1}}}}\n"
        ));
    }
    for i in 0..wild {
        out.push_str(&format!(
            "    - {{fqdn: '*.w{i}.example.net', name: w{i}, namespace: bench, gatewayPort: {port}, \
             service: {{name: bench, port: 1}}}}\n"
        ));
    }
    out
}

/// The config `values(n, port)` describes, built without parsing YAML.
fn config(n: usize, port: u16) -> Config {
    let (exact, wild) = split(n);
    let names = (0..exact)
        .map(|i| (format!("e{i}"), format!("svc{i}.bench.example.com")))
        .chain((0..wild).map(|i| (format!("w{i}"), format!("*.w{i}.example.net"))));
    let routes = names
        .enumerate()
        .map(|(index, (name, fqdn))| Route {
            name,
            namespace: "bench".into(),
            sni: SniPattern::parse(&fqdn).unwrap(),
            gateway_port: port,
            service: Service {
                name: "bench".into(),
                namespace: "bench".into(),
                port: 1,
            },
            keepalive: None,
            index,
            at: Pos::default(),
        })
        .collect();
    Config {
        source: "bench.yaml".into(),
        routes,
        warnings: Vec::new(),
        values: Values::default(),
    }
}

fn backends() -> Backends {
    let mut overrides = HashMap::new();
    overrides.insert("bench.bench".to_string(), vec!["127.0.0.1:1".to_string()]);
    Backends {
        cluster_domain: String::new(),
        overrides,
    }
}

criterion_group!(benches, hello_benches, lookup_benches, config_benches);
criterion_main!(benches);
