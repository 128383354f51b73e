//! Real PostgreSQL and Redis servers speaking mutual TLS, and the real clients
//! that talk to them.
//!
//! Owns: the test PKI on disk ([`Certs`]), one throwaway server per test
//! ([`Postgres`] 15 or 18, [`Redis`]), each on a free loopback port in its own
//! temporary directory and stopped on drop, and the client runs ([`Client`]:
//! `psql` with libpq 15, psycopg with libpq 18, `redis-cli`, redis-py) whose
//! output comes back as a [`Captured`].
//!
//! Every server and client binary comes from `scripts/install-test-deps.sh`;
//! a missing one panics with that hint ([`require`]): these tests never skip.
//!
//! The servers are configured like the deployment the router fronts:
//! PostgreSQL accepts only `hostssl ... cert` (the client certificate's CN is
//! the user, `app`), Redis only TLS with `tls-auth-clients yes`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sni_router::pki::{Ca, Leaf};
use tempfile::TempDir;

/// Debian's PostgreSQL 15 binaries (server, `psql`, `pg_isready`; libpq 15).
pub const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";
/// `psql` linked against Debian's libpq 15, which only knows the classic
/// `SSLRequest` negotiation. (`/usr/bin/psql` is a wrapper that picks the
/// newest installed client; this path pins the version.)
pub const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
/// Debian's `redis-server`.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// Debian's `redis-cli` (built with TLS).
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";
/// The role every client certificate names (`CN=app`), as in the deployment.
pub const APP_USER: &str = "app";

/// How long a server may take to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one client run (psql, python, redis-cli) may take before it is killed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after it was told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts tried with a fresh port when another process took the one we picked.
const START_ATTEMPTS: usize = 5;
/// libpq `connect_timeout` put in every conninfo, in seconds.
const PG_CONNECT_TIMEOUT_SECS: u32 = 10;

/// Where the install script puts PostgreSQL 18 and the Python venv:
/// `/opt/sni-router-test-deps` (outside the checkout, so the `postgres` user
/// can reach it even when the clone sits under a private home), or
/// `$SNI_ROUTER_TEST_DEPS`.
pub fn deps_dir() -> PathBuf {
    std::env::var_os("SNI_ROUTER_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/sni-router-test-deps"))
}

/// `path` if it is an executable file; otherwise panic telling how to install it.
#[track_caller]
pub fn require(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    let executable = fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    assert!(
        executable,
        "{} is missing: run `scripts/install-test-deps.sh` (as root) first; \
         the real-server tests never skip",
        path.display()
    );
    path.to_path_buf()
}

/// Run `python` from the test venv (psycopg with libpq 18, redis-py) on
/// `tests/py/<script>` with `args`.
pub fn python(script: &str, args: &[&str]) -> Captured {
    let python = require(deps_dir().join("venv/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(script);
    assert!(script.is_file(), "no such helper script: {}", script.display());
    let mut cmd = Command::new(python);
    cmd.arg(script).args(args).env("PYTHONDONTWRITEBYTECODE", "1");
    clear_pg_env(&mut cmd);
    run(&mut cmd, CLIENT_TIMEOUT)
}

/// Run `sql` with `psql` (libpq 15) on `conninfo`; rows come out as `psql -A -t`
/// prints them (`a|b`, one a line).
pub fn psql(conninfo: &str, sql: &str) -> Captured {
    let mut cmd = Command::new(require(PSQL));
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        conninfo,
        "-c",
        sql,
    ]);
    clear_pg_env(&mut cmd);
    run(&mut cmd, CLIENT_TIMEOUT)
}

/// Run `sql` with psycopg (libpq 18) on `conninfo`, printed like [`psql`] does.
pub fn psycopg(conninfo: &str, sql: &str) -> Captured {
    python("pg_query.py", &[conninfo, sql])
}

/// Run `tests/py/tls_peer_cert.py` with `args` (see [`Certs::peer_cert_args`])
/// on the blocking pool: it prints the SHA-256 of the leaf certificate the
/// server showed, then the ALPN protocol it chose (`-` for none).
pub async fn tls_peer_cert(args: Vec<String>) -> Captured {
    blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        python("tls_peer_cert.py", &args)
    })
    .await
}

