-- Lease history's GIN index keyed by the moment each execution was created,
-- not by the execution.
--
-- An execution's timeline finds its rows of `lease_event_batches` through a
-- GIN index. Keyed by execution id (migration 0038), every event added a key
-- of its own: a claim of 100 executions put 100 new keys into the index's
-- pending list and, when the list was merged, 100 new entries into its tree,
-- about 200 bytes of write-ahead log a run (`scripts/wal-breakdown.sh`), the
-- largest part of a run's log after the execution row itself.
--
-- Execution ids are time-ordered (UUIDv7: the first 48 bits are the
-- millisecond the engine made the id), and a claim or an end takes work
-- created at about the same time, so a row's executions share a few moments.
-- The index now keys each row by the distinct (tenant, 16 ms of creation)
-- pairs of its executions: a row of 100 events adds one key or a few. A
-- timeline read looks up its execution's key and keeps, from the rows found,
-- only its own events, so the key decides how much is read, never what is
-- returned: the rows of the executions the same tenant created in the same
-- 16 ms (at 100,000 submissions a second, ~30 rows of 100 events). An id
-- that is not time-ordered (made by an older build, or elsewhere) only
-- gets a key of its own, as before.
--
-- The key is bit arithmetic on the ids' text, not a hash function, so it
-- cannot change under the index with a server upgrade: the tenant's last 32
-- bits (random in v4 and v7 ids) over the execution's creation millisecond
-- divided by 16, modulo 2^32 (a collision, every ~2 years, only adds rows to
-- read).
--
-- The old index is dropped: until every process runs this build, a timeline
-- read of the previous build scans the table (correct, slower).

-- Only built-in functions in the body: maintenance (ANALYZE, REINDEX) may
-- evaluate it with a search path of `pg_catalog` alone. A timeline read
-- asks for `flowfabric_execution_moments(tenant, ARRAY[execution])`.
CREATE FUNCTION flowfabric_execution_moments(tenant uuid, executions uuid[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array(
        SELECT DISTINCT (('x' || right(tenant::text, 8))::bit(32)::bigint << 32)
            | ((('x' || translate(left(e::text, 13), '-', ''))::bit(48)::bigint >> 4) & 4294967295)
        FROM unnest(executions) e)
$$;

DROP INDEX lease_event_batches_execution_idx;
CREATE INDEX lease_event_batches_moment_idx ON lease_event_batches
    USING gin (flowfabric_execution_moments(tenant_id, execution_ids))
    WITH (gin_pending_list_limit = 256);
