//! The command line: `run` and `demo`. Every flag also reads an environment
//! variable `SNI_ROUTER_<FLAG>`; repeatable flags take comma-separated lists there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::access::Access;
use crate::config::values::parse_duration;
use crate::render::gateway_api::TlsRouteVersion;
use crate::router::Options;
use crate::routes::{Backends, DEFAULT_CLUSTER_DOMAIN};
use crate::session::Limits;
use crate::sockbuf::SocketBuffers;

/// TLS passthrough SNI router for Envoy Gateway `envoy-configs` values files.
#[derive(Debug, Parser)]
#[command(name = "sni-router", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "SNI_ROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Longest an access-log line waits to be written with the ones after
    /// it (one write per batch instead of one per connection; every other
    /// line, and all of them at exit, are written at once). 0: each line at once.
    #[arg(long, env = "SNI_ROUTER_LOG_FLUSH_INTERVAL", default_value = "20ms", value_parser = duration_or_zero, global = true)]
    pub log_flush_interval: Duration,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the routes.tls routes of a values file.
    Run(RunArgs),
    /// Run the router on the example config in front of built-in TLS backends.
    Demo(DemoArgs),
    /// Validate a values file by the rules of the chart, Kubernetes and Envoy Gateway; print the effective routes.
    Check(CheckArgs),
    /// Print what a values file becomes: an Envoy bootstrap, the chart's Gateway API objects, or Kubernetes manifests.
    Render(RenderArgs),
    /// Test a live gateway route by route: TLS handshake, certificates, PostgreSQL and Redis answers.
    Probe(ProbeArgs),
    /// Check a CA, client certificate and key for the mistakes that break mutual TLS.
    Certs(CertsArgs),
}

/// `sni-router probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The envoy-configs values file whose routes to probe.
    #[arg(long, short = 'c', env = "SNI_ROUTER_CONFIG")]
    pub config: PathBuf,
    /// The gateway's host name or address.
    #[arg(long, env = "SNI_ROUTER_GATEWAY")]
    pub gateway: String,
    /// Dial ADDR:PORT for gateway port PORT instead of GATEWAY:PORT (repeatable).
    #[arg(long = "listen", env = "SNI_ROUTER_LISTEN", value_delimiter = ',', value_parser = listen_entry)]
    pub listen: Vec<(u16, SocketAddr)>,
    /// CA bundle to verify servers with, like sslmode=verify-ca (without it: report, don't verify).
    #[arg(long, env = "SNI_ROUTER_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    #[arg(long, env = "SNI_ROUTER_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client certificate's private key.
    #[arg(long, env = "SNI_ROUTER_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Output format.
    #[arg(long, env = "SNI_ROUTER_FORMAT", value_enum, default_value_t = ProbeFormat::Table)]
    pub format: ProbeFormat,
    /// Gateway ports that carry PostgreSQL (repeatable).
    #[arg(
        long = "postgres-port",
        env = "SNI_ROUTER_POSTGRES_PORT",
        value_delimiter = ',',
        default_value = "5432"
    )]
    pub postgres_port: Vec<u16>,
    /// Gateway ports that carry Redis (repeatable).
    #[arg(
        long = "redis-port",
        env = "SNI_ROUTER_REDIS_PORT",
        value_delimiter = ',',
        default_value = "6379"
    )]
    pub redis_port: Vec<u16>,
    /// PostgreSQL user for the StartupMessage (the client certificate's CN with pg_hba `cert`).
    #[arg(long, env = "SNI_ROUTER_PG_USER", default_value = "app")]
    pub pg_user: String,
    /// Timeout for each connect, handshake and answer.
    #[arg(long, env = "SNI_ROUTER_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub timeout: Duration,
    /// Warn when a server certificate expires within this.
    #[arg(long, env = "SNI_ROUTER_RENEW_BEFORE", default_value = "720h", value_parser = duration)]
    pub renew_before: Duration,
}

/// `probe --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProbeFormat {
    /// One line per check.
    Table,
    /// One JSON object.
    Json,
    /// JUnit XML for CI pipelines.
    Junit,
}