/// Run a blocking client call (`psql`, `redis-cli`, ...) on tokio's blocking
/// pool, so that a router serving on the test's own runtime (even a
/// `current_thread` one) keeps running meanwhile. A panic inside resumes here.
pub async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(call).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released: a server started on it
/// may still lose a race, which the `start` functions retry).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

// === Certs ===

/// A private CA, a server certificate for the route names, and a `CN=app`
/// client certificate, written as PEM files in a temporary directory.
pub struct Certs {
    /// The CA that signed everything here.
    pub ca: Ca,
    /// DNS names of the server certificate (the route fqdns).
    pub names: Vec<String>,
    /// Server certificate for `names`, for servers and TLS backends.
    pub server: Leaf,
    /// Client certificate `CN=app`.
    pub client: Leaf,
    /// `ca.crt`.
    pub ca_file: PathBuf,
    /// `server.crt`.
    pub server_cert: PathBuf,
    /// `server.key` (mode 0600).
    pub server_key: PathBuf,
    /// `client.crt`.
    pub client_cert: PathBuf,
    /// `client.key` (mode 0600, owned by us, as libpq insists).
    pub client_key: PathBuf,
    dir: TempDir,
}

impl Certs {
    /// A new CA (`CN=understack-mtls-ca`) with a server certificate whose SANs
    /// are `names` and a `CN=app` client certificate.
    pub fn new(names: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sni-certs-")
            .tempdir()
            .expect("tempdir");
        let ca = Ca::new().expect("CA");
        let server = ca.server(names).expect("server certificate");
        let client = ca.client(APP_USER).expect("client certificate");
        let ca_file = dir.path().join("ca.crt");
        fs::write(&ca_file, ca.cert_pem()).expect("write ca.crt");
        let (server_cert, server_key) = server.write(dir.path(), "server").expect("write server");
        let (client_cert, client_key) = client.write(dir.path(), "client").expect("write client");
        Self {
            ca,
            names: names.iter().map(|n| n.to_string()).collect(),
            server,
            client,
            ca_file,
            server_cert,
            server_key,
            client_cert,
            client_key,
            dir,
        }
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issue another client certificate from this CA with `CN=common_name`;
    /// returns its (cert, key) files.
    pub fn issue_client(&self, common_name: &str) -> (PathBuf, PathBuf) {
        let leaf = self.ca.client(common_name).expect("client certificate");
        leaf.write(self.dir.path(), &format!("client-{common_name}"))
            .expect("write client")
    }

    /// [`tls_peer_cert`] arguments for the `CN=app` client asking for `fqdn`
    /// on 127.0.0.1:`port`, trusting this CA.
    pub fn peer_cert_args(&self, fqdn: &str, port: u16) -> Vec<String> {
        vec![
            "--port".into(),
            port.to_string(),
            "--sni".into(),
            fqdn.into(),
            "--cacert".into(),
            self.ca_file.display().to_string(),
            "--cert".into(),
            self.client_cert.display().to_string(),
            "--key".into(),
            self.client_key.display().to_string(),
        ]
    }

    /// A client that connects to 127.0.0.1:`port` asking for `fqdn`, trusting
    /// this CA and presenting the `CN=app` certificate.
    pub fn client(&self, fqdn: &str, port: u16) -> Client {
        Client {
            fqdn: fqdn.to_string(),
            port,
            ca_file: self.ca_file.clone(),
            identity: Some((self.client_cert.clone(), self.client_key.clone())),
        }
    }
}

// === Client ===

/// One client's view of a TLS service: it connects to 127.0.0.1:`port` but
/// asks for `fqdn` (the SNI, and the name checked where the client checks
/// names), verifies the server against `ca_file`, and presents `identity`.
#[derive(Clone, Debug)]
pub struct Client {
    /// Host name asked for: TLS SNI (and libpq `host`).
    pub fqdn: String,
    /// Port on 127.0.0.1 to connect to: the server itself, or a router.
    pub port: u16,
    /// CA the client trusts.
    pub ca_file: PathBuf,
    /// Client certificate and key; `None` presents none.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Client {
    /// The same client presenting no certificate.
    pub fn without_cert(mut self) -> Self {
        self.identity = None;
        self
    }

