#!/usr/bin/env bash
# Where a job's write-ahead log goes: one `flowfabric bench pool` run on a
# throwaway Postgres (fsync off, every WAL segment kept), its WAL read back
# with pg_waldump, and the records written after the backlog's creation (the
# run itself, as `bench pool --server-cost` counts it) summed by relation and
# record type. Prints WAL bytes and records per execution, largest first.
#   scripts/wal-breakdown.sh [executions] [slots]
set -euo pipefail
cd "$(dirname "$0")/.."
executions=${1:-5000}
slots=${2:-4}
source scripts/prerequisites.sh
cargo build --quiet --release -p flowfabric
bin="${CARGO_TARGET_DIR:-target}/release/flowfabric"
(cd guests && cargo build --quiet --release --target wasm32-wasip2 -p noop)
guests="${CARGO_TARGET_DIR:-guests/target}/wasm32-wasip2/release"
pgbin=/usr/lib/postgresql/15/bin

work=$(mktemp -d)
url=$(FLOWFABRIC_PG_OPTIONS="-c wal_keep_size=4GB" scripts/throwaway-postgres.sh 2>"$work/pg.txt")
dir=$(sed -n 's/^cluster dir: \([^ ]*\).*/\1/p' "$work/pg.txt")
trap 'scripts/throwaway-postgres.sh stop "$dir" >/dev/null 2>&1; rm -rf "$work"' EXIT
lsn() { "$pgbin/psql" -qAt "$url" -c "SELECT pg_current_wal_lsn()"; }

start=$(lsn)
"$bin" bench pool --database-url "$url" --guests "$guests" --executions "$executions" \
  --slots "$slots" --keep-database 2>"$work/bench.txt" >/dev/null \
  || { cat "$work/bench.txt" >&2; exit 1; }
end=$(lsn)
kept=$(sed -n 's/^kept scratch database: //p' "$work/bench.txt")
db=$("$pgbin/psql" -qAt "$kept" -c "SELECT oid FROM pg_database WHERE datname = current_database()")
executions_file=$("$pgbin/psql" -qAt "$kept" -c "SELECT pg_relation_filenode('executions')")
"$pgbin/psql" -qAt -F ' ' "$kept" \
  -c "SELECT pg_relation_filenode(oid), relname FROM pg_class WHERE pg_relation_filenode(oid) <> 0" \
  > "$work/names.txt"
"$pgbin/pg_waldump" -p "$dir/data/pg_wal" -s "$start" -e "$end" > "$work/wal.txt" 2>/dev/null || true

# The run starts after the backlog's last insert into `executions`.
awk -v db="$db" -v ex="$executions_file" -v n="$executions" '
  FNR == NR { name[$1] = $2; next }
  { lines[FNR] = $0 }
  $0 ~ ("desc: INSERT.* rel 1663/" db "/" ex " ") { last = FNR }
  END {
    for (i = last + 1; i in lines; i++) {
      line = lines[i]
      split(line, f, "len \\(rec/tot\\): *[0-9]+/ *")
      bytes = f[2] + 0
      match(line, /^rmgr: [A-Za-z0-9]+/); rmgr = substr(line, 7, RLENGTH - 6)
      kind = line; sub(/.*desc: /, "", kind); sub(/[ ,].*/, "", kind)
      rel = "(none)"
      if (match(line, "rel 1663/" db "/[0-9]+")) {
        split(substr(line, RSTART, RLENGTH), fn, "/"); rel = (fn[3] in name) ? name[fn[3]] : fn[3]
      }
      by_rel[rel] += bytes; by_kind[rel, rmgr "/" kind] += bytes; total += bytes
    }
    for (k in by_kind) {
      split(k, part, SUBSEP)
      if (by_kind[k] / n >= 5) kinds[part[1]] = kinds[part[1]] sprintf(" %s %.0f,", part[2], by_kind[k] / n)
    }
    for (rl in by_rel) if (by_rel[rl] / n >= 1) {
      detail = kinds[rl]; sub(/,$/, "", detail)
      printf "%7.0f  %-32s%s\n", by_rel[rl] / n, rl, detail
    }
    printf "%7.0f  total\n", total / n
  }' "$work/names.txt" "$work/wal.txt" | sort -rn \
  | awk 'BEGIN { print "WAL bytes an execution of the run, by relation (and record type):" } { print }'