/// `sni-router certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The CA bundle clients verify servers with (sslrootcert, --cacert).
    #[arg(long, env = "SNI_ROUTER_CA")]
    pub ca: Option<PathBuf>,
    /// The client certificate (tls.crt).
    #[arg(long, env = "SNI_ROUTER_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (tls.key).
    #[arg(long, env = "SNI_ROUTER_KEY")]
    pub key: Option<PathBuf>,
    /// PostgreSQL user the certificate's CN must equal (pg_hba `cert`); empty to skip.
    #[arg(long, env = "SNI_ROUTER_PG_USER", default_value = "app")]
    pub pg_user: String,
    /// Warn when a certificate expires within this (the site certificates renew 720h before).
    #[arg(long, env = "SNI_ROUTER_RENEW_BEFORE", default_value = "720h", value_parser = duration)]
    pub renew_before: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z INFO conn{listener=5432}: connection sni=...`
    Text,
    /// One JSON object per event.
    Json,
}

/// `sni-router run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The envoy-configs values file.
    #[arg(long, short = 'c', env = "SNI_ROUTER_CONFIG")]
    pub config: PathBuf,
    /// Address for gateway ports without a --listen entry.
    #[arg(long, env = "SNI_ROUTER_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// How long open connections may finish after SIGTERM/SIGINT.
    #[arg(long, env = "SNI_ROUTER_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Admin endpoint (/ready, /metrics, /config_dump, ...); `off` disables it.
    #[arg(long, env = "SNI_ROUTER_ADMIN", default_value = "127.0.0.1:9901", value_parser = admin_addr)]
    pub admin: AdminAddr,
    /// How often to check the config file for changes (0s: only on SIGHUP).
    #[arg(long, env = "SNI_ROUTER_WATCH_INTERVAL", default_value = "2s", value_parser = duration_or_zero)]
    pub watch_interval: Duration,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Where the admin endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAddr {
    /// Not started.
    Off,
    /// Listen here.
    At(SocketAddr),
}

/// `sni-router demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Values file to demonstrate (default: the bundled config/values.example.yaml).
    #[arg(long, short = 'c', env = "SNI_ROUTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run the self-check, print the table and exit (0 when every check passed).
    #[arg(long, env = "SNI_ROUTER_CHECK_ONLY", value_parser = BoolishValueParser::new())]
    pub check_only: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `sni-router check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The envoy-configs values file.
    #[arg(long, short = 'c', env = "SNI_ROUTER_CONFIG")]
    pub config: PathBuf,
    /// Output: findings and the route table as text, or the same as one JSON object.
    #[arg(long, env = "SNI_ROUTER_FORMAT", value_enum, default_value_t = CheckFormat::Table)]
    pub format: CheckFormat,
    /// Exit 1 when there are warnings (errors always exit 2).
    #[arg(long, env = "SNI_ROUTER_STRICT", value_parser = BoolishValueParser::new())]
    pub strict: bool,
}

/// `check --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// Findings, then the route table, as text.
    Table,
    /// One JSON object: summary, findings, routes, compatibility.
    Json,
}

/// `sni-router render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The envoy-configs values file.
    #[arg(long, short = 'c', env = "SNI_ROUTER_CONFIG")]
    pub config: PathBuf,
    /// What to render.
    #[arg(long, env = "SNI_ROUTER_RENDER_TO", value_enum)]
    pub to: RenderTarget,
    /// gateway-api: the TLSRoute apiVersion (v1alpha2 as the chart writes it; v1 for Gateway API 1.5+).
    #[arg(long, env = "SNI_ROUTER_TLSROUTE_VERSION", value_enum, default_value_t = TlsRouteVersion::V1alpha2)]
    pub tlsroute_version: TlsRouteVersion,
    /// gateway-api: Helm release name, for the app.kubernetes.io/instance label.
    #[arg(long, env = "SNI_ROUTER_RELEASE", default_value = "envoy-configs")]
    pub release: String,
    /// envoy, kubernetes: listen for gateway port PORT on ADDR:PORT instead (repeatable), as `run --listen`.
    #[arg(long = "listen", env = "SNI_ROUTER_LISTEN", value_delimiter = ',', value_parser = listen_entry)]
    pub listen: Vec<(u16, SocketAddr)>,
    /// envoy, kubernetes: address for gateway ports without a --listen entry.
    #[arg(long, env = "SNI_ROUTER_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// envoy, kubernetes: send SERVICE.NAMESPACE to HOST:PORT instead of cluster DNS (repeatable), as `run --backend`.
    #[arg(long = "backend", env = "SNI_ROUTER_BACKEND", value_delimiter = ',', value_parser = backend_entry)]
    pub backend: Vec<(String, String)>,
    /// envoy, kubernetes: cluster domain for <service>.<namespace>.svc.<domain>.
    #[arg(long, env = "SNI_ROUTER_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// envoy, kubernetes: listener_filters_timeout (run --hello-timeout).
    #[arg(long, env = "SNI_ROUTER_HELLO_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub hello_timeout: Duration,
    /// envoy, kubernetes: TLS inspector max_client_hello_size (run --max-hello-size; Envoy allows at most 64 KiB).
    #[arg(long, env = "SNI_ROUTER_MAX_HELLO_SIZE", default_value_t = crate::sniff::DEFAULT_MAX_HELLO)]
    pub max_hello_size: usize,
    /// envoy, kubernetes: cluster connect_timeout (run --connect-timeout).
    #[arg(long, env = "SNI_ROUTER_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// envoy, kubernetes: tcp_proxy idle_timeout (run --idle-timeout).
    #[arg(long, env = "SNI_ROUTER_IDLE_TIMEOUT", default_value = "1h", value_parser = duration)]
    pub idle_timeout: Duration,
    /// envoy: admin listener address; `off` leaves the admin block out. kubernetes: its port, on 0.0.0.0.
    #[arg(long, env = "SNI_ROUTER_ADMIN", default_value = "127.0.0.1:9901", value_parser = admin_addr)]
    pub admin: AdminAddr,
}

