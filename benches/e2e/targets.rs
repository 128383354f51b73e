//! The things under test: a direct connection to the backend, and proxies
//! started as child processes of the bench on free loopback ports, each
//! pinned with `taskset` and each configured for one worker.
//!
//! | target | command | one worker | routing |
//! |---|---|---|---|
//! | `sni-router` | `sni-router run --admin off` (log level info) | `TOKIO_WORKER_THREADS=1` | values file |
//! | `sni-router-quiet` | the same with `RUST_LOG=warn` | `TOKIO_WORKER_THREADS=1` | values file |
//! | `sni-router-busy` | `sni-router-quiet` with `--busy-poll 100us` | `TOKIO_WORKER_THREADS=1` | values file |
//! | `sni-router-b` | `$BENCH_ROUTER_B run ...`, when set (A/B of two builds) | `TOKIO_WORKER_THREADS=1` | values file |
//! | `haproxy` | `haproxy -db -f` | `nbthread 1` | `mode tcp`, `req.ssl_sni` → `map` file, `option splice-auto` |
//! | `haproxy-busy` | `haproxy` with `busy-polling` (its own answer to sleeping vCPUs) | `nbthread 1` | the same |
//! | `nginx` | `nginx -p DIR -c` | `worker_processes 1` | `stream`, `ssl_preread`, `map ... { hostnames; }` |
//! | `sniproxy` | `sniproxy -f -c` | single-threaded | `table` of anchored regexes |
//! | `floor` | this bench, `--floor-proxy` (`floor.rs`): the system calls a proxy cannot avoid | one thread | none: one backend |

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load;

