#!/usr/bin/env bash
# Capture ClientHellos from real TLS clients on this machine into
# seeds/captured/*.bin, for the fuzz seeds (src/bin/seeds.rs reads them).
#
# A one-shot Python listener on 127.0.0.1 records the bytes a client sends
# until its hello is complete (answering `S` first when the client opens with
# PostgreSQL's SSLRequest), then closes; the client's failed handshake is
# expected. Clients: openssl s_client (TLS 1.3 and 1.2, with/without ALPN,
# no SNI), curl, Python's ssl module, and psql (libpq's SSLRequest
# negotiation) when installed. Loopback only; each capture is bounded by a
# 5-second timeout.
set -euo pipefail
cd "$(dirname "$0")"
out=seeds/captured
mkdir -p "$out"

listener() { # $1: output file; prints the port on stdout's first line
    python3 - "$1" <<'PY' &
import socket, struct, sys
out = sys.argv[1]
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(5)
c, _ = s.accept(); c.settimeout(5)
data = b""
def need(n):
    global data
    while len(data) < n:
        chunk = c.recv(65536)
        if not chunk: raise EOFError
        data += chunk
try:
    need(8)
    if data[:8] == bytes([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]):
        c.sendall(b"S"); data = b""; need(5)
    # Records until the handshake message is complete.
    hs = b""; at = 0
    while True:
        need(at + 5); n = struct.unpack(">H", data[at + 3:at + 5])[0]
        need(at + 5 + n); hs += data[at + 5:at + 5 + n]; at += 5 + n
        if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
            break
    data = data[:at]
except (EOFError, socket.timeout):
    pass
open(out, "wb").write(data)
c.close()
PY
}

capture() { # $1: name; rest: client command with PORT substituted
    local name=$1; shift
    local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
    listener "$out/$name.bin" >"$fifo" &
    local port; read -r port <"$fifo"; rm -f "$fifo"
    local cmd=("${@//PORT/$port}")
    timeout 5 "${cmd[@]}" </dev/null >/dev/null 2>&1 || true
    wait
    printf '%-28s %6d bytes\n' "$name" "$(stat -c %s "$out/$name.bin")"
}

capture openssl-tls13      openssl s_client -connect 127.0.0.1:PORT -servername db.example.com
capture openssl-tls13-alpn openssl s_client -connect 127.0.0.1:PORT -servername db.example.com -alpn postgresql
capture openssl-tls12      openssl s_client -connect 127.0.0.1:PORT -servername db.example.com -tls1_2
capture openssl-nosni      openssl s_client -connect 127.0.0.1:PORT -noservername
capture curl               curl -sk --max-time 3 --resolve db.example.com:PORT:127.0.0.1 https://db.example.com:PORT/
capture python-ssl         python3 -c 'import socket,ssl,sys; c=ssl.create_default_context(); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE; c.set_alpn_protocols(["h2","http/1.1"]); c.wrap_socket(socket.create_connection(("127.0.0.1",int(sys.argv[1]))),server_hostname="redis.example.com")' PORT
if [ -x /usr/lib/postgresql/15/bin/psql ]; then
    capture psql15-sslrequest /usr/lib/postgresql/15/bin/psql "host=db.example.com hostaddr=127.0.0.1 port=PORT sslmode=require user=app dbname=app connect_timeout=3"
fi
venv=${SNI_ROUTER_TEST_DEPS:-/opt/sni-router-test-deps}/venv/bin/python
if [ -x "$venv" ]; then
    capture libpq18-direct "$venv" -c 'import sys, psycopg; psycopg.connect(f"host=db.example.com hostaddr=127.0.0.1 port={sys.argv[1]} sslmode=require sslnegotiation=direct user=app dbname=app connect_timeout=3")' PORT
fi
