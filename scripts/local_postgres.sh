#!/usr/bin/env bash
# A local, throw-away PostgreSQL for shared Optuna studies (`hydra.sweeper.storage=postgresql://...`).
#
#   scripts/local_postgres.sh up       # create the cluster if needed, start it, create database `optuna`, print the URL
#   scripts/local_postgres.sh down     # stop it (the data stays; delete the folder to wipe it)
#   scripts/local_postgres.sh url      # print the storage URL only
#   scripts/local_postgres.sh status   # running or not (exit status 0 / 3, as pg_ctl status)
#
# Settings (environment):
#   LIT_TF_PG_DIR   folder of the cluster (default: .cache/postgres under the repository root)
#   LIT_TF_PG_PORT  TCP port (default 5433, beside a system server on 5432)
#
# The server listens on 127.0.0.1 only, with trust authentication for the superuser `postgres`:
# anyone logged in on this machine can use it, nobody else can reach it. Every command is
# idempotent. PostgreSQL refuses to run as root: run as root, the server runs as the system user
# `postgres` (the folder is handed to it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LIT_TF_PG_DIR:-$ROOT/.cache/postgres}"
PORT="${LIT_TF_PG_PORT:-5433}"
DB=optuna
SUPERUSER=postgres
DATA="$DIR/data"
LOG="$DIR/server.log"
export PGCONNECT_TIMEOUT=5

die() { echo "error: $*" >&2; exit 1; }

usage() { sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# initdb/pg_ctl/psql of one installation: from PATH, else Debian's /usr/lib/postgresql/<version>/bin.
find_bindir() {
    local initdb
    if initdb="$(command -v initdb 2>/dev/null)"; then
        dirname "$(readlink -f "$initdb")"
        return 0
    fi
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
        if [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
    done
    return 1
}

BINDIR="$(find_bindir)" || BINDIR=""

need_server() {
    [ -n "$BINDIR" ] || die "PostgreSQL server programs (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin.
hint: install them: sudo apt-get install postgresql   (Debian/Ubuntu; other systems: the PostgreSQL server package)"
    for p in initdb pg_ctl psql; do
        [ -x "$BINDIR/$p" ] || die "$BINDIR/$p is missing (a partial PostgreSQL installation?)"
    done
}

# As root, run the server programs as the system user `postgres`.
AS=()
if [ "$(id -u)" = 0 ]; then
    id -u "$SUPERUSER" >/dev/null 2>&1 || die "running as root, but PostgreSQL refuses to run as root and there is no '$SUPERUSER' user to run it as.
hint: run this as a normal user, or create the user (useradd --system $SUPERUSER); installing the Debian package postgresql creates it"
    if command -v runuser >/dev/null 2>&1; then
        AS=(runuser -u "$SUPERUSER" --)
    else
        AS=(su "$SUPERUSER" -s /bin/sh -c '"$0" "$@"')
    fi
fi

# The port of the running server (postmaster.pid, line 4), else the configured one.
current_port() {
    if [ -r "$DATA/postmaster.pid" ]; then
        sed -n 4p "$DATA/postmaster.pid"
    else
        echo "$PORT"
    fi
}

url() { echo "postgresql://$SUPERUSER@127.0.0.1:$(current_port)/$DB"; }

running() {
    [ -n "$BINDIR" ] && [ -f "$DATA/PG_VERSION" ] && "${AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_up() {
    need_server
    mkdir -p "$DIR"
    if [ "${#AS[@]}" -gt 0 ]; then
        chown "$SUPERUSER" "$DIR"
        chmod 700 "$DIR"
        "${AS[@]}" test -w "$DIR" || die "user $SUPERUSER cannot write to $DIR (a folder above it is private to root).
hint: put the cluster where it can: LIT_TF_PG_DIR=/var/tmp/lit_tf_postgres $0 up"
    fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        [ -e "$DATA" ] && [ -n "$(ls -A "$DATA" 2>/dev/null)" ] && die "$DATA exists but is not a PostgreSQL cluster; move it away or set LIT_TF_PG_DIR"
        echo "creating a PostgreSQL cluster in $DATA"
        "${AS[@]}" "$BINDIR/initdb" -D "$DATA" -U "$SUPERUSER" --auth=trust --encoding=UTF8 --no-locale \
            >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed (log above, also in $DIR/initdb.log)"; }
        # local only: TCP on 127.0.0.1, no Unix socket (its default folder may not exist or be writable)
        printf "\n# scripts/local_postgres.sh\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" \
            | "${AS[@]}" tee -a "$DATA/postgresql.conf" >/dev/null
    fi
    if running; then
        echo "PostgreSQL already running on 127.0.0.1:$(current_port) (data: $DATA)"
    else
        port_in_use "$PORT" && die "port $PORT on 127.0.0.1 is taken by another program.
hint: choose another port: LIT_TF_PG_PORT=5434 $0 up   (or: make postgres LIT_TF_PG_PORT=5434)"
        "${AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "-p $PORT" start >/dev/null \
            || { tail -n 20 "$LOG" >&2 2>/dev/null || true; die "the server did not start (log: $LOG)"; }
        echo "PostgreSQL started on 127.0.0.1:$PORT (data: $DATA, log: $LOG)"
    fi
    local port psql
    port="$(current_port)"
    psql=("$BINDIR/psql" -X -q -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -v ON_ERROR_STOP=1)
    if [ "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
        # two `up` at once: the loser's CREATE fails on the unique name, and the database exists
        "${psql[@]}" -d postgres -c "CREATE DATABASE $DB" 2>/dev/null \
            || [ "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" = 1 ] \
            || die "could not create database $DB (log: $LOG)"
    fi
    echo "storage URL: $(url)"
    echo "  python train.py -m sweep=<name> hydra.sweeper.storage=$(url)"
    echo "stop it with: make postgres-stop   (or: $0 down)"
}

cmd_down() {
    if running; then
        "${AS[@]}" "$BINDIR/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
        echo "PostgreSQL stopped (data kept in $DATA; delete $DIR to wipe it)"
    else
        echo "PostgreSQL is not running (data: $DATA)"
    fi
}

cmd_status() {
    if running; then
        echo "running on 127.0.0.1:$(current_port) (data: $DATA, pid $(sed -n 1p "$DATA/postmaster.pid")); storage URL: $(url)"
    else
        echo "not running (data: $DATA)"
        exit 3
    fi
}

case "${1:-}" in
    up) cmd_up ;;
    down | stop) cmd_down ;;
    url) url ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
