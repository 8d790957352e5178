-- `executions_state_idx` with the states in descending order, so that a
-- tenant's `completed` entries sort after its waiting ones.
--
-- A run's end adds an entry (tenant, `completed`, id) to this index. In
-- ascending order a tenant's `completed` entries come just before its
-- `waiting` ones, which the claim leaves behind as dead entries that no scan
-- removes while the backlog drains: every new `completed` entry landed
-- before the end of a page, so a full page split in half, ~3.9 kB of
-- write-ahead log for every ~70 entries (57 bytes a run,
-- `scripts/wal-breakdown.sh`). Descending, the states run `waiting_children`,
-- `waiting`, `suspended`, `skipped`, `rate_limited`, `failed`, `expired`,
-- `delayed`, `completed`, `cancelled`: a run's end appends to its tenant's
-- `completed` entries, which only `cancelled` ones (never left dead by a
-- claim) follow, and a full page gives up only its tail.
--
-- Readers compare `public_state` for equality or membership, so the order
-- changes no plan.
DROP INDEX executions_state_idx;
CREATE INDEX executions_state_idx ON executions (tenant_id, public_state DESC, execution_id)
    WHERE public_state <> 'active';