/// `render --to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderTarget {
    /// An Envoy v3 static bootstrap equivalent to `sni-router run`.
    Envoy,
    /// The Gateway, TLSRoutes and ClientTrafficPolicies the envoy-configs chart renders.
    GatewayApi,
    /// ConfigMap, Deployment, LoadBalancer Service, PDB and PodMonitor that run sni-router on this file.
    Kubernetes,
}

/// Flags shared by `run` and `demo`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen for gateway port PORT on ADDR:PORT instead (repeatable), e.g. 5432=127.0.0.1:15432.
    #[arg(long = "listen", env = "SNI_ROUTER_LISTEN", value_delimiter = ',', value_parser = listen_entry)]
    pub listen: Vec<(u16, SocketAddr)>,
    /// Send SERVICE.NAMESPACE to HOST:PORT instead of cluster DNS (repeatable; several per service allowed).
    #[arg(long = "backend", env = "SNI_ROUTER_BACKEND", value_delimiter = ',', value_parser = backend_entry)]
    pub backend: Vec<(String, String)>,
    /// Cluster domain for <service>.<namespace>.svc.<domain>.
    #[arg(long, env = "SNI_ROUTER_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,
    /// Time allowed for a complete ClientHello (Envoy listener_filters_timeout).
    #[arg(long, env = "SNI_ROUTER_HELLO_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub hello_timeout: Duration,
    /// Largest ClientHello accepted, in bytes, record headers included.
    #[arg(long, env = "SNI_ROUTER_MAX_HELLO_SIZE", default_value_t = crate::sniff::DEFAULT_MAX_HELLO)]
    pub max_hello_size: usize,
    /// Backend connect timeout, per address tried.
    #[arg(long, env = "SNI_ROUTER_CONNECT_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Close a connection after this long without traffic either way (Envoy tcp_proxy idle_timeout).
    #[arg(long, env = "SNI_ROUTER_IDLE_TIMEOUT", default_value = "1h", value_parser = duration)]
    pub idle_timeout: Duration,
    /// Most connections open at once, all ports together; more are closed at once (0: no limit).
    #[arg(long, env = "SNI_ROUTER_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Most connections still sending their ClientHello at once, so slow clients cannot starve the rest.
    #[arg(long, env = "SNI_ROUTER_MAX_PENDING_HELLOS", default_value_t = 1024)]
    pub max_pending_hellos: usize,
    /// Most connections from one client address still sending their ClientHello (0: no limit); counts the TCP peer, so keep it off behind a load balancer.
    #[arg(long, env = "SNI_ROUTER_MAX_PENDING_HELLOS_PER_SOURCE", default_value_t = 0)]
    pub max_pending_hellos_per_source: usize,
    /// Accept clients only from CIDR (repeatable); PORT=CIDR limits one gateway port.
    #[arg(long = "allow-cidr", env = "SNI_ROUTER_ALLOW_CIDR", value_delimiter = ',', value_parser = cidr_entry)]
    pub allow_cidr: Vec<(Option<u16>, ipnet::IpNet)>,
    /// Expect a PROXY protocol v1 or v2 header from a load balancer before the client's bytes.
    #[arg(long, env = "SNI_ROUTER_ACCEPT_PROXY_PROTOCOL", value_parser = BoolishValueParser::new())]
    pub accept_proxy_protocol: bool,
    /// Send a PROXY protocol v2 header to backends with the client's address.
    #[arg(long, env = "SNI_ROUTER_SEND_PROXY_PROTOCOL", value_parser = BoolishValueParser::new())]
    pub send_proxy_protocol: bool,
    /// Forward with read/write only (on Linux bulk transfers switch to splice(2) by default).
    #[arg(long, env = "SNI_ROUTER_NO_SPLICE", value_parser = BoolishValueParser::new())]
    pub no_splice: bool,
    /// Kernel socket buffers (SO_RCVBUF/SO_SNDBUF): `auto` fixes 256K for peers on loopback and leaves
    /// others to the kernel's autotuning, `kernel` leaves all to it, a size (e.g. 512K) fixes every socket.
    #[arg(long, env = "SNI_ROUTER_SOCKET_BUFFER", default_value = "auto")]
    pub socket_buffer: SocketBuffers,
    /// Keep each worker polling for I/O this long after its last work instead of sleeping (0: off);
    /// trades CPU time for latency, e.g. `100us` on a load-test target with cores of its own.
    #[arg(long, env = "SNI_ROUTER_BUSY_POLL", default_value = "0", value_parser = busy_poll_window)]
    pub busy_poll: Duration,
}

