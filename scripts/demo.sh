#!/usr/bin/env bash
# The main job in one command: builds the host and the example guests, then
# runs `flowfabric dev` on the embedded default (a fresh SQLite file under
# .flowfabric/; no database server): uploads the guests, runs executions and a
# flow on a worker pool, and prints the results. Set DATABASE_URL to a
# postgres:// URL to run the same demo on Postgres.
#
# The host is built with the `demo` profile (Cargo.toml): optimised enough to
# run, quick enough that a first build on a small machine takes minutes. The
# binary is target/demo/flowfabric; `cargo build --release` builds the fully
# optimised one.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  step "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
step "building the example guests"
(cd guests && CARGO_TARGET_DIR=target cargo build --quiet --release --target wasm32-wasip2)
step "building the host (a first build takes several minutes; later ones seconds)"
cargo build --profile demo -p flowfabric
step "running the demo"
bin="${CARGO_TARGET_DIR:-target}/demo/flowfabric"
"$bin" dev --slots 4 "$@"
