//! Raw TCP echo backends, and the client side of a conversation with them
//! through the router: a synthetic ClientHello for the SNI, the backend's tag
//! and the echoed hello, then messages echoed back; and the check that a
//! listener has stopped accepting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{serve_each, synthetic_hello};

/// A raw TCP backend that echoes every byte (the replayed hello first) and
/// closes its side after the client's EOF.
pub async fn echo_backend() -> SocketAddr {
    serve_each(|stream| async move {
        let (mut r, mut w) = stream.into_split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// A raw TCP backend that sends `tag\n` on accept, then echoes every byte
/// (the replayed ClientHello first) and closes its side after the client's EOF.
pub async fn tagged_echo(tag: &'static str) -> SocketAddr {
    serve_each(move |stream| async move {
        let (mut r, mut w) = stream.into_split();
        if w.write_all(format!("{tag}\n").as_bytes()).await.is_err() {
            return;
        }
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Connect through the router to a [`tagged_echo`] with a ClientHello for
/// `sni`; return the connection (past the tag and the echoed hello) and the
/// backend's tag.
pub async fn open(addr: SocketAddr, sni: &str) -> (TcpStream, String) {
    let attempt = async {
        let hello = synthetic_hello(sni, 0);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(&hello).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut tag = String::new();
        reader.read_line(&mut tag).await.unwrap();
        assert!(
            tag.ends_with('\n'),
            "no tag line from a backend for {sni} via {addr}: {tag:?}"
        );
        let mut echo = vec![0u8; hello.len()];
        reader.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, hello, "the backend got the hello byte for byte");
        assert!(reader.buffer().is_empty());
        (reader.into_inner(), tag.trim_end().to_string())
    };
    timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| panic!("connection to {sni} via {addr} timed out"))
}

/// Send `msg` and read the echo (written and read at once, so large messages
/// cannot deadlock on full socket buffers).
pub async fn ping(stream: &mut TcpStream, msg: &[u8]) {
    let (mut r, mut w) = stream.split();
    let exchange = async {
        let mut echo = vec![0u8; msg.len()];
        let (written, read) = tokio::join!(w.write_all(msg), r.read_exact(&mut echo));
        written.unwrap();
        read.unwrap();
        assert_eq!(echo, msg);
    };
    timeout(Duration::from_secs(10), exchange)
        .await
        .expect("echo timed out");
}

/// Half-close `stream` and read until the other side closes too (within
/// 5 s); what arrived before its EOF.
pub async fn hang_up(mut stream: TcpStream) -> Vec<u8> {
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("no EOF after the half-close")
        .unwrap();
    rest
}

/// Wait until connecting to `addr` is refused (a listener being stopped may
/// still take or reset one more connection; an accepted one is closed at once).
pub async fn refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            // A SYN that races the listener's close is reset; try again.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connect to {addr}: expected refused, got {e}"),
            Ok(stream) => drop(stream),
        }
        assert!(Instant::now() < deadline, "{addr} still accepts connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
