#!/usr/bin/env bash
# The test suite: installs what a fresh machine lacks, builds the JS and Python
# guests, then runs `cargo test --workspace`.
# Tests start their own throwaway Postgres (or use FLOWFABRIC_TEST_DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh
scripts/build-guests.sh   # the JS and Python guests; the Rust ones build with the tests
exec cargo test --workspace "$@"
