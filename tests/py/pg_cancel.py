"""Run a long query through psycopg (libpq 18) and cancel it from another thread.

usage: pg_cancel.py CONNINFO safe|legacy

safe:   conn.cancel_safe(): libpq 17+ PQcancelCreate, a new connection that
        negotiates encryption like the session did (TLS, SNI, client cert).
legacy: conn.cancel(): PQgetCancel/PQcancel, a plaintext CancelRequest carrying
        the backend's PID and secret key, with no SNI.

Runs `select pg_sleep(20)` and cancels it one second in. Prints
"canceled <backend pid> <seconds>" and exits 0 when the server canceled the
query (QueryCanceled); otherwise prints why to stderr and exits 1.
"""

import sys
import threading
import time

import psycopg


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[2] not in ("safe", "legacy"):
        print(__doc__, file=sys.stderr)
        return 2
    conninfo, how = sys.argv[1], sys.argv[2]
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            pid = conn.info.backend_pid
            errors = []

            def cancel() -> None:
                time.sleep(1)
                try:
                    if how == "safe":
                        conn.cancel_safe(timeout=10)
                    else:
                        conn.cancel()
                except Exception as e:  # reported by the main thread
                    errors.append(e)

            canceller = threading.Thread(target=cancel)
            started = time.monotonic()
            canceller.start()
            try:
                conn.execute("select pg_sleep(20)")
            except psycopg.errors.QueryCanceled:
                canceller.join()
                print(f"canceled {pid} {time.monotonic() - started:.1f}")
                return 0
            finally:
                canceller.join()
            print(
                f"not canceled after {time.monotonic() - started:.1f}s; "
                f"cancel errors: {errors!r}",
                file=sys.stderr,
            )
            return 1
    except psycopg.Error as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
