//! The load side of the end-to-end bench: the backend every target forwards
//! to, and the clients that drive each scenario. Both run in the bench
//! process, each on its own single-threaded tokio runtime, on the load CPU.
//!
//! Wire protocol (what any of the proxies forwards untouched): the client
//! sends the ClientHello, then a 16-byte command (`SRB1`, mode, 3 zero bytes,
//! a big-endian u64 argument); what follows depends on the mode.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Bytes of the command after the hello.
const COMMAND_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"SRB1";
/// The "small reply" of the connection-rate scenario.
pub const REPLY_LEN: usize = 64;
/// Ping-pong message size of the latency scenario.
pub const PING_LEN: usize = 64;
/// Read/write chunk of the throughput scenario.
const CHUNK: usize = 256 * 1024;
/// Period of the verification pattern: prime, so a byte out of place shows.
const PERIOD: usize = 65_521;
/// Bound on any single client step (connect, a read, a write).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the backend does after the hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Write `REPLY_LEN` bytes, then close (the server closes, as HTTP/1.0 does).
    Reply = 1,
    /// Echo until EOF.
    Echo = 2,
    /// Read and verify `arg` bytes of the pattern, answer the verified count
    /// as a u64 (`u64::MAX` on a mismatch), close.
    Sink = 3,
    /// Write `arg` bytes of the pattern, close.
    Source = 4,
    /// Write one byte, then wait for EOF.
    Idle = 5,
}

/// The verification pattern, `PERIOD + CHUNK` long so any offset has `CHUNK` bytes after it.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let base: Vec<u8> = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        base.iter().cycle().take(PERIOD + CHUNK).copied().collect()
    })
}

/// True when `data` is the pattern at stream offset `offset`.
fn verify(data: &[u8], offset: u64) -> bool {
    let at = (offset % PERIOD as u64) as usize;
    pattern()[at..at + data.len()] == *data
}

fn command(mode: Mode, arg: u64) -> [u8; COMMAND_LEN] {
    let mut out = [0u8; COMMAND_LEN];
    out[..4].copy_from_slice(MAGIC);
    out[4] = mode as u8;
    out[8..].copy_from_slice(&arg.to_be_bytes());
    out
}

// === backend ===

/// The backend: a TCP server on a loopback port, on its own thread and runtime.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections whose hello did not arrive intact (a proxy changed bytes).
    pub bad_hellos: Arc<AtomicU64>,
}

impl Backend {
    /// Start on 127.0.0.1:0; `hello` is what every connection must start with.
    pub fn start(hello: Arc<Vec<u8>>) -> io::Result<Self> {
        let std_listener = {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
            socket.listen(4096)?;
            socket.set_nonblocking(true)?;
            std::net::TcpListener::from(socket)
        };
        let addr = std_listener.local_addr()?;
        let bad_hellos = Arc::new(AtomicU64::new(0));
        let bad = bad_hellos.clone();
        std::thread::Builder::new().name("backend".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("backend runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("backend listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        // EMFILE and friends: back off, never spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let hello = hello.clone();
                    let bad = bad.clone();
                    tokio::spawn(async move {
                        if let Err(BackendError::BadHello) = serve(stream, &hello).await {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
        })?;
        Ok(Self { addr, bad_hellos })
    }
}

enum BackendError {
    Io,
    BadHello,
}

impl From<io::Error> for BackendError {
    fn from(_: io::Error) -> Self {
        Self::Io
    }
}

async fn serve(mut stream: TcpStream, hello: &[u8]) -> Result<(), BackendError> {
    stream.set_nodelay(true)?;
    let mut head = vec![0u8; hello.len() + COMMAND_LEN];
    stream.read_exact(&mut head).await?;
    if head[..hello.len()] != *hello || &head[hello.len()..hello.len() + 4] != MAGIC {
        return Err(BackendError::BadHello);
    }
    let cmd = &head[hello.len()..];
    let arg = u64::from_be_bytes(cmd[8..16].try_into().expect("8 bytes"));
    match cmd[4] {
        m if m == Mode::Reply as u8 => {
            stream.write_all(&[0x17; REPLY_LEN]).await?;
        }
        m if m == Mode::Echo as u8 => {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                stream.write_all(&buf[..n]).await?;
            }
        }
        m if m == Mode::Sink as u8 => {
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            let mut ok = true;
            while got < arg {
                let want = ((arg - got) as usize).min(CHUNK);
                let n = stream.read(&mut buf[..want]).await?;
                if n == 0 {
                    break;
                }
                ok &= verify(&buf[..n], got);
                got += n as u64;
            }
            let verdict = if ok { got } else { u64::MAX };
            stream.write_all(&verdict.to_be_bytes()).await?;
        }
        m if m == Mode::Source as u8 => {
            let mut sent = 0u64;
            while sent < arg {
                let at = (sent % PERIOD as u64) as usize;
                let n = ((arg - sent) as usize).min(CHUNK);
                stream.write_all(&pattern()[at..at + n]).await?;
                sent += n as u64;
            }
        }
        m if m == Mode::Idle as u8 => {
            stream.write_all(&[1]).await?;
            let mut buf = [0u8; 64];
            while stream.read(&mut buf).await? > 0 {}
        }
        _ => return Err(BackendError::BadHello),
    }
    let _ = stream.shutdown().await;
    Ok(())
}

// === clients ===

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = step(TcpStream::connect(addr)).await??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Bound a step in time.
async fn step<T>(fut: impl std::future::Future<Output = T>) -> io::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "bench step timed out"))
}

