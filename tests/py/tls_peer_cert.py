"""Print the SHA-256 fingerprint of the leaf certificate a TLS server shows.

usage: tls_peer_cert.py --port PORT --sni NAME --cacert CA [--cert CRT --key KEY]
                        [--pg-gssenc-first] [--pg-sslrequest] [--alpn PROTO]...

Connects to 127.0.0.1:PORT. With --pg-sslrequest it first speaks PostgreSQL's
classic negotiation by hand: sends the SSLRequest (00 00 00 08 04 d2 16 2f)
and requires exactly the byte 'S' back; --pg-gssenc-first sends a
GSSENCRequest (... 16 30) before that and requires 'N' (what libpq does when
it holds Kerberos credentials). Then it completes a TLS handshake
with SNI NAME (and the ALPN protocols given), verifying the chain against CA
and NAME against the certificate, presenting CRT/KEY when given, and finally
half-closes and waits for the server to close.

Prints two lines: the hex SHA-256 of the peer's DER leaf certificate, and the
ALPN protocol the server selected ("-" for none). An error goes to stderr
with exit status 1.
"""

import argparse
import hashlib
import socket
import ssl
import sys

SSL_REQUEST = bytes([0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F])
GSSENC_REQUEST = bytes([0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x30])


def ask(sock: socket.socket, request: bytes, expected: bytes) -> bool:
    """Send one negotiation request; True if the one-byte answer is `expected`."""
    sock.sendall(request)
    answer = sock.recv(1)
    if answer != expected:
        print(f"{request.hex()} answered {answer!r}, not {expected!r}", file=sys.stderr)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description="fingerprint of a TLS peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--pg-gssenc-first", action="store_true")
    parser.add_argument("--pg-sslrequest", action="store_true")
    parser.add_argument("--alpn", action="append", default=[])
    opts = parser.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=opts.cacert)
    if opts.cert:
        ctx.load_cert_chain(opts.cert, opts.key)
    if opts.alpn:
        ctx.set_alpn_protocols(opts.alpn)

    try:
        with socket.create_connection(("127.0.0.1", opts.port), timeout=10) as sock:
            if opts.pg_gssenc_first and not ask(sock, GSSENC_REQUEST, b"N"):
                return 1
            if opts.pg_sslrequest and not ask(sock, SSL_REQUEST, b"S"):
                return 1
            with ctx.wrap_socket(sock, server_hostname=opts.sni) as tls:
                der = tls.getpeercert(binary_form=True)
                alpn = tls.selected_alpn_protocol() or "-"
                # Close gracefully: FIN, then read (raw) until the server
                # closes, so that unread bytes such as TLS 1.3 session tickets
                # do not turn our close into a RST.
                tls.shutdown(socket.SHUT_WR)
                while tls.recv(4096):
                    pass
    except (OSError, ssl.SSLError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(hashlib.sha256(der).hexdigest())
    print(alpn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
