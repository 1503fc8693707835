#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests, from Debian's packages.
#
#   TOLLGATE_TEST_POSTGRES_URL="$(bash scripts/postgres.sh)" cargo test --test store
#   bash scripts/postgres.sh stop
#
# Installs PostgreSQL if it is missing, creates a cluster under
# $TOLLGATE_CACHE/pg-run/ (default ~/.cache/tollgate), starts it on 127.0.0.1
# on a free port and prints a postgres:// URL on stdout; everything else goes
# to stderr. A second call reuses the running server. The cluster holds
# nothing worth keeping: when it cannot be reused (another major version,
# a broken data directory) it is made anew.
set -euo pipefail

cache_root="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
run_dir="$cache_root/pg-run"
data="$run_dir/data"
sock="$run_dir/sock"
logfile="$run_dir/postgres.log"
port_file="$run_dir/port"
password_file="$run_dir/password"
role="tollgate"
database="tollgate_test"

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [[ "$(id -u)" == 0 ]]; }

# The server refuses to run as root, so as root every server-side command runs
# as the `postgres` system user the Debian package creates.
as_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

find_bindir() {
    local dir best=""
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] || continue
        if [[ -z "$best" ]] || [[ "$(basename "$(dirname "$dir")")" -gt "$(basename "$(dirname "$best")")" ]]; then
            best="$dir"
        fi
    done
    echo "$best"
}

install_postgres() {
    say "installing PostgreSQL from Debian packages"
    local sudo=()
    is_root || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
}

# Grants the postgres user search (x, not read) permission on every ancestor
# of $run_dir it cannot pass, e.g. /root, which is 0700. Top down, so only the
# directories that really block get changed.
make_reachable() {
    is_root || return 0
    local dir="$run_dir"
    local ancestors=()
    while [[ "$dir" != "/" ]]; do
        dir="$(dirname "$dir")"
        ancestors=("$dir" "${ancestors[@]}")
    done
    for dir in "${ancestors[@]}"; do
        if ! runuser -u postgres -- test -x "$dir"; then
            say "letting the postgres user traverse $dir (chmod o+x)"
            chmod o+x "$dir"
        fi
    done
}

free_port() {
    # A port nothing answers on; the server start below fails cleanly if
    # another process takes it first, and the caller then tries the next one.
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found on 127.0.0.1"
}

running() {
    [[ -f "$data/PG_VERSION" ]] && as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

psql_admin() {
    as_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$(cat "$port_file")" -U postgres -d postgres "$@"
}

stop() {
    if [[ -n "$bindir" ]] && running; then
        say "stopping the server in $data"
        as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2
    else
        say "no server running in $data"
    fi
}

init_cluster() {
    local version
    version="$(basename "$(dirname "$bindir")")"
    if [[ -f "$data/PG_VERSION" && "$(cat "$data/PG_VERSION")" != "$version" ]]; then
        say "discarding a cluster of PostgreSQL $(cat "$data/PG_VERSION"); this is $version"
        rm -rf "$data"
    fi
    if [[ ! -f "$data/PG_VERSION" ]]; then
        rm -rf "$data"
        mkdir -p "$data" "$sock"
        is_root && chown postgres: "$data" "$sock"
        chmod 700 "$data" "$sock"
        say "initdb $data (PostgreSQL $version)"
        # C locale: the same collation on every machine, and no locale to install.
        # Local socket connections (only the owner can reach $sock) are trusted;
        # TCP needs the password.
        as_owner "$bindir/initdb" -D "$data" -U postgres -E UTF8 --no-locale \
            --auth-local=trust --auth-host=scram-sha-256 >"$run_dir/initdb.log" 2>&1 ||
            { cat "$run_dir/initdb.log" >&2; die "initdb failed"; }
    fi
}

start_server() {
    local port attempt
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        say "starting PostgreSQL on 127.0.0.1:$port (attempt $attempt, log $logfile)"
        if as_owner "$bindir/pg_ctl" -D "$data" -l "$logfile" -w -t 60 \
            -o "-p $port -k $sock -c listen_addresses=127.0.0.1" start >&2; then
            echo "$port" >"$port_file"
            return 0
        fi
        tail -n 20 "$logfile" >&2 || true
    done
    die "the server did not start; see $logfile"
}

ensure_role_and_database() {
    if [[ ! -s "$password_file" ]]; then
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$password_file")
    fi
    local password
    password="$(cat "$password_file")"
    psql_admin -v role="$role" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
SQL
    psql_admin -v role="$role" -v database="$database" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'database') \gexec
SQL
}

bindir="$(find_bindir)"

case "${1:-start}" in
stop)
    stop
    exit 0
    ;;
start) ;;
*) die "usage: $0 [start|stop]" ;;
esac

if [[ -z "$bindir" ]]; then
    install_postgres
    bindir="$(find_bindir)"
    [[ -n "$bindir" ]] || die "PostgreSQL installed, but no server binaries under /usr/lib/postgresql/*/bin"
fi

mkdir -p "$run_dir"
is_root && chown postgres: "$run_dir"
make_reachable

if running && [[ -s "$port_file" ]]; then
    say "reusing the server in $data on port $(cat "$port_file")"
else
    if [[ -f "$data/PG_VERSION" ]] && as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        # Running, but we lost track of its port: restart it on a known one.
        as_owner "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2
    fi
    init_cluster
    start_server
fi

ensure_role_and_database
echo "postgres://$role:$(cat "$password_file")@127.0.0.1:$(cat "$port_file")/$database"