    /// The same client presenting `cert`/`key` instead.
    pub fn with_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// The same client connecting to another port (e.g. a router's).
    pub fn on_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// libpq conninfo as the site workers use it: `host=<fqdn>
    /// hostaddr=127.0.0.1 port=.. sslmode=verify-ca sslrootcert=.. sslcert=..
    /// sslkey=.. user=app dbname=postgres connect_timeout=10`. Append
    /// `sslnegotiation=direct` (libpq 17+) for direct TLS.
    pub fn pg_conninfo(&self) -> String {
        // With no identity, point libpq at files that do not exist so that it
        // sends no certificate (rather than one from ~/.postgresql).
        let (cert, key) = match &self.identity {
            Some((cert, key)) => (cert.clone(), key.clone()),
            None => {
                let dir = self.ca_file.parent().unwrap_or(Path::new("/"));
                (dir.join("absent.crt"), dir.join("absent.key"))
            }
        };
        format!(
            "host={} hostaddr=127.0.0.1 port={} sslmode=verify-ca sslrootcert={} sslcert={} \
             sslkey={} user={APP_USER} dbname=postgres connect_timeout={PG_CONNECT_TIMEOUT_SECS}",
            conninfo_value(&self.fqdn),
            self.port,
            conninfo_value(&self.ca_file.to_string_lossy()),
            conninfo_value(&cert.to_string_lossy()),
            conninfo_value(&key.to_string_lossy()),
        )
    }

    /// Run `sql` with `psql` (libpq 15: classic `SSLRequest` negotiation).
    pub fn psql(&self, sql: &str) -> Captured {
        psql(&self.pg_conninfo(), sql)
    }

    /// Run `sql` with psycopg (libpq 18) using `negotiation`.
    pub fn psycopg(&self, negotiation: SslNegotiation, sql: &str) -> Captured {
        let conninfo = format!("{} sslnegotiation={}", self.pg_conninfo(), negotiation.as_str());
        psycopg(&conninfo, sql)
    }

    /// Run `redis-cli --tls --sni <fqdn> --cacert .. [--cert .. --key ..] -h
    /// 127.0.0.1 -p <port> -e <args>` (`-e`: an error reply exits non-zero).
    pub fn redis_cli(&self, args: &[&str]) -> Captured {
        let mut cmd = Command::new(require(REDIS_CLI));
        cmd.args(["--tls", "--sni", &self.fqdn, "--cacert"]).arg(&self.ca_file);
        if let Some((cert, key)) = &self.identity {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-e"])
            .args(args);
        cmd.env_remove("REDISCLI_AUTH");
        run(&mut cmd, CLIENT_TIMEOUT)
    }

    /// Send one command with redis-py, which also checks the server
    /// certificate's name against `fqdn`; prints the raw reply (PING -> PONG).
    pub fn redis_py(&self, args: &[&str]) -> Captured {
        let port = self.port.to_string();
        let ca = self.ca_file.to_string_lossy().into_owned();
        let mut argv = vec!["--sni", self.fqdn.as_str(), "--port", &port, "--cacert", &ca];
        let identity = self
            .identity
            .as_ref()
            .map(|(c, k)| (c.to_string_lossy().into_owned(), k.to_string_lossy().into_owned()));
        if let Some((cert, key)) = &identity {
            argv.extend(["--cert", cert.as_str(), "--key", key.as_str()]);
        }
        argv.extend(args);
        python("redis_cmd.py", &argv)
    }
}

/// libpq's `sslnegotiation` (libpq 17+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslNegotiation {
    /// `postgres`: `SSLRequest`, the server's `S`, then TLS.
    Postgres,
    /// `direct`: TLS right after connect, ALPN `postgresql`.
    Direct,
}

impl SslNegotiation {
    /// The conninfo value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Direct => "direct",
        }
    }
}

// === Postgres ===

/// Which PostgreSQL server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgKind {
    /// Debian 12's PostgreSQL 15 (classic `SSLRequest` only).
    V15,
    /// PostgreSQL 18 from `<deps_dir>/pg18` (also accepts direct TLS).
    V18,
}

