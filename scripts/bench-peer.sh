#!/usr/bin/env bash
# Peer benchmark: flowfabric against graphile-worker (npm), the same number of
# no-op jobs on the same throwaway Postgres, in one run: the engine's queue path
# (claim batches 1 and 100), and the whole worker pool running a wasm echo with
# as many slots as graphile-worker's concurrency. Prints each and its ratio to
# graphile-worker; writes bench-results/peer.json.
#   scripts/bench-peer.sh [jobs] [workers]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-5000}
workers=${2:-4}
source scripts/prerequisites.sh
command -v npm >/dev/null || { echo "bench-peer: needs node and npm" >&2; exit 1; }
(cd benches/peer && npm ci --silent --no-audit --no-fund)
cargo build --quiet --release -p flowfabric
bin="${CARGO_TARGET_DIR:-target}/release/flowfabric"
(cd guests && cargo build --quiet --release --target wasm32-wasip2 -p testkit)
guests="${CARGO_TARGET_DIR:-guests/target}/wasm32-wasip2/release"
url=$(scripts/throwaway-postgres.sh 2>/tmp/flowfabric-peer-pg.txt)
dir=$(sed -n 's/^cluster dir: \([^ ]*\).*/\1/p' /tmp/flowfabric-peer-pg.txt)
trap 'scripts/throwaway-postgres.sh stop "$dir"' EXIT
mkdir -p bench-results
"$bin" bench engine --database-url "$url" --executions "$jobs" --workers "$workers" \
  --batch 1,100 --json-out bench-results/engine.json
"$bin" bench pool --database-url "$url" --guests "$guests" --executions "$jobs" \
  --slots "$workers" --json-out bench-results/pool.json
peer_db="${url%/postgres}/graphile"
/usr/lib/postgresql/15/bin/psql -q "$url" -c "CREATE DATABASE graphile"
node benches/peer/graphile.mjs "$peer_db" "$jobs" "$workers" > bench-results/graphile.json
python3 - "$jobs" "$workers" <<'PY'
import json, sys
engine = json.load(open("bench-results/engine.json"))
pool = json.load(open("bench-results/pool.json"))[0]
peer = json.load(open("bench-results/graphile.json"))
rows = []
print(f"\n{sys.argv[1]} no-op jobs, {sys.argv[2]} workers; claim + complete per second")
print(f"{'system':<42} {'per s':>10} {'vs graphile':>12}")
print(f"{'graphile-worker (concurrency ' + sys.argv[2] + ')':<42} {peer['process_per_s']:>10.0f} {1.0:>12.2f}")
for r in engine:
    if r["path"] != "engine":
        continue
    ratio = r["process_per_s"] / peer["process_per_s"]
    name = f"flowfabric engine, claim batch {r['batch']}"
    print(f"{name:<42} {r['process_per_s']:>10.0f} {ratio:>12.2f}")
    rows.append({"batch": r["batch"], "flowfabric_per_s": r["process_per_s"], "ratio": ratio})
ratio = pool["process_per_s"] / peer["process_per_s"]
name = f"flowfabric worker pool, {pool['slots']} slots (wasm)"
print(f"{name:<42} {pool['process_per_s']:>10.0f} {ratio:>12.2f}")
rows.append({"pool_slots": pool["slots"], "flowfabric_per_s": pool["process_per_s"], "ratio": ratio})
json.dump({"graphile": peer, "flowfabric": rows}, open("bench-results/peer.json", "w"), indent=2)
PY
