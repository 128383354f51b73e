//! `floor`: the least a TLS-passthrough proxy does per connection, as a
//! yardstick for how much of every proxy's cost is the kernel's.
//!
//! One thread on one epoll (mio, edge-triggered), run as a child process of
//! the bench (`e2e --floor-proxy LISTEN BACKEND`) and pinned like the other
//! targets. Per connection it accepts, reads the first TLS record whole,
//! connects to its one backend and writes the record right after
//! `connect`, then copies bytes both ways through one 64 KiB buffer, passes
//! a half-close on, and closes both sockets once both directions have
//! ended (closing also takes them off the epoll: no `EPOLL_CTL_DEL`). No
//! SNI parsing, routing, timeouts, limits, logging or metrics: the system
//! calls a proxy cannot avoid, and not a proxy anyone should run.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

const LISTENER: Token = Token(usize::MAX);
/// TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;

/// Serve until killed; an error only when the listener cannot be set up.
pub fn serve(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = listener(listen)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    let (mut client, _) = match listener.accept() {
                        Ok(accepted) => accepted,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of descriptors and the like: drop this one, keep serving.
                        Err(_) => break,
                    };
                    let slot = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    if poll
                        .registry()
                        .register(&mut client, Token(slot * 2), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        free.push(slot);
                        continue;
                    }
                    conns[slot] = Some(Conn::new(client));
                    // The hello is usually there already: no need to wait for its event.
                    let ready = Ready {
                        backend: false,
                        readable: true,
                        writable: false,
                        closed: false,
                    };
                    drive(&poll, &mut conns, &mut free, slot, ready, backend, &mut scratch);
                }
                continue;
            }
            let slot = event.token().0 / 2;
            let ready = Ready {
                backend: event.token().0 % 2 == 1,
                readable: event.is_readable(),
                writable: event.is_writable(),
                closed: event.is_read_closed() || event.is_error(),
            };
            if conns.get(slot).is_some_and(Option::is_some) {
                drive(&poll, &mut conns, &mut free, slot, ready, backend, &mut scratch);
            }
        }
    }
}

/// What an event said about one of a connection's two sockets.
#[derive(Clone, Copy)]
struct Ready {
    /// The backend socket (else the client's).
    backend: bool,
    readable: bool,
    writable: bool,
    /// The peer has closed (or the socket failed): read on to the end.
    closed: bool,
}

/// A listener whose accepted sockets inherit `TCP_NODELAY` (Linux does).
fn listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// One proxied connection.
struct Conn {
    client: TcpStream,
    backend: Option<TcpStream>,
    /// The first record, until it has been handed to the backend.
    hello: Vec<u8>,
    /// Client to backend, backend to client.
    up: Flow,
    down: Flow,
}

/// One direction's state.
#[derive(Default)]
struct Flow {
    /// Bytes read but not yet written (only after a short write).
    pending: Vec<u8>,
    /// The source reported its peer closed: read on to the EOF, also when
    /// that has to wait for a full destination (the edge will not repeat).
    closing: bool,
    /// EOF read and passed on.
    done: bool,
}

impl Conn {
    fn new(client: TcpStream) -> Self {
        Self {
            client,
            backend: None,
            hello: Vec::with_capacity(512),
            up: Flow::default(),
            down: Flow::default(),
        }
    }
}

/// Move everything that can move; close the connection when it has ended
/// (or failed).
fn drive(
    poll: &Poll,
    conns: &mut [Option<Conn>],
    free: &mut Vec<usize>,
    slot: usize,
    ready: Ready,
    backend: SocketAddr,
    scratch: &mut [u8],
) {
    let Some(conn) = conns[slot].as_mut() else { return };
    // A failed socket ends the connection, as a reset would.
    let finished = step(poll, conn, slot, ready, backend, scratch).unwrap_or(true);
    if finished {
        // Dropping closes both sockets, which also removes them from the epoll.
        conns[slot] = None;
        free.push(slot);
    }
}

