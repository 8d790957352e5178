#!/usr/bin/env bash
# The test suite: installs what a fresh machine lacks, then runs `cargo test --workspace`.
# Tests start their own throwaway Postgres (or use FLOWFABRIC_TEST_DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh
exec cargo test --workspace "$@"
