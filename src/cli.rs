//! The command line: `run` and `demo`. Every flag also reads an environment
//! variable `SNI_ROUTER_<FLAG>`; repeatable flags take comma-separated lists there.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::access::Access;
use crate::config::values::parse_duration;
use crate::router::Options;
use crate::routes::{Backends, DEFAULT_CLUSTER_DOMAIN};
use crate::session::Limits;

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
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the routes.tls routes of a values file.
    Run(RunArgs),
    /// Run the router on the example config in front of built-in TLS backends.
    Demo(DemoArgs),
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
    #[arg(long, env = "SNI_ROUTER_CHECK_ONLY")]
    pub check_only: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
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
    /// Accept clients only from CIDR (repeatable); PORT=CIDR limits one gateway port.
    #[arg(long = "allow-cidr", env = "SNI_ROUTER_ALLOW_CIDR", value_delimiter = ',', value_parser = cidr_entry)]
    pub allow_cidr: Vec<(Option<u16>, ipnet::IpNet)>,
    /// Expect a PROXY protocol v1 or v2 header from a load balancer before the client's bytes.
    #[arg(long, env = "SNI_ROUTER_ACCEPT_PROXY_PROTOCOL")]
    pub accept_proxy_protocol: bool,
    /// Send a PROXY protocol v2 header to backends with the client's address.
    #[arg(long, env = "SNI_ROUTER_SEND_PROXY_PROTOCOL")]
    pub send_proxy_protocol: bool,
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
            },
            max_connections: self.max_connections,
            max_pending_hellos: self.max_pending_hellos,
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