/// `Ok(true)` once both directions have ended. Only the socket the event
/// was about is read (a read that comes back short has drained it: the
/// next byte brings a new edge), and a socket's writability matters only
/// when bytes wait for it, so few calls come back empty-handed.
fn step(
    poll: &Poll,
    conn: &mut Conn,
    slot: usize,
    ready: Ready,
    backend: SocketAddr,
    scratch: &mut [u8],
) -> io::Result<bool> {
    if conn.backend.is_none() {
        let Some(drained) = read_record(&mut conn.client, &mut conn.hello)? else {
            return Ok(false);
        };
        let mut stream = TcpStream::connect(backend)?;
        stream.set_nodelay(true)?;
        poll.registry().register(
            &mut stream,
            Token(slot * 2 + 1),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // On loopback the handshake has ended inside connect(2): write now.
        conn.up.pending = std::mem::take(&mut conn.hello);
        write_some(&mut stream, &mut conn.up.pending)?;
        conn.backend = Some(stream);
        // The client's EOF came with its hello: that edge will not come again.
        conn.up.closing |= ready.closed;
        if drained && !conn.up.closing {
            return Ok(false);
        }
        // Bytes behind the hello (or its EOF) are waiting: read on now.
        if let Some(backend) = conn.backend.as_mut() {
            let last = conn.down.done;
            pump(&mut conn.client, backend, &mut conn.up, scratch, last)?;
        }
        return Ok(conn.up.done && conn.down.done);
    }
    let Some(backend) = conn.backend.as_mut() else {
        return Ok(false);
    };
    let (client, up, down) = (&mut conn.client, &mut conn.up, &mut conn.down);
    // Writable: what waited for this socket goes first, then its source is
    // read on. Nothing waiting: its source was read until it ran dry.
    if ready.writable {
        if ready.backend && !up.pending.is_empty() {
            let last = down.done;
            pump(client, backend, up, scratch, last)?;
        } else if !ready.backend && !down.pending.is_empty() {
            let last = up.done;
            pump(backend, client, down, scratch, last)?;
        }
    }
    if ready.readable || ready.closed {
        if ready.backend {
            down.closing |= ready.closed;
            let last = up.done;
            pump(backend, client, down, scratch, last)?;
        } else {
            up.closing |= ready.closed;
            let last = down.done;
            pump(client, backend, up, scratch, last)?;
        }
    }
    Ok(conn.up.done && conn.down.done)
}

/// Read until the first TLS record is complete: `Some(drained)` once it is,
/// `drained` saying whether the last read emptied the socket (else bytes
/// behind the record still wait, and their edge has been taken).
fn read_record(client: &mut TcpStream, into: &mut Vec<u8>) -> io::Result<Option<bool>> {
    let mut drained = false;
    loop {
        let want = if into.len() < RECORD_HEADER {
            RECORD_HEADER
        } else {
            RECORD_HEADER + u16::from_be_bytes([into[3], into[4]]) as usize
        };
        if into.len() >= want && into.len() >= RECORD_HEADER {
            return Ok(Some(drained));
        }
        let mut chunk = [0u8; 2048];
        match client.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                into.extend_from_slice(&chunk[..n]);
                drained = n < chunk.len();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copy `from` → `to` until a read comes back short (or, once the flow is
/// `closing`, until `from` would block), `to` is full, or EOF. At EOF the
/// half-close is passed on, unless this is the last direction to end
/// (`last`): then both sockets are about to close anyway.
fn pump(from: &mut TcpStream, to: &mut TcpStream, flow: &mut Flow, scratch: &mut [u8], last: bool) -> io::Result<()> {
    if flow.done {
        return Ok(());
    }
    if !flow.pending.is_empty() && !write_some(to, &mut flow.pending)? {
        return Ok(());
    }
    loop {
        match from.read(scratch) {
            Ok(0) => {
                flow.done = true;
                if !last {
                    to.shutdown(Shutdown::Write)?;
                }
                return Ok(());
            }
            Ok(n) => {
                let written = write_all_or_some(to, &scratch[..n])?;
                if written < n {
                    // Only a full socket buffer keeps bytes here; its WRITABLE event resumes.
                    flow.pending = scratch[written..n].to_vec();
                    return Ok(());
                }
                if n < scratch.len() && !flow.closing {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Write what is pending: `Ok(true)` when all of it went.
fn write_some(to: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    let written = write_all_or_some(to, pending)?;
    pending.drain(..written);
    Ok(pending.is_empty())
}

/// Write until done or the socket is full (or still connecting): how much went.
fn write_all_or_some(to: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match to.write(&bytes[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::NotConnected => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
