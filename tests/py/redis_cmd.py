"""Send one command through redis-py over mutual TLS and print the reply.

usage: redis_cmd.py --sni NAME --port PORT --cacert CA [--cert CRT --key KEY] WORD...

Connects to 127.0.0.1:PORT but asks for NAME: NAME is the TLS SNI and the name
checked against the server certificate, as a client that resolved NAME to the
gateway would. The reply is printed raw, as redis-cli does (PING -> PONG).
An error goes to stderr as "<ErrorClass>: <message>" with exit status 1.
"""

import argparse
import socket
import sys

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def main() -> int:
    parser = argparse.ArgumentParser(description="one redis command over mTLS")
    parser.add_argument("--sni", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    if not opts.command:
        parser.error("no command")

    # redis-py has no separate "connect here" address: resolve NAME to loopback
    # so that SNI and hostname verification still use NAME.
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == opts.sni:
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo

    client = redis.Redis(
        host=opts.sni,
        port=opts.port,
        ssl=True,
        ssl_ca_certs=opts.cacert,
        ssl_certfile=opts.cert,
        ssl_keyfile=opts.key,
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        socket_timeout=10,
        socket_connect_timeout=10,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        conn = client.connection_pool.get_connection()
        try:
            conn.send_command(*opts.command)
            reply = conn.read_response()
        finally:
            client.connection_pool.release(conn)
    except redis.RedisError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if isinstance(reply, list):
        for item in reply:
            print(item)
    elif reply is not None:
        print(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