/// The SNI every bench connection sends; routed by every target.
pub const SNI: &str = "db.bench.example.com";
/// How long a target gets to answer its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What kind of target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The client talks to the backend itself: the physical limit.
    Direct,
    /// This crate's binary, logging at its default level (info: an access
    /// log event per connection).
    SniRouter,
    /// The same with `RUST_LOG=warn`: no access log, like the peers' configs.
    SniRouterQuiet,
    /// The quiet one with `--busy-poll 100us`: its worker polls instead of
    /// sleeping between events while there is traffic.
    SniRouterBusy,
    /// Another sni-router build (`BENCH_ROUTER_B`, e.g. an older commit's
    /// binary), run like `sni-router`: an A/B of a change in one run.
    SniRouterB,
    /// HAProxy (Debian 12: 2.6).
    Haproxy,
    /// HAProxy with `busy-polling`, to compare with `sni-router-busy`.
    HaproxyBusy,
    /// nginx with the stream module (Debian 12: 1.22).
    Nginx,
    /// sniproxy (Debian 12: 0.6).
    Sniproxy,
    /// The bench's own minimal proxy (`floor.rs`): what is left of a
    /// proxy's cost once everything but its system calls is taken away.
    Floor,
}

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 10] = [
        Kind::Direct,
        Kind::SniRouter,
        Kind::SniRouterQuiet,
        Kind::SniRouterBusy,
        Kind::SniRouterB,
        Kind::Haproxy,
        Kind::HaproxyBusy,
        Kind::Nginx,
        Kind::Sniproxy,
        Kind::Floor,
    ];

    /// Name in tables, JSON and `BENCH_TARGETS`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::SniRouter => "sni-router",
            Kind::SniRouterQuiet => "sni-router-quiet",
            Kind::SniRouterBusy => "sni-router-busy",
            Kind::SniRouterB => "sni-router-b",
            Kind::Haproxy => "haproxy",
            Kind::HaproxyBusy => "haproxy-busy",
            Kind::Nginx => "nginx",
            Kind::Sniproxy => "sniproxy",
            Kind::Floor => "floor",
        }
    }

    /// The program, or None for direct.
    fn program(self) -> Option<String> {
        match self {
            Kind::Direct => None,
            Kind::SniRouter | Kind::SniRouterQuiet | Kind::SniRouterBusy => {
                Some(env!("CARGO_BIN_EXE_sni-router").to_string())
            }
            Kind::SniRouterB => Some(std::env::var("BENCH_ROUTER_B").unwrap_or_default()),
            Kind::Haproxy | Kind::HaproxyBusy => Some(find_program("haproxy")),
            Kind::Nginx => Some(find_program("nginx")),
            Kind::Sniproxy => Some(find_program("sniproxy")),
            Kind::Floor => Some(
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Polls without ever sleeping (HAProxy's `busy-polling`): it takes its
    /// CPU from every target beside it, so it is stopped (SIGSTOP) whenever
    /// it is not the one measured. `sni-router-busy` spins only while it has
    /// traffic and needs no such care.
    pub fn spins_always(self) -> bool {
        self == Kind::HaproxyBusy
    }

    /// The version line the program prints, or why there is none.
    pub fn version(self) -> Result<String, String> {
        let Some(program) = self.program() else {
            return Ok("-".into());
        };
        if self == Kind::Floor {
            return Ok("benches/e2e/floor.rs".into());
        }
        let flag = match self {
            Kind::Haproxy | Kind::HaproxyBusy => "-v",
            Kind::Nginx => "-v",
            Kind::Sniproxy => "-V",
            _ => "--version",
        };
        let out = Command::new(&program)
            .arg(flag)
            .output()
            .map_err(|e| format!("{program}: {e} (install it with scripts/install-bench-peers.sh)"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        Ok(text.lines().next().unwrap_or("").trim().to_string())
    }
}

/// Debian puts the daemons in /usr/sbin, which a non-root PATH may lack.
fn find_program(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path.display().to_string();
        }
    }
    name.to_string()
}

/// A running target.
pub struct Target {
    /// Its kind.
    pub kind: Kind,
    /// Routes it was configured with.
    pub routes: usize,
    /// Where clients connect.
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Config and logs; removed on drop.
    dir: Option<tempfile::TempDir>,
}

impl Target {
    /// Start `kind` with `routes` routes (the bench SNI among them) to
    /// `backend`, pinned to `cpu`; wait until a full bench connection
    /// through it succeeds.
    pub async fn start(
        kind: Kind,
        routes: usize,
        backend: SocketAddr,
        cpu: usize,
        hello: &Arc<Vec<u8>>,
    ) -> Result<Self, String> {
        let Some(program) = kind.program() else {
            return Ok(Self {
                kind,
                routes,
                addr: backend,
                child: None,
                dir: None,
            });
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("sni-bench-{}-", kind.name()))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let names = route_names(routes);
        let (args, env) = configure(kind, dir.path(), addr, backend, &names)?;
        let log = dir.path().join("output.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string()).arg(&program).args(&args);
        cmd.envs(env).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|e| format!("taskset {program}: {e}"))?;
        let mut target = Self {
            kind,
            routes,
            addr,
            child: Some(child),
            dir: Some(dir),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = target.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("{program} exited with {status}:\n{}", target.log_tail()));
                }
            }
            let last = match load::connection(addr, hello).await {
                Ok(_) => {
                    target.sleep();
                    return Ok(target);
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "{program} did not forward a connection within {START_TIMEOUT:?} ({last}):\n{}",
                    target.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop an always-spinning target until [`Target::awake`] (no-op for others).
    pub fn sleep(&self) {
        if self.kind.spins_always() {
            for pid in self.pids() {
                signal(pid, "STOP");
            }
        }
    }

    /// Let an always-spinning target run while the guard lives.
    pub fn awake(&self) -> Awake<'_> {
        if self.kind.spins_always() {
            for pid in self.pids() {
                signal(pid, "CONT");
            }
        }
        Awake(self)
    }

    /// The label in tables: the kind, with the route count when not 2.
    pub fn label(&self) -> String {
        label(self.kind, self.routes)
    }

    /// The process and its descendants (nginx: master and worker).
    pub fn pids(&self) -> Vec<u32> {
        let Some(child) = &self.child else { return Vec::new() };
        let mut out = vec![child.id()];
        let mut i = 0;
        while i < out.len() {
            out.extend(children(out[i]));
            i += 1;
        }
        out
    }

    /// Resident memory of the process tree, bytes (`VmRSS` of /proc/PID/status).
    pub fn rss(&self) -> Option<u64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        Some(pids.iter().filter_map(|&p| status_field(p, "VmRSS:")).sum::<u64>() * 1024)
    }

    /// CPU time the process tree has used so far, in nanoseconds: the sum
    /// of every thread's `sum_exec_runtime` (/proc/PID/task/TID/schedstat).
    /// Unlike wall-clock rates it does not move when other work takes the
    /// CPU away, so it shows a proxy's own cost on a busy machine.
    pub fn cpu_ns(&self) -> Option<u64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        let mut total = 0;
        for pid in pids {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let text = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Some(total)
    }

    /// Threads of the process tree.
    pub fn threads(&self) -> u64 {
        self.pids().iter().filter_map(|&p| status_field(p, "Threads:")).sum()
    }

    /// Move every thread of the process tree to `cpu`.
    pub fn pin(&self, cpu: usize) {
        for pid in self.pids() {
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    fn log_tail(&self) -> String {
        let Some(dir) = &self.dir else { return String::new() };
        let mut text = String::new();
        for name in ["output.log", "error.log"] {
            if let Ok(body) = std::fs::read_to_string(dir.path().join(name)) {
                let lines: Vec<&str> = body.lines().collect();
                for line in &lines[lines.len().saturating_sub(15)..] {
                    let _ = writeln!(text, "    {name}: {line}");
                }
            }
        }
        text
    }

    /// Stop the process tree: SIGTERM, then SIGKILL after 3 s; only our own
    /// child and the processes it started.
    pub fn stop(&mut self) {
        let pids = self.pids();
        let Some(mut child) = self.child.take() else { return };
        // A stopped process acts on TERM only once continued.
        for &pid in &pids {
            signal(pid, "CONT");
        }
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
        }
        let _ = child.wait();
        // Workers of a master that had to be killed.
        for pid in pids.into_iter().skip(1) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                signal(pid, "KILL");
            }
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Table label of a target with `routes` routes.
pub fn label(kind: Kind, routes: usize) -> String {
    if routes == 2 {
        kind.name().to_string()
    } else {
        format!("{}@{routes}", kind.name())
    }
}

/// `n` exact route names, the bench SNI in the middle (a lookup that scans
/// in file order, like sniproxy's, pays for half the table).
pub fn route_names(n: usize) -> Vec<String> {
    if n <= 2 {
        return vec![SNI.to_string(), "other.bench.example.com".to_string()];
    }
    let mut names: Vec<String> = (0..n - 1).map(|i| format!("svc{i}.bench.example.com")).collect();
    names.insert(n / 2, SNI.to_string());
    names
}

/// Program arguments and extra environment.
type Invocation = (Vec<String>, Vec<(String, String)>);

/// Write `kind`'s config for `names` → `backend` into `dir`; its arguments and environment.
fn configure(
    kind: Kind,
    dir: &Path,
    addr: SocketAddr,
    backend: SocketAddr,
    names: &[String],
) -> Result<Invocation, String> {
    let d = dir.display();
    let nofile = nofile_limit();
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    let mut env = Vec::new();
    let args = match kind {
        Kind::Direct => Vec::new(),
        Kind::Floor => vec!["--floor-proxy".into(), addr.to_string(), backend.to_string()],
        Kind::SniRouter | Kind::SniRouterQuiet | Kind::SniRouterBusy | Kind::SniRouterB => {
            let mut values = String::from(
                "gateways:\n  external: {name: gw, namespace: envoy-gateway, className: eg}\nroutes:\n  tls:\n",
            );
            for (i, name) in names.iter().enumerate() {
                let _ = writeln!(
                    values,
                    "    - {{fqdn: {name}, name: r{i}, namespace: bench, gatewayPort: 443, service: {{name: bench, port: 1}}}}"
                );
            }
            let path = write("values.yaml", &values)?;
            // One worker thread: tokio's multi-thread runtime reads TOKIO_WORKER_THREADS.
            env.push(("TOKIO_WORKER_THREADS".into(), "1".into()));
            // The router's default level (info: one access-log event per
            // connection, to a file here) unless told otherwise; the quiet twin
            // logs warnings only, as the peers here log nothing per connection.
            if kind == Kind::SniRouterQuiet || kind == Kind::SniRouterBusy {
                env.push(("RUST_LOG".into(), "warn".into()));
            } else if let Ok(level) = std::env::var("BENCH_ROUTER_LOG") {
                env.push(("RUST_LOG".into(), level));
            }
            let mut args: Vec<String> = vec![
                "run".into(),
                "--config".into(),
                path.display().to_string(),
                "--listen".into(),
                format!("443={addr}"),
                "--backend".into(),
                format!("bench.bench={backend}"),
                "--admin".into(),
                "off".into(),
                "--drain-timeout".into(),
                "1s".into(),
            ];
            if kind == Kind::SniRouterBusy {
                args.extend(["--busy-poll".into(), "100us".into()]);
            }
            args
        }
        Kind::Haproxy | Kind::HaproxyBusy => {
            let mut map = String::new();
            for name in names {
                let _ = writeln!(map, "{name} be");
            }
            let map_path = write("sni.map", &map)?;
            let mut tune = match peer_sockbuf() {
                Some(size) => ["rcvbuf.client", "rcvbuf.server", "sndbuf.client", "sndbuf.server"]
                    .map(|knob| format!("    tune.{knob} {size}\n"))
                    .concat(),
                None => String::new(),
            };
            if kind == Kind::HaproxyBusy {
                tune.push_str("    busy-polling\n");
            }
            let config = format!(
                "global\n\
                 \x20   nbthread 1\n\
                 \x20   maxconn {maxconn}\n\
                 {tune}\
                 defaults\n\
                 \x20   mode tcp\n\
                 \x20   maxconn {maxconn}\n\
                 \x20   timeout connect 10s\n\
                 \x20   timeout client 1h\n\
                 \x20   timeout server 1h\n\
                 \x20   option splice-auto\n\
                 frontend fe\n\
                 \x20   bind {addr}\n\
                 \x20   tcp-request inspect-delay 15s\n\
                 \x20   tcp-request content accept if {{ req.ssl_hello_type 1 }}\n\
                 \x20   use_backend %[req.ssl_sni,lower,map({map},be_none)]\n\
                 backend be\n\
                 \x20   server s1 {backend}\n\
                 backend be_none\n",
                map = map_path.display(),
                // HAProxy asks for 2 descriptors per connection plus splice
                // pipes (maxpipes = maxconn / 4, two each) and refuses to start
                // when the limit is lower.
                maxconn = nofile.saturating_sub(1024) / 3,
            );
            let path = write("haproxy.cfg", &config)?;
            vec!["-db".into(), "-f".into(), path.display().to_string()]
        }
        Kind::Nginx => {
            let mut map = String::new();
            for name in names {
                let _ = writeln!(map, "        {name} {backend};");
            }
            let config = format!(
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
                 daemon off;\n\
                 master_process on;\n\
                 worker_processes 1;\n\
                 worker_rlimit_nofile {nofile};\n\
                 pid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\n\
                 events {{ worker_connections {conns}; }}\n\
                 stream {{\n\
                 \x20   map_hash_max_size 65536;\n\
                 \x20   map_hash_bucket_size 128;\n\
                 \x20   map $ssl_preread_server_name $backend {{\n\
                 \x20       hostnames;\n\
                 \x20       default 127.0.0.1:9;\n\
                 {map}\
                 \x20   }}\n\
                 \x20   server {{\n\
                 \x20       listen {addr}{bufs};\n\
                 \x20       ssl_preread on;\n\
                 \x20       preread_timeout 15s;\n\
                 \x20       proxy_pass $backend;\n\
                 \x20       proxy_connect_timeout 10s;\n\
                 \x20       proxy_timeout 1h;\n\
                 \x20   }}\n\
                 }}\n",
                conns = nofile.saturating_sub(256),
                // Client side only: nginx's stream proxy has no setting for its upstream sockets.
                bufs = peer_sockbuf().map_or(String::new(), |size| format!(" rcvbuf={size} sndbuf={size}")),
            );
            let path = write("nginx.conf", &config)?;
            vec![
                "-p".into(),
                d.to_string(),
                "-e".into(),
                format!("{d}/error.log"),
                "-c".into(),
                path.display().to_string(),
            ]
        }
        Kind::Sniproxy => {
            let mut table = String::new();
            for name in names {
                let _ = writeln!(table, "    ^{}$ {backend}", name.replace('.', "\\."));
            }
            let config = format!(
                "user root\n\
                 pidfile {d}/sniproxy.pid\n\
                 error_log {{\n    filename {d}/error.log\n    priority notice\n}}\n\
                 listener {addr} {{\n    protocol tls\n    table bench\n}}\n\
                 table bench {{\n{table}}}\n"
            );
            let path = write("sniproxy.conf", &config)?;
            vec!["-f".into(), "-c".into(), path.display().to_string()]
        }
    };
    Ok((args, env))
}

/// `BENCH_PEER_SOCKBUF` (bytes): fixed socket buffers for the peers that
/// have a setting for them (HAProxy both sides, nginx the client side), to
/// compare against sni-router's `--socket-buffer` on equal terms.
fn peer_sockbuf() -> Option<u64> {
    std::env::var("BENCH_PEER_SOCKBUF")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// This process's open-file limit (children inherit it).
pub fn nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// A numeric field of /proc/PID/status (kB for memory fields).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// A target let run by [`Target::awake`]; stopped again on drop.
pub struct Awake<'a>(&'a Target);

impl Drop for Awake<'_> {
    fn drop(&mut self) {
        self.0.sleep();
    }
}

/// Send `sig` to one process we started.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
