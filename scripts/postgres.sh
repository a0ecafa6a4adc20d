#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on 127.0.0.1 only, idempotently (no systemd
# here: initdb and pg_ctl from Debian's postgresql package, run as the postgres user).
#   scripts/postgres.sh [start]   make the cluster if missing, start it if stopped (~2 s first)
#   scripts/postgres.sh stop      stop it (its data stays)
#   scripts/postgres.sh destroy   stop it and remove everything, so the next start is fresh
# What the tests read (AUDITOR_PG_DIR, default /var/tmp/auditor-postgres):
#   dsn      postgresql://auditor@127.0.0.1:PORT/auditor  (no password in it)
#   pgpass   127.0.0.1:PORT:*:auditor:PASSWORD            (mode 0600: PGPASSFILE=...)
# Role auditor (password, CREATEDB) owns database auditor; a test makes a database of its own.
set -euo pipefail
DIR=${AUDITOR_PG_DIR:-/var/tmp/auditor-postgres}
DATA=$DIR/data
SOCK=$DIR/run
OWNER=postgres

say() { echo "postgres: $*"; }
die() { echo "postgres: $*" >&2; exit 2; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d && -x $d/initdb ]] || die "no PostgreSQL server binaries (apt-get install postgresql)"
  echo "$d"
}

as_owner() {  # run a command as the cluster's owner
  if [[ $(id -un) == "$OWNER" ]]; then "$@"; else runuser -u "$OWNER" -- "$@"; fi
}

free_port() {  # a TCP port nothing listens on at 127.0.0.1 now
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() { [[ -f $DATA/postmaster.pid ]] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

init() {
  say "creating a cluster in $DATA"
  install -d -m 0755 "$DIR"
  install -d -m 0700 -o "$OWNER" -g "$OWNER" "$DATA" "$SOCK" "$DIR/log"
  local pw
  pw=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  (umask 077; printf '%s\n' "$pw" >"$DIR/password")
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
  touch "$DIR/created"
}

configure() {  # the role and database, once, through the cluster's own socket
  [[ -f $DIR/configured ]] && return
  local pw
  pw=$(cat "$DIR/password")
  as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres \
    -v pw="$pw" <<'SQL' >/dev/null
CREATE ROLE auditor LOGIN CREATEDB PASSWORD :'pw';
CREATE DATABASE auditor OWNER auditor;
SQL
  touch "$DIR/configured"
}

start() {
  [[ -f $DIR/created && -f $DATA/PG_VERSION ]] || { rm -rf "$DIR"; init; }
  if running; then
    PORT=$(cat "$DIR/port")
  else
    PORT=$(free_port)
    say "starting on 127.0.0.1:$PORT"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/log/server.log" -w -t 60 start \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$SOCK -c max_connections=200 -c fsync=off" \
      >/dev/null 9>&- || { tail -n 20 "$DIR/log/server.log" >&2; die "the server did not start"; }
    echo "$PORT" >"$DIR/port"
  fi
  configure
  echo "postgresql://auditor@127.0.0.1:$PORT/auditor" >"$DIR/dsn.new" && mv "$DIR/dsn.new" "$DIR/dsn"
  (umask 077; printf '127.0.0.1:%s:*:auditor:%s\n' "$PORT" "$(cat "$DIR/password")" >"$DIR/pgpass")
  as_owner "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" || die "the server does not answer on 127.0.0.1:$PORT"
  say "running: $(cat "$DIR/dsn") (password in $DIR/pgpass)"
}

stop() {
  if [[ -d $DATA ]] && running; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    say "stopped"
  fi
}

BIN=$(bindir)
[[ $(id -u) == 0 || $(id -un) == "$OWNER" ]] || die "run as root (or $OWNER)"
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"  # one set-up at a time (several test runs may start together)
flock 9
case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  destroy) stop; rm -rf "$DIR"; say "removed $DIR" ;;
  *) die "usage: $0 [start|stop|destroy]" ;;
esac
