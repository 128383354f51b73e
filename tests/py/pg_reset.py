"""Open a psycopg (libpq 18) session, then vanish with a TCP reset.

usage: pg_reset.py CONNINFO

Connects, prints the backend's PID, sets SO_LINGER 0 on the session's socket
and exits without closing anything: the kernel then aborts the connection
with a RST and no TLS close_notify or Terminate, as when a worker is killed
while the peer's data sits unread. An error goes to stderr with exit status 1.
"""

import os
import socket
import struct
import sys

import psycopg


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        conn = psycopg.connect(sys.argv[1], autocommit=True)
    except psycopg.Error as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(conn.info.backend_pid, flush=True)
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
