#!/usr/bin/env bash
# The main job in one command: builds the host and the example guests, starts a
# throwaway Postgres, runs `flowfabric dev` (upload guests, run executions, show
# the results) and removes the database again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh
(cd guests && CARGO_TARGET_DIR=target cargo build --quiet --release --target wasm32-wasip2)
cargo build --quiet --release -p flowfabric
bin="${CARGO_TARGET_DIR:-target}/release/flowfabric"
url=$(scripts/throwaway-postgres.sh 2>/tmp/flowfabric-demo-pg.txt)
dir=$(sed -n 's/^cluster dir: \([^ ]*\).*/\1/p' /tmp/flowfabric-demo-pg.txt)
trap 'scripts/throwaway-postgres.sh stop "$dir"' EXIT
"$bin" dev --database-url "$url" --slots 4 --cache-dir "$dir/cache" "$@"
