//! Backend connections: resolve each endpoint through the system resolver,
//! try every address in turn under the connect timeout, first success wins.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

use crate::sockbuf::SocketBuffers;

/// Default backend connect timeout: Envoy's cluster `connect_timeout` as
/// Envoy Gateway sets it (10 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One failed attempt: which endpoint or address, and why.
#[derive(Debug)]
pub struct Attempt {
    /// `host:port` as configured, or the resolved address.
    pub target: String,
    /// What went wrong.
    pub error: AttemptError,
}

/// Why one attempt failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The name did not resolve (or resolved to nothing).
    Resolve(io::Error),
    /// The TCP connect failed (refused, unreachable, ...).
    Connect(io::Error),
    /// The TCP connect did not finish within the timeout.
    Timeout(Duration),
}

/// No endpoint of the backend could be reached.
#[derive(Debug, thiserror::Error)]
#[error("no backend endpoint reachable: {}", Summary(.attempts))]
pub struct ConnectError {
    /// Every attempt, in order.
    pub attempts: Vec<Attempt>,
}

/// Connect to the first reachable address of `endpoints` (`host:port` each),
/// sizing the socket's buffers as `buffers` says for that address. `first`
/// is what the caller will send first: when the handshake is already done
/// as `connect(2)` returns (always on loopback), it goes out at once and the
/// count sent is returned beside the stream; the caller sends the rest.
pub async fn connect(
    endpoints: &[String],
    timeout: Duration,
    buffers: SocketBuffers,
    first: &[u8],
) -> Result<(TcpStream, SocketAddr, usize), ConnectError> {
    let mut attempts = Vec::new();
    for endpoint in endpoints {
        // An address literal (the usual `--backend` override) needs no
        // resolver round, timer or address list.
        let (literal, resolved);
        let addrs: &[SocketAddr] = if let Ok(addr) = endpoint.parse::<SocketAddr>() {
            literal = [addr];
            &literal
        } else {
            resolved = match tokio::time::timeout(timeout, tokio::net::lookup_host(endpoint.as_str())).await {
                Ok(Ok(addrs)) => addrs.collect::<Vec<SocketAddr>>(),
                Ok(Err(e)) => {
                    attempts.push(Attempt {
                        target: endpoint.clone(),
                        error: AttemptError::Resolve(e),
                    });
                    continue;
                }
                Err(_) => {
                    attempts.push(Attempt {
                        target: endpoint.clone(),
                        error: AttemptError::Timeout(timeout),
                    });
                    continue;
                }
            };
            &resolved
        };
        if addrs.is_empty() {
            let e = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
            attempts.push(Attempt {
                target: endpoint.clone(),
                error: AttemptError::Resolve(e),
            });
        }
        for &addr in addrs {
            match attempt(addr, timeout, buffers, first).await {
                Ok((stream, sent)) => return Ok((stream, addr, sent)),
                Err(failed) => attempts.push(failed),
            }
        }
    }
    Err(ConnectError { attempts })
}

/// One TCP connect under the timeout.
async fn attempt(
    addr: SocketAddr,
    timeout: Duration,
    buffers: SocketBuffers,
    first: &[u8],
) -> Result<(TcpStream, usize), Attempt> {
    let error = match tokio::time::timeout(timeout, open(addr, buffers, first)).await {
        Ok(Ok(opened)) => return Ok(opened),
        Ok(Err(e)) => AttemptError::Connect(e),
        Err(_) => AttemptError::Timeout(timeout),
    };
    Err(Attempt {
        target: addr.to_string(),
        error,
    })
}

/// A connected socket to `addr` and how much of `first` it has sent. Its
/// buffers are sized before the handshake so the window scale offered fits
/// them.
async fn open(addr: SocketAddr, buffers: SocketBuffers, first: &[u8]) -> io::Result<(TcpStream, usize)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let kind = Type::STREAM.nonblocking();
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let kind = Type::STREAM;
    let socket = Socket::new(Domain::for_address(addr), kind, Some(Protocol::TCP))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    socket.set_nonblocking(true)?;
    buffers.apply(&socket, addr.ip())?;
    // Small writes (handshake flights, ping-pong) must not wait for Nagle.
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if in_progress(&e) => {}
        Err(e) => return Err(e),
    }
    // On loopback the whole handshake runs inside connect(2): the first
    // bytes can go now, which saves waiting a turn of the event loop for
    // writability and asking SO_ERROR. A connection still in progress
    // refuses the send (EAGAIN, or ENOTCONN on some systems).
    let sent = if first.is_empty() {
        0
    } else {
        match socket.send(first) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::NotConnected => 0,
            Err(e) => return Err(e),
        }
    };
    let stream = TcpStream::from_std(socket.into())?;
    if sent == 0 {
        // What tokio's own connect does: writable once the handshake ends either way.
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok((stream, sent))
}

