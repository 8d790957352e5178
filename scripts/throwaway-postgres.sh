#!/usr/bin/env bash
# Start a throwaway Postgres 15 cluster on a free loopback port and print its URL.
# It lives until `scripts/throwaway-postgres.sh stop DIR` (DIR is printed on stderr).
# fsync is off: this is for tests, benchmarks and demos, never for data you keep.
# With FLOWFABRIC_PG_DURABLE=1 it keeps Postgres's durable defaults (fsync,
# synchronous_commit, full_page_writes on), as production runs, for benchmarks.
# FLOWFABRIC_PG_OPTIONS adds server options (e.g. "-c shared_preload_libraries=pg_stat_statements").
set -euo pipefail
PGBIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = stop ]; then
  as_pg "$PGBIN/pg_ctl" -D "$2/data" -m immediate -w stop >/dev/null
  rm -rf "$2"
  exit 0
fi
dir=$(mktemp -d /tmp/flowfabric-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$dir/initdb.log"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
[ "${FLOWFABRIC_PG_DURABLE:-0}" = 1 ] && fast=""
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o \
  "-p $port -c listen_addresses=127.0.0.1 -k $dir $fast -c max_connections=400 ${FLOWFABRIC_PG_OPTIONS:-}" \
  start >/dev/null
echo "cluster dir: $dir (stop with: $0 stop $dir)" >&2
echo "postgres://postgres@127.0.0.1:$port/postgres"