impl ServeArgs {
    /// Router options, with `bind` for ports that have no --listen entry.
    pub fn options(&self, bind: IpAddr) -> Options {
        let mut overrides: HashMap<String, Vec<String>> = HashMap::new();
        for (service, endpoint) in &self.backend {
            overrides.entry(service.clone()).or_default().push(endpoint.clone());
        }
        Options {
            listen: self.listen.iter().copied().collect(),
            bind,
            backends: Backends {
                cluster_domain: self.cluster_domain.clone(),
                overrides,
            },
            limits: Limits {
                hello_timeout: self.hello_timeout,
                max_hello: self.max_hello_size,
                connect_timeout: self.connect_timeout,
                idle_timeout: self.idle_timeout,
                zero_copy: !self.no_splice,
                socket_buffers: self.socket_buffer,
                busy_poll: self.busy_poll,
            },
            max_connections: self.max_connections,
            max_pending_hellos: self.max_pending_hellos,
            max_pending_hellos_per_source: self.max_pending_hellos_per_source,
            allow: Access::new(&self.allow_cidr),
            accept_proxy_protocol: self.accept_proxy_protocol,
            send_proxy_protocol: self.send_proxy_protocol,
        }
    }
}

/// `120s`, `1h30m`, `500ms`: the Gateway API duration format the values file uses.
fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
}

/// Like `duration`, and `0`/`0s` for "never".
fn duration_or_zero(text: &str) -> Result<Duration, String> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// `50us`, `200µs`, `1ms`, or `0`/`off`: at most a second, which is already
/// a worker that hardly ever sleeps.
fn busy_poll_window(text: &str) -> Result<Duration, String> {
    let window = if text == "off" {
        Duration::ZERO
    } else if let Some(micros) = text.strip_suffix("us").or_else(|| text.strip_suffix("µs")) {
        micros
            .parse::<u64>()
            .map(Duration::from_micros)
            .map_err(|_| format!("{text:?} is not a duration such as 50us, 200us or 1ms"))?
    } else {
        duration_or_zero(text)?
    };
    if window > Duration::from_secs(1) {
        return Err(format!("{text:?} is longer than 1s"));
    }
    Ok(window)
}

/// `127.0.0.1:9901`, `[::1]:9901`, or `off`.
fn admin_addr(text: &str) -> Result<AdminAddr, String> {
    if text == "off" {
        return Ok(AdminAddr::Off);
    }
    text.parse()
        .map(AdminAddr::At)
        .map_err(|_| format!("{text:?} is not ADDR:PORT or off"))
}

/// `10.0.0.0/8` (every port) or `5432=10.0.0.0/8` (one gateway port); a bare address is a /32 or /128.
fn cidr_entry(text: &str) -> Result<(Option<u16>, ipnet::IpNet), String> {
    let (port, net) = match text.split_once('=') {
        Some((port, net)) => (
            Some(
                port.parse::<u16>()
                    .map_err(|_| format!("{port:?} is not a gateway port"))?,
            ),
            net,
        ),
        None => (None, text),
    };
    let net = net
        .parse::<ipnet::IpNet>()
        .or_else(|_| net.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{net:?} is not a CIDR such as 10.0.0.0/8 or fd00::/8"))?;
    Ok((port, net))
}

/// `PORT=ADDR:PORT`, e.g. `5432=127.0.0.1:15432` or `443=[::1]:8443`.
fn listen_entry(text: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected GATEWAYPORT=ADDR:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a gateway port (1-65535)"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not ADDR:PORT (IPv6 as [::1]:8443)"))?;
    Ok((port, addr))
}

