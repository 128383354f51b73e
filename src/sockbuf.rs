//! Kernel socket buffer sizes (`SO_RCVBUF`/`SO_SNDBUF`).
//!
//! Left alone, Linux grows a TCP socket's buffers with the amount in flight,
//! up to `net.ipv4.tcp_rmem`'s maximum (often 6–32 MiB). That sizes the window
//! to the path on a real network. Between processes on one host it only lets
//! megabytes pile up in socket queues (most likely leaving the CPU caches
//! before the reader copies them), and a bulk transfer through the router ran
//! at 0.6× a direct connection (`benches/e2e.rs`, docs/benchmarks.md). With
//! 256 KiB per socket the same transfer runs at 0.8–1.0×, and a window of
//! that size still covers a loopback round trip many times over. So by
//! default only sockets whose peer is on this host get fixed buffers.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;

use socket2::SockRef;

/// Buffer size given to sockets with a peer on this host under [`SocketBuffers::Auto`].
pub const LOCAL_SIZE: usize = 256 * 1024;

/// How the router sizes its sockets' kernel buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SocketBuffers {
    /// [`LOCAL_SIZE`] when the peer is a loopback address; kernel autotuning otherwise.
    #[default]
    Auto,
    /// Kernel autotuning for every socket.
    Kernel,
    /// This many bytes for every socket, as passed to `setsockopt` (Linux doubles it for bookkeeping).
    Fixed(usize),
}

impl SocketBuffers {
    /// The size to set on a socket whose peer is `peer`; `None`: leave it to the kernel.
    pub fn size_for(self, peer: IpAddr) -> Option<usize> {
        match self {
            SocketBuffers::Auto => peer.to_canonical().is_loopback().then_some(LOCAL_SIZE),
            SocketBuffers::Kernel => None,
            SocketBuffers::Fixed(size) => Some(size),
        }
    }

    /// Size `socket`'s buffers for a peer at `peer`, if this policy says so.
    pub fn apply<'s>(self, socket: impl Into<SockRef<'s>>, peer: IpAddr) -> io::Result<()> {
        match self.size_for(peer) {
            Some(size) => set(socket.into(), size),
            None => Ok(()),
        }
    }
}

/// Both buffers of `socket` to `size` bytes.
fn set(socket: SockRef<'_>, size: usize) -> io::Result<()> {
    socket.set_recv_buffer_size(size)?;
    socket.set_send_buffer_size(size)
}

/// The smaller of `socket`'s two buffer sizes in `setsockopt`'s terms: the
/// kernel silently caps a request at `net.core.rmem_max`/`wmem_max`.
pub fn granted(socket: SockRef<'_>) -> io::Result<usize> {
    let reported = socket.recv_buffer_size()?.min(socket.send_buffer_size()?);
    // Linux reports twice what it grants to data (the rest is bookkeeping).
    Ok(if cfg!(target_os = "linux") {
        reported / 2
    } else {
        reported
    })
}

/// Smallest fixed size accepted: below it Linux rounds up anyway, and a
/// window this small would stall every transfer.
const MIN_SIZE: usize = 4096;
/// Largest fixed size accepted: well past any `net.core.rmem_max`.
const MAX_SIZE: usize = 1 << 30;

/// A `--socket-buffer` value that is not `auto`, `kernel` or a size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?}: expected auto, kernel, or a size from 4K to 1G such as 256K or 1M")]
pub struct ParseError(String);

impl FromStr for SocketBuffers {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError(s.to_string());
        let value = s.trim();
        match value.to_ascii_lowercase().as_str() {
            "auto" => return Ok(SocketBuffers::Auto),
            "kernel" => return Ok(SocketBuffers::Kernel),
            _ => {}
        }
        let (digits, unit) = match value.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            Some((at, _)) => value.split_at(at),
            None => (value, ""),
        };
        let scale: usize = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        let size = digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(bad)?;
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(bad());
        }
        Ok(SocketBuffers::Fixed(size))
    }
}

impl fmt::Display for SocketBuffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketBuffers::Auto => f.write_str("auto"),
            SocketBuffers::Kernel => f.write_str("kernel"),
            SocketBuffers::Fixed(size) => write!(f, "{size}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_documented() {
        assert_eq!("auto".parse(), Ok(SocketBuffers::Auto));
        assert_eq!("Kernel".parse(), Ok(SocketBuffers::Kernel));
        assert_eq!("262144".parse(), Ok(SocketBuffers::Fixed(262_144)));
        assert_eq!("256K".parse(), Ok(SocketBuffers::Fixed(262_144)));
        assert_eq!("256kib".parse(), Ok(SocketBuffers::Fixed(262_144)));
        assert_eq!("1M".parse(), Ok(SocketBuffers::Fixed(1 << 20)));
        for bad in ["", "0", "100", "256Q", "-1", "1.5M", "2G", "99999999999999999999", "K"] {
            let err = bad.parse::<SocketBuffers>().unwrap_err();
            assert!(err.to_string().contains("expected auto, kernel"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for value in [SocketBuffers::Auto, SocketBuffers::Kernel, SocketBuffers::Fixed(65_536)] {
            assert_eq!(value.to_string().parse(), Ok(value));
        }
    }

    #[test]
    fn auto_fixes_only_peers_on_this_host() {
        let auto = SocketBuffers::Auto;
        for local in ["127.0.0.1", "127.3.4.5", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(auto.size_for(local.parse().unwrap()), Some(LOCAL_SIZE), "{local}");
        }
        for remote in ["10.0.0.7", "192.0.2.1", "2001:db8::1", "::ffff:10.0.0.7", "0.0.0.0"] {
            assert_eq!(auto.size_for(remote.parse().unwrap()), None, "{remote}");
        }
        assert_eq!(SocketBuffers::Kernel.size_for("127.0.0.1".parse().unwrap()), None);
        assert_eq!(
            SocketBuffers::Fixed(8192).size_for("10.0.0.7".parse().unwrap()),
            Some(8192)
        );
    }

    #[test]
    fn set_sizes_both_buffers() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set(SockRef::from(&socket), 64 * 1024).unwrap();
        let socket = SockRef::from(&socket);
        // Linux doubles the value for bookkeeping; other systems keep it.
        for got in [socket.recv_buffer_size().unwrap(), socket.send_buffer_size().unwrap()] {
            assert!(got == 64 * 1024 || got == 128 * 1024, "{got}");
        }
        assert_eq!(granted(socket).unwrap(), 64 * 1024);
    }
}
