-- Keep key lookups on primary keys whatever the statistics say.
--
-- On a table that autovacuum has not analysed yet (a fresh deployment, a burst
-- of new work), the planner estimates one row for `tenant_id = $1` alone and
-- then prefers the narrowest index that starts with `tenant_id`. The start-rate
-- index `(tenant_id, started_at)` is narrower than the attempts primary key, so
-- the fenced `UPDATE attempts ... WHERE tenant_id, execution_id, attempt_index`
-- scanned every attempt of the tenant. As a partial index its predicate is not
-- implied by a key lookup, so the planner can no longer pick it for one; the
-- quota count (`started_at > ...`) implies `started_at IS NOT NULL` and still
-- uses it.
DROP INDEX attempts_started_idx;
CREATE INDEX attempts_started_idx ON attempts (tenant_id, started_at)
    WHERE started_at IS NOT NULL;
