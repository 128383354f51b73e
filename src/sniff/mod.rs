//! What the client speaks: the first bytes of a connection, read up to the
//! complete ClientHello.
//!
//! Sniffing answers PostgreSQL's negotiation requests itself (`S` to an
//! SSLRequest, `N` to a GSSENCRequest), because with classic negotiation the
//! SNI arrives only after the server has said yes. It keeps every byte of the
//! TLS stream it read, to be replayed to the backend as received. It knows
//! nothing of routes; timeouts are the caller's.

pub mod alert;
pub mod postgres;
pub mod tls;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use alert::Alert;
pub use postgres::PgMessage;
pub use tls::{ClientHello, HelloError, HelloReader};

/// Default bound on the ClientHello, record headers included.
pub const DEFAULT_MAX_HELLO: usize = 64 * 1024;
/// Sniff buffer to start with: a classic hello fits, a post-quantum one
/// (~1.8 KB) nearly does.
const INITIAL_BUFFER: usize = 2048;
/// GSSENCRequest then SSLRequest is libpq's longest negotiation.
const MAX_NEGOTIATION_ROUNDS: usize = 2;

/// How the TLS stream was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// The first byte was a TLS record (HTTPS, Redis, PostgreSQL `sslnegotiation=direct`).
    Direct,
    /// PostgreSQL's SSLRequest, answered `S` by the router.
    PgSslRequest,
}

/// A complete ClientHello and the bytes that carried it.
#[derive(Debug, Clone)]
pub struct Hello {
    /// What the hello says.
    pub hello: ClientHello,
    /// Every byte read after the negotiation, starting with the hello's first
    /// record; the backend gets exactly these.
    pub bytes: Vec<u8>,
    /// Direct TLS or PostgreSQL's SSLRequest.
    pub negotiation: Negotiation,
}

/// What the first bytes turned out to be.
#[derive(Debug, Clone)]
pub enum Sniffed {
    /// A TLS connection with its ClientHello.
    Tls(Hello),
    /// A plaintext PostgreSQL StartupMessage (read whole, so closing sends FIN, not RST).
    PgStartup {
        /// Protocol minor version (0 or 2).
        minor: u16,
    },
    /// A plaintext PostgreSQL CancelRequest, all of its bytes.
    PgCancel(Vec<u8>),
    /// A plaintext Redis (RESP) command.
    RespPlaintext,
    /// Anything else.
    NotTls,
}

/// Sniffing stopped before anything was recognised.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// The client closed before sending a complete message.
    #[error("client closed the connection before a complete ClientHello")]
    Closed,
    /// Reading from or writing to the client failed.
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The ClientHello is malformed or too large.
    #[error(transparent)]
    Hello(#[from] HelloError),
    /// Bytes arrived before the router answered a negotiation request
    /// (CVE-2021-23214: they would be taken as already encrypted).
    #[error("{0} bytes arrived before the reply to the client's {1} (CVE-2021-23214 injection pattern)")]
    Injection(usize, &'static str),
    /// Too many GSSENC/SSL requests in a row.
    #[error("more than {MAX_NEGOTIATION_ROUNDS} PostgreSQL negotiation requests")]
    TooManyRequests,
}

/// Read from `client` until its protocol is known and, for TLS, the whole
/// ClientHello is in. Writes only PostgreSQL negotiation answers.
pub async fn sniff<S>(client: &mut S, max_hello: usize) -> Result<Sniffed, SniffError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(INITIAL_BUFFER);
    let mut negotiation = Negotiation::Direct;
    let mut rounds = 0;
    loop {
        fill(client, &mut buf, 1, max_hello).await?;
        match buf[0] {
            tls::CONTENT_HANDSHAKE => return read_hello(client, buf, negotiation, max_hello).await,
            // After our `S` the client must start TLS.
            _ if negotiation == Negotiation::PgSslRequest => {
                return Err(HelloError::Malformed("the client did not start TLS after the SSLRequest").into())
            }
            0 => {
                fill(client, &mut buf, 8, max_hello).await?;
                let head: [u8; 8] = buf[..8].try_into().unwrap_or_default();
                let message = postgres::classify(&head);
                // Refuse a request past the bound before answering it: an `S`
                // followed by a close would tell the client TLS was accepted.
                if matches!(message, Some(PgMessage::SslRequest | PgMessage::GssEncRequest)) {
                    rounds += 1;
                    if rounds > MAX_NEGOTIATION_ROUNDS {
                        return Err(SniffError::TooManyRequests);
                    }
                }
                match message {
                    Some(PgMessage::SslRequest) => {
                        answer(client, &buf, postgres::ACCEPT_TLS, "SSLRequest").await?;
                        negotiation = Negotiation::PgSslRequest;
                    }
                    Some(PgMessage::GssEncRequest) => {
                        answer(client, &buf, postgres::DECLINE, "GSSENCRequest").await?;
                    }
                    Some(PgMessage::Startup { minor, len, .. }) => {
                        fill(client, &mut buf, len, max_hello).await?;
                        return Ok(Sniffed::PgStartup { minor });
                    }
                    Some(PgMessage::CancelRequest { len }) => {
                        fill(client, &mut buf, len, max_hello).await?;
                        buf.truncate(len);
                        return Ok(Sniffed::PgCancel(buf));
                    }
                    None => return Ok(Sniffed::NotTls),
                }
                buf.clear();
            }
            b'*' => return Ok(Sniffed::RespPlaintext),
            _ => return Ok(Sniffed::NotTls),
        }
    }
}