/// Send hello + command in one write, as a client's first flight would go.
async fn open(addr: SocketAddr, hello: &[u8], mode: Mode, arg: u64) -> io::Result<TcpStream> {
    let mut stream = connect(addr).await?;
    let mut first = Vec::with_capacity(hello.len() + COMMAND_LEN);
    first.extend_from_slice(hello);
    first.extend_from_slice(&command(mode, arg));
    step(stream.write_all(&first)).await??;
    Ok(stream)
}

/// One connection of the connection-rate scenario: connect, hello, read the
/// small reply to EOF, close. Returns its duration.
pub async fn connection(addr: SocketAddr, hello: &[u8]) -> io::Result<Duration> {
    let start = Instant::now();
    let mut stream = open(addr, hello, Mode::Reply, 0).await?;
    let mut reply = [0u8; REPLY_LEN + 1];
    let mut got = 0;
    loop {
        let n = step(stream.read(&mut reply[got..])).await??;
        if n == 0 {
            break;
        }
        got += n;
        if got > REPLY_LEN {
            break;
        }
    }
    if got != REPLY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("reply of {got} bytes, expected {REPLY_LEN}"),
        ));
    }
    drop(stream);
    Ok(start.elapsed())
}

/// Result of a connection-rate run.
pub struct ConnRate {
    /// Connection times of the successful connections.
    pub times: Vec<Duration>,
    /// Failed connections.
    pub errors: u64,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// `clients` loops of [`connection`] until `duration` passes or `max` connections are made.
pub async fn conn_rate(
    addr: SocketAddr,
    hello: Arc<Vec<u8>>,
    clients: usize,
    duration: Duration,
    max: u64,
) -> ConnRate {
    let start = Instant::now();
    let deadline = start + duration;
    let started = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let hello = hello.clone();
        let started = started.clone();
        set.spawn(async move {
            let mut times = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
                match connection(addr, &hello).await {
                    Ok(t) => times.push(t),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        // A refusing target must not turn this into a busy loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (times, errors, first_error)
        });
    }
    let mut out = ConnRate {
        times: Vec::new(),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(joined) = set.join_next().await {
        let (times, errors, first_error) = joined.expect("client task");
        out.times.extend(times);
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = first_error;
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// Which way the bulk bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client → backend.
    Up,
    /// Backend → client.
    Down,
}

/// Result of a throughput run.
pub struct Throughput {
    /// Bytes that arrived and matched the pattern, all connections together.
    pub verified: u64,
    /// Bytes asked for.
    pub requested: u64,
    /// From the first connect to the last verified byte.
    pub elapsed: Duration,
    /// Errors (including mismatched bytes), the first one's text.
    pub error: Option<String>,
}

/// Move `total` bytes over `conns` connections in direction `way`, verify
/// every byte; give up at `cap` (uploads fail then; downloads stop early,
/// `verified < requested`).
pub async fn throughput(
    addr: SocketAddr,
    hello: Arc<Vec<u8>>,
    conns: usize,
    total: u64,
    way: Way,
    cap: Duration,
) -> Throughput {
    let per = total / conns as u64;
    let start = Instant::now();
    let deadline = start + cap;
    let mut set = JoinSet::new();
    for _ in 0..conns {
        let hello = hello.clone();
        set.spawn(async move {
            match way {
                Way::Up => upload(addr, &hello, per, deadline).await,
                Way::Down => download(addr, &hello, per, deadline).await,
            }
        });
    }
    let mut out = Throughput {
        verified: 0,
        requested: per * conns as u64,
        elapsed: Duration::ZERO,
        error: None,
    };
    while let Some(joined) = set.join_next().await {
        match joined.expect("throughput task") {
            Ok(n) => out.verified += n,
            Err(e) => {
                out.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out.elapsed = start.elapsed();
    out
}

async fn upload(addr: SocketAddr, hello: &[u8], n: u64, deadline: Instant) -> io::Result<u64> {
    // The backend answers after exactly `n` bytes: no half-close needed
    // (nginx without `proxy_half_close` and sniproxy close both ways on EOF).
    let mut stream = open(addr, hello, Mode::Sink, n).await?;
    let mut sent = 0u64;
    while sent < n {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("time cap reached after {sent} of {n} bytes"),
            ));
        }
        let at = (sent % PERIOD as u64) as usize;
        let len = ((n - sent) as usize).min(CHUNK);
        step(stream.write_all(&pattern()[at..at + len])).await??;
        sent += len as u64;
    }
    let mut verdict = [0u8; 8];
    step(stream.read_exact(&mut verdict)).await??;
    match u64::from_be_bytes(verdict) {
        u64::MAX => Err(io::Error::other("backend saw bytes that are not the pattern")),
        got if got != n => Err(io::Error::other(format!("backend verified {got} of {n} bytes"))),
        got => Ok(got),
    }
}

async fn download(addr: SocketAddr, hello: &[u8], n: u64, deadline: Instant) -> io::Result<u64> {
    let mut stream = open(addr, hello, Mode::Source, n).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while Instant::now() < deadline {
        let k = step(stream.read(&mut buf)).await??;
        if k == 0 {
            break;
        }
        if !verify(&buf[..k], got) {
            return Err(io::Error::other(format!("bytes at offset {got} are not the pattern")));
        }
        got += k as u64;
    }
    if got > n {
        return Err(io::Error::other(format!("received {got} bytes, sent {n}")));
    }
    Ok(got)
}

/// Round trips of `PING_LEN` bytes on one connection: `warmup` unrecorded,
/// then up to `iters` recorded, stopping at `cap`.
pub async fn latency(
    addr: SocketAddr,
    hello: &[u8],
    warmup: usize,
    iters: usize,
    cap: Duration,
) -> io::Result<Vec<Duration>> {
    let mut stream = open(addr, hello, Mode::Echo, 0).await?;
    let ping = [0x42u8; PING_LEN];
    let mut pong = [0u8; PING_LEN];
    let deadline = Instant::now() + cap;
    let mut rtts = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        if Instant::now() >= deadline {
            break;
        }
        let start = Instant::now();
        step(stream.write_all(&ping)).await??;
        step(stream.read_exact(&mut pong)).await??;
        let rtt = start.elapsed();
        if pong != ping {
            return Err(io::Error::other("echo differs"));
        }
        if i >= warmup {
            rtts.push(rtt);
        }
    }
    Ok(rtts)
}

/// Open `n` connections that carried data both ways (hello up, one byte
/// down) and then sit idle; returned so the caller holds them.
pub async fn idle(addr: SocketAddr, hello: Arc<Vec<u8>>, n: usize, parallel: usize) -> io::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    let mut opened = 0;
    while held.len() < n {
        while opened < n && set.len() < parallel {
            let hello = hello.clone();
            set.spawn(async move {
                let mut stream = open(addr, &hello, Mode::Idle, 0).await?;
                let mut ready = [0u8; 1];
                step(stream.read_exact(&mut ready)).await??;
                Ok::<_, io::Error>(stream)
            });
            opened += 1;
        }
        match set.join_next().await {
            Some(joined) => held.push(joined.expect("idle task")?),
            None => break,
        }
    }
    Ok(held)
}
