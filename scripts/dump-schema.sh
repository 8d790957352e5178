#!/usr/bin/env bash
# Writes the canonical schema from freshly migrated databases:
#   host/src/backend/postgres/sql/schema.sql and sql/functions/*.sql
#   host/src/backend/sqlite/sql/schema.sql
# Run it after adding a migration, and commit what it writes; the schema test
# fails until the checked-in files match the migrations.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh
FLOWFABRIC_UPDATE_SCHEMA=1 exec cargo test -p flowfabric-tests --test engine schema::
