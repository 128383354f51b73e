"""Print the SHA-256 fingerprint of the leaf certificate a TLS server shows.

usage: tls_peer_cert.py --port PORT --sni NAME --cacert CA [--cert CRT --key KEY]
                        [--pg-sslrequest] [--alpn PROTO]...

Connects to 127.0.0.1:PORT. With --pg-sslrequest it first speaks PostgreSQL's
classic negotiation by hand: sends the SSLRequest (00 00 00 08 04 d2 16 2f)
and requires exactly the byte 'S' back. Then it completes a TLS handshake
with SNI NAME (and the ALPN protocols given), verifying the chain against CA
and NAME against the certificate, presenting CRT/KEY when given.

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


def main() -> int:
    parser = argparse.ArgumentParser(description="fingerprint of a TLS peer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
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
            if opts.pg_sslrequest:
                sock.sendall(SSL_REQUEST)
                answer = sock.recv(1)
                if answer != b"S":
                    print(f"SSLRequest answered {answer!r}, not b'S'", file=sys.stderr)
                    return 1
            with ctx.wrap_socket(sock, server_hostname=opts.sni) as tls:
                der = tls.getpeercert(binary_form=True)
                alpn = tls.selected_alpn_protocol() or "-"
    except (OSError, ssl.SSLError) as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(hashlib.sha256(der).hexdigest())
    print(alpn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
