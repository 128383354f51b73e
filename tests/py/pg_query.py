"""Run one SQL statement through psycopg (libpq 18) and print its rows.

usage: pg_query.py CONNINFO SQL

Rows go to stdout, one a line, columns separated by '|' (as `psql -A -t`).
A connection or query error goes to stderr as "<ErrorClass>: <message>" and
the exit status is 1, so the Rust fixture can assert on both.
"""

import sys

import psycopg


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    conninfo, sql = sys.argv[1], sys.argv[2]
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            cur = conn.execute(sql)
            if cur.description is not None:
                for row in cur.fetchall():
                    print("|".join("" if v is None else str(v) for v in row))
    except psycopg.Error as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