impl PgKind {
    /// Directory holding `initdb`, `postgres` and `pg_ctl`.
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Self::V15 => PathBuf::from(PG15_BIN),
            Self::V18 => deps_dir().join("pg18/bin"),
        }
    }

    /// Major version number.
    pub fn major(self) -> u32 {
        match self {
            Self::V15 => 15,
            Self::V18 => 18,
        }
    }
}

/// How to start a [`Postgres`].
pub struct PgOptions<'a> {
    /// Server certificate (`certs.server`) and the CA clients must chain to.
    pub certs: &'a Certs,
    /// Extra `postgresql.conf` settings, applied after the fixture's own.
    pub settings: Vec<(String, String)>,
}

impl<'a> PgOptions<'a> {
    /// The fixture's defaults with `certs`.
    pub fn new(certs: &'a Certs) -> Self {
        Self {
            certs,
            settings: Vec::new(),
        }
    }

    /// Add a `postgresql.conf` setting (e.g. `max_connections`).
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.settings.push((name.to_string(), value.into()));
        self
    }
}

/// A PostgreSQL server of its own on 127.0.0.1, run as the `postgres` user,
/// with TLS and client-certificate authentication only (plus `trust` on its
/// private unix socket for [`Postgres::admin`]). Role `app` exists. Stopped
/// (immediate mode) and deleted on drop.
pub struct Postgres {
    kind: PgKind,
    port: u16,
    version: String,
    child: Child,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Dropped last: holds the data directory, socket, certificates and log.
    dir: TempDir,
}

