#!/usr/bin/env bash
# The main job in one command: builds the host and the example guests, then
# runs `flowfabric dev` on the embedded default (a fresh SQLite file under
# .flowfabric/; no database server): uploads the guests, runs executions and a
# flow on a worker pool, and prints the results. Set DATABASE_URL to a
# postgres:// URL to run the same demo on Postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd guests && CARGO_TARGET_DIR=target cargo build --quiet --release --target wasm32-wasip2)
cargo build --quiet --release -p flowfabric
bin="${CARGO_TARGET_DIR:-target}/release/flowfabric"
"$bin" dev --slots 4 "$@"