async fn read_hello<S>(
    client: &mut S,
    mut buf: Vec<u8>,
    negotiation: Negotiation,
    max_hello: usize,
) -> Result<Sniffed, SniffError>
where
    S: AsyncRead + Unpin,
{
    let mut reader = HelloReader::new(max_hello);
    loop {
        if let Some((hello, _)) = reader.advance(&buf)? {
            return Ok(Sniffed::Tls(Hello {
                hello,
                bytes: buf,
                negotiation,
            }));
        }
        let want = buf.len() + 1;
        fill(client, &mut buf, want, max_hello).await?;
    }
}

/// Answer a negotiation request with one byte, unless the client already sent more.
async fn answer<S>(client: &mut S, buf: &[u8], reply: u8, request: &'static str) -> Result<(), SniffError>
where
    S: AsyncWrite + Unpin,
{
    if buf.len() > 8 {
        return Err(SniffError::Injection(buf.len() - 8, request));
    }
    client.write_all(&[reply]).await?;
    client.flush().await?;
    Ok(())
}

/// Read until `buf` holds at least `want` bytes. Reads never ask for more
/// than `max` in total, so a client cannot make the buffer grow past the bound.
///
/// The buffer grows only when full (doubling, as `Vec` does), so a client
/// that has sent a few bytes, or none, holds the initial 2 KiB and not a
/// 16 KiB read buffer: 1024 pending hellos cost 2 MiB, not 16.
async fn fill<S>(client: &mut S, buf: &mut Vec<u8>, want: usize, max: usize) -> Result<(), SniffError>
where
    S: AsyncRead + Unpin,
{
    while buf.len() < want {
        let room = max.saturating_sub(buf.len()).max(want - buf.len());
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().clamp(INITIAL_BUFFER, 16 * 1024).min(room));
        }
        let spare = buf.capacity() - buf.len();
        let n = client.take(spare.min(room) as u64).read_buf(buf).await?;
        if n == 0 {
            return Err(SniffError::Closed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::tls::tests::hello;
    use super::*;

    async fn sniff_chunks(chunks: Vec<Vec<u8>>) -> (Result<Sniffed, SniffError>, Vec<u8>) {
        let (mut client, mut server) = duplex(1 << 20);
        let writer = tokio::spawn(async move {
            for c in chunks {
                client.write_all(&c).await.unwrap();
                tokio::task::yield_now().await;
            }
            let mut answers = Vec::new();
            client.shutdown().await.unwrap();
            client.read_to_end(&mut answers).await.unwrap();
            answers
        });
        let result = sniff(&mut server, DEFAULT_MAX_HELLO).await;
        drop(server);
        (result, writer.await.unwrap())
    }

    #[tokio::test]
    async fn direct_tls_in_odd_chunks_keeps_every_byte() {
        let bytes = hello(Some("db.example.com"), &["postgresql"], 1800);
        for size in [1, 2, 7, 100, 4096] {
            let chunks: Vec<Vec<u8>> = bytes.chunks(size).map(<[u8]>::to_vec).collect();
            let (result, answers) = sniff_chunks(chunks).await;
            let Ok(Sniffed::Tls(h)) = result else {
                panic!("{result:?}")
            };
            assert_eq!(h.hello.sni.as_deref(), Some("db.example.com"));
            assert_eq!(h.bytes, bytes);
            assert_eq!(h.negotiation, Negotiation::Direct);
            assert!(answers.is_empty());
        }
    }

    #[tokio::test]
    async fn ssl_request_is_answered_then_hello_read() {
        let bytes = hello(Some("db.example.com"), &[], 0);
        let gss = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        let (result, answers) = sniff_chunks(vec![gss, postgres::SSL_REQUEST.to_vec(), bytes.clone()]).await;
        let Ok(Sniffed::Tls(h)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(h.negotiation, Negotiation::PgSslRequest);
        assert_eq!(
            h.bytes, bytes,
            "the SSLRequest itself is not part of the replayed bytes"
        );
        assert_eq!(answers, b"NS");
    }

    #[tokio::test]
    async fn bytes_piggybacked_on_ssl_request_are_refused() {
        let mut sneaky = postgres::SSL_REQUEST.to_vec();
        sneaky.extend_from_slice(&hello(Some("db.example.com"), &[], 0));
        let (result, answers) = sniff_chunks(vec![sneaky]).await;
        assert!(
            matches!(result, Err(SniffError::Injection(_, "SSLRequest"))),
            "{result:?}"
        );
        assert!(answers.is_empty(), "no S was sent");
    }

    #[tokio::test]
    async fn plaintext_protocols_are_recognised() {
        let mut startup = vec![0, 0, 0, 23, 0, 3, 0, 0];
        startup.extend_from_slice(b"user\0app\0\0\0\0\0\0\0");
        let (result, _) = sniff_chunks(vec![startup]).await;
        assert!(matches!(result, Ok(Sniffed::PgStartup { minor: 0 })), "{result:?}");

        let cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 1, 2, 3, 4, 5, 6, 7, 8];
        let (result, _) = sniff_chunks(vec![cancel.clone()]).await;
        assert!(
            matches!(&result, Ok(Sniffed::PgCancel(b)) if *b == cancel),
            "{result:?}"
        );

        let (result, _) = sniff_chunks(vec![b"*1\r\n$4\r\nPING\r\n".to_vec()]).await;
        assert!(matches!(result, Ok(Sniffed::RespPlaintext)));
        let (result, _) = sniff_chunks(vec![b"GET / HTTP/1.1\r\n".to_vec()]).await;
        assert!(matches!(result, Ok(Sniffed::NotTls)));
    }

    #[tokio::test]
    async fn closed_early_and_not_tls_after_ssl_request() {
        let (result, _) = sniff_chunks(vec![]).await;
        assert!(matches!(result, Err(SniffError::Closed)));
        let partial = hello(Some("a.example.com"), &[], 0)[..30].to_vec();
        let (result, _) = sniff_chunks(vec![partial]).await;
        assert!(matches!(result, Err(SniffError::Closed)));
        let (result, _) = sniff_chunks(vec![postgres::SSL_REQUEST.to_vec(), b"hello".to_vec()]).await;
        assert!(
            matches!(result, Err(SniffError::Hello(HelloError::Malformed(_)))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_third_negotiation_request_is_refused_unanswered() {
        // Found by fuzzing (fuzz/seeds: GSSENC, GSSENC, SSLRequest): the third
        // request used to be answered `S` before the bound refused it.
        let gss = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
        let requests = vec![gss.to_vec(), gss.to_vec(), postgres::SSL_REQUEST.to_vec()];
        let (result, answers) = sniff_chunks(requests).await;
        assert!(matches!(result, Err(SniffError::TooManyRequests)), "{result:?}");
        assert_eq!(answers, b"NN", "the third request gets no answer");
        // GSSENC then SSLRequest, libpq's longest negotiation, still works.
        let hello = hello(Some("db.example.com"), &[], 0);
        let (result, answers) = sniff_chunks(vec![gss.to_vec(), postgres::SSL_REQUEST.to_vec(), hello]).await;
        assert!(matches!(result, Ok(Sniffed::Tls(_))), "{result:?}");
        assert_eq!(answers, b"NS");
    }

    #[tokio::test]
    async fn oversized_hello_is_refused_without_growing_past_the_bound() {
        let big = hello(Some("a.example.com"), &[], 60_000);
        let (mut client, mut server) = duplex(1 << 20);
        client.write_all(&big).await.unwrap();
        let result = sniff(&mut server, 4096).await;
        assert!(
            matches!(result, Err(SniffError::Hello(HelloError::TooLarge { limit: 4096 }))),
            "{result:?}"
        );
    }
}
