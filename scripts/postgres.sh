#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests of the shared job store, from Debian's packages.
#
#   bash scripts/postgres.sh start   # installs postgresql (as root, with apt) if needed, starts a
#                                    # server on 127.0.0.1 and prints its SQLAlchemy URL (last line)
#   bash scripts/postgres.sh stop    # stops it
#   bash scripts/postgres.sh url     # prints the URL
#
# The cluster lives in $AIRFLOW_NEO_PG_DIR (default /tmp/airflow-neo-pg), owned by the postgres
# user when run as root, and listens on 127.0.0.1:$AIRFLOW_NEO_PG_PORT (default 54329) only.
# Durability is off (fsync=off): it holds test data, nothing else.
set -euo pipefail
PGDIR="${AIRFLOW_NEO_PG_DIR:-/tmp/airflow-neo-pg}"
PORT="${AIRFLOW_NEO_PG_PORT:-54329}"
DB_USER="neo"
DB_PASSWORD="neo-test-password"
DB_NAME="neo_test"
URL="postgresql+psycopg2://${DB_USER}:${DB_PASSWORD}@127.0.0.1:${PORT}/${DB_NAME}"

log() { echo "postgres.sh: $*" >&2; }

pg_bin() {
  local dir
  if [ -n "${AIRFLOW_NEO_PG_BIN:-}" ]; then echo "$AIRFLOW_NEO_PG_BIN"; return; fi
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  dir="$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")"
  if [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  echo ""
}

as_owner() {
  # Run a PostgreSQL program as the cluster's owner: the postgres user when we are root.
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

install_postgres() {
  if [ -n "$(pg_bin)" ]; then return; fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    exit 3
  fi
  log "installing postgresql (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # The Debian package starts (and may keep starting) its own cluster on port 5432: stop it, we use our own.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _rest; do
      pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
    done
  fi
}

start() {
  install_postgres
  local bin
  bin="$(pg_bin)"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  mkdir -p "$PGDIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR"
  chmod 700 "$PGDIR"
  if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
    log "initdb $PGDIR/data"
    local pwfile="$PGDIR/superuser-password"
    echo "postgres-test-password" >"$pwfile"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pwfile"
    as_owner "$bin/initdb" -D "$PGDIR/data" -U postgres --pwfile="$pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  mkdir -p "$PGDIR/run"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR/run"
  if ! as_owner "$bin/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$PORT"
    as_owner "$bin/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR/run -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
      start >/dev/null
  fi
  local psql=("$bin/psql" -h "$PGDIR/run" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
  if [ "$(as_owner "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='$DB_USER'")" != 1 ]; then
    as_owner "${psql[@]}" -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'"
  fi
  if [ "$(as_owner "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'")" != 1 ]; then
    # An ICU en-US default collation (as on most servers, unlike C) so the tests show that the
    # store's ordering does not depend on the database's collation; plain UTF-8 where ICU is missing.
    as_owner "${psql[@]}" -c "CREATE DATABASE $DB_NAME OWNER $DB_USER TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'" 2>/dev/null \
      || as_owner "${psql[@]}" -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
  fi
  echo "$URL"
}

stop() {
  local bin
  bin="$(pg_bin)"
  if [ -n "$bin" ] && [ -f "$PGDIR/data/PG_VERSION" ]; then
    as_owner "$bin/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