/// A non-blocking connect that has started.
fn in_progress(e: &io::Error) -> bool {
    #[cfg(unix)]
    if e.raw_os_error() == Some(nix::libc::EINPROGRESS) {
        return true;
    }
    e.kind() == io::ErrorKind::WouldBlock
}

struct Summary<'a>(&'a [Attempt]);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no endpoints configured");
        }
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &a.error {
                AttemptError::Resolve(e) => write!(f, "{}: cannot resolve: {e}", a.target)?,
                AttemptError::Connect(e) => write!(f, "{}: {e}", a.target)?,
                AttemptError::Timeout(t) => write!(f, "{}: timed out after {t:?}", a.target)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn next_endpoint_after_a_refusal() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = closed.local_addr().unwrap().to_string();
        drop(closed);
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = open.local_addr().unwrap();
        let (_, addr, _) = connect(
            &[refused.clone(), good.to_string()],
            Duration::from_secs(2),
            SocketBuffers::Auto,
            b"",
        )
        .await
        .unwrap();
        assert_eq!(addr, good);

        let err = connect(
            std::slice::from_ref(&refused),
            Duration::from_secs(2),
            SocketBuffers::Auto,
            b"",
        )
        .await
        .unwrap_err();
        assert_eq!(err.attempts.len(), 1);
        assert!(err.to_string().contains(&refused), "{err}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    /// On loopback the handshake is over when connect(2) returns, so the
    /// first bytes go with it; whatever did not is the caller's to send, and
    /// a refusal found by that send is a connect error like any other.
    #[tokio::test]
    async fn first_bytes_ride_on_the_connect() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let first = b"first flight".as_slice();
        let open = || {
            connect(
                std::slice::from_ref(&addr),
                Duration::from_secs(2),
                SocketBuffers::Auto,
                first,
            )
        };
        let (mut stream, _, sent) = open().await.unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(sent, first.len(), "sent with the connect");
        stream.write_all(&first[sent..]).await.unwrap();
        stream.shutdown().await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        accepted.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, first);

        drop(listener);
        let err = open().await.unwrap_err();
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    /// Linux reports twice the size set (the rest is its bookkeeping).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn buffers_are_sized_as_the_policy_says_for_the_backend() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let timeout = Duration::from_secs(2);
        let sizes = |stream: &TcpStream| {
            let socket = socket2::SockRef::from(stream);
            (socket.recv_buffer_size().unwrap(), socket.send_buffer_size().unwrap())
        };
        let local = 2 * crate::sockbuf::LOCAL_SIZE;
        let (auto, _, _) = connect(std::slice::from_ref(&addr), timeout, SocketBuffers::Auto, b"")
            .await
            .unwrap();
        assert_eq!(sizes(&auto), (local, local));
        let (fixed, _, _) = connect(
            std::slice::from_ref(&addr),
            timeout,
            SocketBuffers::Fixed(64 * 1024),
            b"",
        )
        .await
        .unwrap();
        assert_eq!(sizes(&fixed), (128 * 1024, 128 * 1024));
        let (kernel, _, _) = connect(std::slice::from_ref(&addr), timeout, SocketBuffers::Kernel, b"")
            .await
            .unwrap();
        let (rcv, snd) = sizes(&kernel);
        assert!(
            rcv != local && snd != local,
            "kernel autotuning left alone: {rcv} {snd}"
        );
    }

    #[tokio::test]
    async fn unresolvable_name_is_reported() {
        let err = connect(
            &["no-such-service.invalid:5432".into()],
            Duration::from_secs(5),
            SocketBuffers::Auto,
            b"",
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("no-such-service.invalid:5432: cannot resolve"),
            "{err}"
        );
    }
}
