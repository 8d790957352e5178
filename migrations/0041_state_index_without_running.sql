-- `executions_state_idx` (tenant, public state, id) without the running
-- executions.
--
-- A claim moves an execution from `waiting` to `active` and its run's end
-- moves it on again; neither new version of the row can be a HOT update
-- (the claim index's predicate and the lease expiry change), so each adds
-- an entry to every index whose predicate it meets. The `active` entry of
-- this index lived only as long as the run, in a key range in the middle of
-- the index where its page splits leave half-empty pages: about 140 bytes
-- of write-ahead log a run (`scripts/wal-breakdown.sh`), for reads that
-- `executions_lease_expiry_idx` (tenant, lease expiry; running executions
-- only) serves as well: the list of running executions, their count, and
-- the lanes' counts.
--
-- Readers name which index they mean: a read by state adds
-- `public_state <> 'active'` (so a generic plan can use this index whatever
-- state it is given), a read of running executions asks for
-- `lifecycle_phase = 'active'`. A process of the previous build still gets
-- correct answers (its reads of running executions scan the tenant's rows).
DROP INDEX executions_state_idx;
CREATE INDEX executions_state_idx ON executions (tenant_id, public_state, execution_id)
    WHERE public_state <> 'active';