/// `SERVICE.NAMESPACE=HOST:PORT`, e.g. `nautobot-cluster-rw.nautobot=127.0.0.1:5432`.
fn backend_entry(text: &str) -> Result<(String, String), String> {
    let (service, endpoint) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected SERVICE.NAMESPACE=HOST:PORT"))?;
    if !service.contains('.') {
        return Err(format!(
            "{service:?}: expected SERVICE.NAMESPACE, e.g. nautobot-cluster-rw.nautobot"
        ));
    }
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("{endpoint:?}: expected HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{endpoint:?}: expected HOST:PORT with a port 1-65535"));
    }
    Ok((service.to_string(), endpoint.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_and_backend_entries() {
        assert_eq!(
            listen_entry("5432=127.0.0.1:15432").unwrap(),
            (5432, "127.0.0.1:15432".parse().unwrap())
        );
        assert_eq!(listen_entry("443=[::1]:8443").unwrap().1, "[::1]:8443".parse().unwrap());
        assert!(listen_entry("5432").is_err());
        assert!(listen_entry("x=127.0.0.1:1").is_err());
        assert_eq!(
            backend_entry("pg.ns=db.local:5432").unwrap(),
            ("pg.ns".into(), "db.local:5432".into())
        );
        assert!(backend_entry("pg=db:5432").is_err());
        assert!(backend_entry("pg.ns=db").is_err());
        assert!(backend_entry("pg.ns=db:0").is_err());
        assert_eq!(cidr_entry("10.0.0.0/8").unwrap(), (None, "10.0.0.0/8".parse().unwrap()));
        assert_eq!(
            cidr_entry("5432=fd00::/8").unwrap(),
            (Some(5432), "fd00::/8".parse().unwrap())
        );
        assert_eq!(cidr_entry("192.0.2.7").unwrap().1, "192.0.2.7/32".parse().unwrap());
        assert!(cidr_entry("10.0.0.0/33").is_err());
        assert_eq!(admin_addr("off").unwrap(), AdminAddr::Off);
    }

    #[test]
    fn busy_poll_takes_microseconds_and_is_off_by_default() {
        let window = |args: &[&str]| {
            let mut argv = vec!["sni-router", "run", "--config", "v.yaml"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Run(run) => run.serve.busy_poll,
                _ => unreachable!(),
            })
        };
        assert_eq!(window(&[]).unwrap(), Duration::ZERO);
        assert_eq!(window(&["--busy-poll", "50us"]).unwrap(), Duration::from_micros(50));
        assert_eq!(window(&["--busy-poll", "200µs"]).unwrap(), Duration::from_micros(200));
        assert_eq!(window(&["--busy-poll", "2ms"]).unwrap(), Duration::from_millis(2));
        assert_eq!(window(&["--busy-poll", "off"]).unwrap(), Duration::ZERO);
        for bad in ["fast", "5s", "-1us", "us"] {
            assert!(window(&["--busy-poll", bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn socket_buffer_flag_reaches_the_limits() {
        let run = |extra: &[&str]| {
            let args = ["sni-router", "run", "--config", "values.yaml"].iter().chain(extra);
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Run(run) => run.serve.options("0.0.0.0".parse().unwrap()).limits.socket_buffers,
                _ => unreachable!("parsed as run"),
            })
        };
        assert_eq!(run(&[]).unwrap(), SocketBuffers::Auto);
        assert_eq!(run(&["--socket-buffer", "kernel"]).unwrap(), SocketBuffers::Kernel);
        assert_eq!(
            run(&["--socket-buffer", "512K"]).unwrap(),
            SocketBuffers::Fixed(512 * 1024)
        );
        let err = run(&["--socket-buffer", "lots"]).unwrap_err().to_string();
        assert!(
            err.contains("--socket-buffer") && err.contains("expected auto, kernel"),
            "{err}"
        );
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version", "log_format"].contains(&id) {
                    continue;
                }
                assert!(arg.get_env().is_some(), "{} --{id} has no env", sub.get_name());
            }
        }
    }
}