impl Postgres {
    /// initdb, configure TLS and `pg_hba.conf`, start, wait until ready, create
    /// role `app`. Panics (with the server log) if any step fails.
    pub fn start(kind: PgKind, opts: &PgOptions<'_>) -> Self {
        let bin = kind.bin_dir();
        let (initdb, postgres) = (require(bin.join("initdb")), require(bin.join("postgres")));
        require(bin.join("pg_ctl"));
        require(PSQL);
        require(PG15_BIN.to_string() + "/pg_isready");
        let (uid, gid) = postgres_user();

        let mut dir = tempfile::Builder::new().prefix("sni-pg-").tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let (cert, key) = opts.certs.server.write(&root, "server").expect("write server cert");
        let ca = root.join("ca.crt");
        fs::write(&ca, opts.certs.ca.cert_pem()).expect("write ca.crt");
        for path in [&root, &cert, &key, &ca] {
            chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }

        let data_dir = root.join("data");
        let mut cmd = Command::new(initdb);
        cmd.arg("-D").arg(&data_dir);
        cmd.args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        cmd.arg("--no-instructions").current_dir(&root).uid(uid).gid(gid);
        run(&mut cmd, READY_TIMEOUT).expect_ok("initdb");

        // The deployment's one rule, for both spellings of "from anywhere";
        // `local ... trust` serves only the fixture's own socket.
        fs::write(
            data_dir.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 cert\n\
             hostssl all all 0.0.0.0/0 cert\n",
        )
        .expect("write pg_hba.conf");
        let mut conf = String::from("\n# sni-router test fixture\n");
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "127.0.0.1".to_string()),
            ("unix_socket_directories", root.display().to_string()),
            ("ssl", "on".to_string()),
            ("ssl_cert_file", cert.display().to_string()),
            ("ssl_key_file", key.display().to_string()),
            ("ssl_ca_file", ca.display().to_string()),
            ("fsync", "off".to_string()),
            ("synchronous_commit", "off".to_string()),
            ("full_page_writes", "off".to_string()),
            ("shared_buffers", "16MB".to_string()),
            ("log_connections", "on".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        settings.extend(opts.settings.iter().cloned());
        for (name, value) in &settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        OpenOptions::new()
            .append(true)
            .open(data_dir.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");

        let log_path = root.join("server.log");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = File::create(&log_path).expect("create server.log");
            let mut cmd = Command::new(&postgres);
            cmd.arg("-D").arg(&data_dir).args(["-c", &format!("port={port}")]);
            cmd.current_dir(&root).uid(uid).gid(gid).stdin(Stdio::null());
            cmd.stdout(log.try_clone().expect("dup log")).stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", postgres.display()));
            let mut server = Postgres {
                kind,
                port,
                version: String::new(),
                child,
                data_dir: data_dir.clone(),
                log_path: log_path.clone(),
                dir,
            };
            match server.wait_ready() {
                Ok(()) => {
                    server
                        .admin(&format!("CREATE ROLE {APP_USER} LOGIN"))
                        .expect_ok("create role");
                    server.version = server.admin("SHOW server_version").expect_ok("version");
                    assert!(
                        server.version.starts_with(&format!("{}.", kind.major())),
                        "{kind:?} reports version {}",
                        server.version
                    );
                    return server;
                }
                Err(log) if attempt < START_ATTEMPTS && port_taken(&log) => {
                    dir = server.take_dir();
                }
                Err(log) => panic!("PostgreSQL {kind:?} did not start on port {port}:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Which server this is.
    pub fn kind(&self) -> PgKind {
        self.kind
    }

    /// `SHOW server_version`, e.g. `18.4` or `15.18 (Debian 15.18-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// PID of the postmaster.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Everything the server logged so far (connections are logged).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Run `sql` as superuser `postgres` over the private unix socket.
    pub fn admin(&self, sql: &str) -> Captured {
        let conninfo = format!(
            "host={} port={} user=postgres dbname=postgres",
            conninfo_value(&self.dir.path().to_string_lossy()),
            self.port
        );
        psql(&conninfo, sql)
    }

    /// A client of this server asking for `fqdn`, with the `CN=app` certificate.
    pub fn client(&self, certs: &Certs, fqdn: &str) -> Client {
        certs.client(fqdn, self.port)
    }

    /// Poll `pg_isready` on the unix socket until the server accepts
    /// connections; `Err(log)` if it exited or took too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let socket_dir = self.dir.path().to_path_buf();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            let mut cmd = Command::new(PG15_BIN.to_string() + "/pg_isready");
            cmd.arg("-q")
                .arg("-h")
                .arg(&socket_dir)
                .args(["-p", &self.port.to_string()]);
            clear_pg_env(&mut cmd);
            if run(&mut cmd, Duration::from_secs(5)).success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}\n{}", self.log()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the server and hand back its directory (for a retry on another port).
    fn take_dir(mut self) -> TempDir {
        self.stop();
        let placeholder = tempfile::tempdir().expect("tempdir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        drop(self);
        dir
    }

    /// Immediate shutdown (`pg_ctl stop -m immediate`), SIGKILL if that fails.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let (uid, gid) = postgres_user();
        let mut cmd = Command::new(self.kind.bin_dir().join("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-s", "-w"]);
        cmd.current_dir(self.dir.path()).uid(uid).gid(gid);
        let _ = run(&mut cmd, STOP_TIMEOUT);
        if wait_exit(&mut self.child, STOP_TIMEOUT).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

// === Redis ===

/// How to start a [`Redis`].
pub struct RedisOptions<'a> {
    /// Server certificate (`certs.server`) and the CA clients must chain to.
    pub certs: &'a Certs,
    /// Extra `redis-server` arguments, after the fixture's own (later wins).
    pub args: Vec<String>,
}

impl<'a> RedisOptions<'a> {
    /// The fixture's defaults with `certs`.
    pub fn new(certs: &'a Certs) -> Self {
        Self {
            certs,
            args: Vec::new(),
        }
    }

    /// Add `--name value`.
    pub fn arg(mut self, name: &str, value: impl Into<String>) -> Self {
        self.args.push(format!("--{name}"));
        self.args.push(value.into());
        self
    }
}

/// A `redis-server` of its own (never the system service) listening only
/// with TLS on 127.0.0.1, requiring client certificates, persisting nothing.
/// Killed by PID on drop.
pub struct Redis {
    port: u16,
    child: Child,
    log_path: PathBuf,
    // Dropped last: holds certificates, log and working directory.
    dir: TempDir,
}

impl Redis {
    /// Start and wait until it logs that it accepts connections. Panics (with
    /// the server log) if it does not.
    pub fn start(opts: &RedisOptions<'_>) -> Self {
        let server = require(REDIS_SERVER);
        require(REDIS_CLI);
        let mut dir = tempfile::Builder::new()
            .prefix("sni-redis-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let (cert, key) = opts.certs.server.write(&root, "server").expect("write server cert");
        let ca = root.join("ca.crt");
        fs::write(&ca, opts.certs.ca.cert_pem()).expect("write ca.crt");
        let log_path = root.join("server.log");

        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let log = File::create(&log_path).expect("create server.log");
            let mut cmd = Command::new(&server);
            cmd.args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"]);
            cmd.arg("--tls-cert-file").arg(&cert).arg("--tls-key-file").arg(&key);
            cmd.arg("--tls-ca-cert-file")
                .arg(&ca)
                .args(["--tls-auth-clients", "yes"]);
            cmd.args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
            cmd.args(["--supervised", "no", "--logfile", ""])
                .arg("--dir")
                .arg(&root);
            cmd.args(&opts.args);
            cmd.current_dir(&root).stdin(Stdio::null());
            cmd.stdout(log.try_clone().expect("dup log")).stderr(log);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", server.display()));
            let mut redis = Redis {
                port,
                child,
                log_path: log_path.clone(),
                dir,
            };
            match redis.wait_ready() {
                Ok(()) => return redis,
                Err(log) if attempt < START_ATTEMPTS && port_taken(&log) => {
                    redis.stop();
                    let placeholder = tempfile::tempdir().expect("tempdir");
                    dir = std::mem::replace(&mut redis.dir, placeholder);
                }
                Err(log) => panic!("redis-server did not start on port {port}:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// TLS port on 127.0.0.1 (there is no plaintext port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// PID of `redis-server`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A client of this server asking for `fqdn`, with the `CN=app` certificate.
    pub fn client(&self, certs: &Certs, fqdn: &str) -> Client {
        certs.client(fqdn, self.port)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}\n{}", self.log()));
            }
            if self.log().contains("Ready to accept connections") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {READY_TIMEOUT:?}\n{}", self.log()));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// === Captured ===

/// What a client run printed and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// The command line, for messages.
    pub command: String,
    /// Exit status (a signal if it was killed for running too long).
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
    /// Killed after running longer than allowed.
    pub timed_out: bool,
}

impl Captured {
    /// Exited 0 in time.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// Trimmed stdout; panics with the whole capture unless it succeeded.
    #[track_caller]
    pub fn expect_ok(&self, what: &str) -> String {
        assert!(self.success(), "{what}: expected success\n{self}");
        self.stdout.trim().to_string()
    }

    /// stdout and stderr together; panics with the whole capture if it
    /// succeeded or timed out (a refusal must be prompt).
    #[track_caller]
    pub fn expect_err(&self, what: &str) -> String {
        assert!(
            !self.status.success() && !self.timed_out,
            "{what}: expected a prompt failure\n{self}"
        );
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timed_out = if self.timed_out { " (killed: timed out)" } else { "" };
        writeln!(f, "$ {}\nstatus: {}{timed_out}", self.command, self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

// === helpers ===

/// Run `cmd` to completion with stdin closed and output captured, killing it
/// after `timeout`.
fn run(cmd: &mut Command, timeout: Duration) -> Captured {
    let command = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let (status, timed_out) = match wait_exit(&mut child, timeout) {
        Some(status) => (status, false),
        None => {
            let _ = child.kill();
            (child.wait().expect("wait for killed child"), true)
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Captured {
        command,
        status,
        stdout,
        stderr,
        timed_out,
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Reap `child` if it exits within `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// The server log says another process holds the port we picked.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not bind")
}

/// Keep the caller's `PG*` variables (PGHOST, PGSSLMODE, ...) out of client runs.
fn clear_pg_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
}

/// A conninfo value, quoted when it needs to be.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// uid and gid of the `postgres` user (PostgreSQL refuses to run as root).
fn postgres_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .expect("no `postgres` user: run `scripts/install-test-deps.sh` (as root) first")
}
