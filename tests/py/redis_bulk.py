"""Bulk redis-py work over mutual TLS: a pipeline, or many clients at once.

usage: redis_bulk.py --sni NAME --port PORT --cacert CA --cert CRT --key KEY
                     pipeline|concurrent COUNT

Connects to 127.0.0.1:PORT asking for NAME (SNI and the name checked against
the server certificate), like redis_cmd.py.

pipeline COUNT:   one connection, one pipeline of COUNT `INCR pipelined`;
                  prints the last INCR reply and then `GET pipelined`.
concurrent COUNT: COUNT threads, each with a connection of its own; each
                  PINGs, waits until all COUNT are connected (a barrier), then
                  `INCR concurrent`. While all are held open, one thread reads
                  `INFO clients`. Prints `GET concurrent` and the
                  connected_clients figure seen at the barrier.

An error goes to stderr as "<ErrorClass>: <message>" with exit status 1.
"""

import argparse
import socket
import sys
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def client(opts, single: bool = True) -> redis.Redis:
    return redis.Redis(
        host=opts.sni,
        port=opts.port,
        ssl=True,
        ssl_ca_certs=opts.cacert,
        ssl_certfile=opts.cert,
        ssl_keyfile=opts.key,
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        socket_timeout=20,
        socket_connect_timeout=10,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
        single_connection_client=single,
    )


def pipeline(opts) -> int:
    # From the pool: the pipeline and the GET after it share one connection.
    r = client(opts, single=False)
    try:
        pipe = r.pipeline(transaction=False)
        for _ in range(opts.count):
            pipe.incr("pipelined")
        replies = pipe.execute()
        if len(replies) != opts.count:
            print(f"{len(replies)} replies for {opts.count} commands", file=sys.stderr)
            return 1
        print(replies[-1])
        print(r.get("pipelined"))
    finally:
        r.close()
    return 0


def concurrent(opts) -> int:
    barrier = threading.Barrier(opts.count, timeout=20)
    errors = []
    seen = []

    def work(i: int) -> None:
        r = client(opts)
        try:
            if r.ping() is not True:
                raise RuntimeError("PING did not answer PONG")
            if barrier.wait() == 0:
                seen.append(r.info("clients")["connected_clients"])
            r.incr("concurrent")
            barrier.wait()
        except Exception as e:
            errors.append(f"client {i}: {type(e).__name__}: {e}")
            barrier.abort()
        finally:
            r.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(opts.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    r = client(opts)
    try:
        print(r.get("concurrent"))
    finally:
        r.close()
    print(seen[0])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="bulk redis-py over mTLS")
    parser.add_argument("--sni", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("mode", choices=["pipeline", "concurrent"])
    parser.add_argument("count", type=int)
    opts = parser.parse_args()

    # Resolve NAME to loopback so that SNI and hostname checks still use NAME.
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == opts.sni:
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        if opts.mode == "pipeline":
            return pipeline(opts)
        return concurrent(opts)
    except redis.RedisError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
