#!/usr/bin/env bash
# Peer benchmark: flowfabric against graphile-worker's current release (npm),
# the same number of no-op jobs on the same throwaway Postgres, in one run.
#   - graphile-worker in its default configuration and in its documented
#     high-throughput one ("batched": a local queue that fetches and locks
#     jobs in batches, and batched completion);
#   - flowfabric's engine queue path (claim batches 1 and 100) and the whole
#     worker pool running a no-op task with as many slots as graphile-worker's
#     concurrency, from a Rust guest (guests/noop: its input back, no host
#     call) and from a JavaScript one (graphile-worker
#     runs its tasks as JavaScript in Node: the row a JS user compares), each
#     with a fresh instance per execution (the default) and with instances
#     reused (a grant's reuse_instances);
#   - at each worker count given, on a fast throwaway server (fsync off) and
#     then on a durable one (fsync and synchronous_commit on, as production).
# Besides jobs/s, each pool and graphile row reports what a job cost the
# server: WAL bytes, transactions, statements (pg_stat_statements, loaded on
# both servers), rows written, server CPU; and the CPU of
# the system's own process (the worker pool's, or Node's), which with the
# server's is what a job costs this machine.
# Prints a table with ratios to graphile-worker default and batched; writes
# bench-results/peer.json.
#   scripts/bench-peer.sh [jobs] [workers, comma-separated]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-5000}
workers=${2:-4,16}
source scripts/prerequisites.sh
command -v npm >/dev/null || { echo "bench-peer: needs node and npm" >&2; exit 1; }
(cd benches/peer && npm ci --silent --no-audit --no-fund)
cargo build --quiet --release -p flowfabric
bin="${CARGO_TARGET_DIR:-target}/release/flowfabric"
(cd guests && cargo build --quiet --release --target wasm32-wasip2 -p noop)
guests="${CARGO_TARGET_DIR:-guests/target}/wasm32-wasip2/release"
scripts/build-guests.sh >/dev/null
js_guest=guests/target/polyglot/js.wasm
out=bench-results/peer
rm -rf "$out" && mkdir -p "$out"
psql=/usr/lib/postgresql/15/bin/psql

# One server setting: every system at every worker count, in one run.
measure() {
  local setting=$1 url dir
  # pg_stat_statements counts the statements each system sends a job.
  url=$(FLOWFABRIC_PG_DURABLE=$([ "$setting" = durable ] && echo 1 || echo 0) \
    FLOWFABRIC_PG_OPTIONS="-c shared_preload_libraries=pg_stat_statements" \
    scripts/throwaway-postgres.sh 2>"$out/pg-$setting.txt")
  dir=$(sed -n 's/^cluster dir: \([^ ]*\).*/\1/p' "$out/pg-$setting.txt")
  for w in ${workers//,/ }; do
    if [ "$setting" = fast ]; then
      "$bin" bench engine --database-url "$url" --executions "$jobs" --workers "$w" \
        --batch 1,100 --json-out "$out/engine-$setting-$w.json" >/dev/null
    fi
    "$bin" bench pool --database-url "$url" --guests "$guests" --executions "$jobs" \
      --slots "$w" --server-cost --json-out "$out/pool-$setting-$w.json" >/dev/null
    "$bin" bench pool --database-url "$url" --component "$js_guest" --executions "$jobs" \
      --slots "$w" --server-cost --json-out "$out/pool-js-$setting-$w.json" >/dev/null
    "$bin" bench pool --database-url "$url" --guests "$guests" --executions "$jobs" \
      --slots "$w" --server-cost --reuse-instances \
      --json-out "$out/pool-reused-$setting-$w.json" >/dev/null
    "$bin" bench pool --database-url "$url" --component "$js_guest" --executions "$jobs" \
      --slots "$w" --server-cost --reuse-instances \
      --json-out "$out/pool-js-reused-$setting-$w.json" >/dev/null
    for mode in default batched; do
      db="graphile_${mode}_$w"
      $psql -q "$url" -c "CREATE DATABASE $db"
      SERVER_COST=1 node benches/peer/graphile.mjs "${url%/postgres}/$db" "$jobs" "$w" "$mode" \
        > "$out/graphile-$mode-$setting-$w.json"
    done
  done
  scripts/throwaway-postgres.sh stop "$dir"
}
measure fast
measure durable

python3 - "$jobs" "$workers" "$out" <<'PY'
import json, sys, os
jobs, workers, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
load = lambda name: json.load(open(os.path.join(out, name)))
rows = []
print(f"\n{jobs} no-op jobs; jobs/s, ratios to graphile-worker default and batched, and what a job cost the server")
head = f"{'server':<8} {'w':>3} {'system':<36} {'jobs/s':>8} {'vs default':>10} {'vs batched':>10} {'WAL B':>7} {'xacts':>6} {'stmts':>6} {'rows':>6} {'CPU µs':>7} {'client µs':>9}"
print(head)
for setting in ["fast", "durable"]:
    for w in workers:
        batched = load(f"graphile-batched-{setting}-{w}.json")
        default = load(f"graphile-default-{setting}-{w}.json")
        entries = []
        for mode in ["default", "batched"]:
            g = load(f"graphile-{mode}-{setting}-{w}.json")
            entries.append((f"graphile-worker 0.18 {mode}", g["process_per_s"], g["server_cost"]))
        if setting == "fast":
            for r in load(f"engine-{setting}-{w}.json"):
                if r["path"] == "engine":
                    entries.append((f"flowfabric engine, claim batch {r['batch']}", r["process_per_s"], None))
        pool = load(f"pool-{setting}-{w}.json")[0]
        entries.append(("flowfabric pool, Rust guest (no-op)", pool["process_per_s"], pool["server_cost"]))
        pool = load(f"pool-js-{setting}-{w}.json")[0]
        entries.append(("flowfabric pool, JS guest (echo)", pool["process_per_s"], pool["server_cost"]))
        pool = load(f"pool-reused-{setting}-{w}.json")[0]
        entries.append(("  the same, Rust, instances reused", pool["process_per_s"], pool["server_cost"]))
        pool = load(f"pool-js-reused-{setting}-{w}.json")[0]
        entries.append(("  the same, JS, instances reused", pool["process_per_s"], pool["server_cost"]))
        for name, per_s, cost in entries:
            ratio = per_s / batched["process_per_s"]
            vs_default = per_s / default["process_per_s"]
            c = cost or {}
            fmt = lambda k, f: (f.format(c[k]) if c.get(k) is not None else "-")
            print(f"{setting:<8} {w:>3} {name:<36} {per_s:>8.0f} {vs_default:>10.2f} {ratio:>10.2f} "
                  f"{fmt('wal_bytes', '{:.0f}'):>7} {fmt('transactions', '{:.2f}'):>6} "
                  f"{fmt('statements', '{:.2f}'):>6} {fmt('rows_written', '{:.2f}'):>6} {fmt('server_cpu_us', '{:.0f}'):>7} "
                  f"{fmt('client_cpu_us', '{:.0f}'):>9}")
            rows.append({"server": setting, "workers": int(w), "system": name,
                         "per_s": per_s, "vs_graphile_default": vs_default,
                         "vs_graphile_batched": ratio, "server_cost": cost})
json.dump(rows, open("bench-results/peer.json", "w"), indent=2)
PY
