-- Statement triggers whose plans no longer grow with the square of a batch.
--
-- A trigger's statements are planned once per connection, at its first
-- firing, and a statement that names only transition tables (no PL/pgSQL
-- variable) keeps that first plan for the connection's life. The planner
-- sizes a transition table by its rows at that moment, so a connection whose
-- first update changed one row joined old to new rows by a nested loop from
-- then on: every old row compared with every new one, 10,000 comparisons for
-- a batch of 100 (about 1 ms), a million for 1,000. Which plan a connection
-- got depended on what it happened to do first (`bench engine --keys 10`,
-- one worker: lease events 1.05 ms a claim or completion of 100 against
-- 0.33 ms on connections that started with a batch).
--
-- The lease-events trigger pairs each old row with its new one and joins
-- nothing else, so it is planned with nested loops turned off: a hash join,
-- whatever the first batch. The slot release pairs them with `EXCEPT ALL`
-- instead (a set operation, hashed or sorted, never a nested loop): an old
-- row that held a slot and was running, less those still running, is a run
-- that ended. Its other statements probe indexes from each key and keep
-- their nested loops.
ALTER FUNCTION flowfabric_lease_events() SET enable_nestloop = off;

CREATE OR REPLACE FUNCTION flowfabric_release_concurrency_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    tenants uuid[];
    scopes text[];
    names text[];
    keys text[];
    counts integer[];
    slot_rows tid[];
    slot_counts integer[];
    freed integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_rows
                   WHERE concurrency_held IS NOT NULL AND lifecycle_phase = 'active') THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(r.tenant_id), array_agg(r.scope), array_agg(r.name), array_agg(r.key),
           array_agg(r.n)
    INTO tenants, scopes, names, keys, counts
    FROM (
        SELECT ended.tenant_id, ended.scope, ended.name, ended.key, count(*)::int AS n
        FROM (
            SELECT o.tenant_id, o.execution_id, o.concurrency_held AS scope,
                CASE o.concurrency_held WHEN 'kind' THEN o.kind ELSE o.lane END AS name,
                o.concurrency_key AS key
            FROM old_rows o
            WHERE o.concurrency_held IS NOT NULL AND o.lifecycle_phase = 'active'
            EXCEPT ALL
            SELECT w.tenant_id, w.execution_id, w.concurrency_held,
                CASE w.concurrency_held WHEN 'kind' THEN w.kind ELSE w.lane END,
                w.concurrency_key
            FROM new_rows w
            WHERE w.concurrency_held IS NOT NULL AND w.lifecycle_phase = 'active'
        ) ended
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
    ) r;
    IF tenants IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(s.row_id ORDER BY r.ord), array_agg(r.n ORDER BY r.ord)
    INTO slot_rows, slot_counts
    FROM unnest(tenants, scopes, names, keys, counts) WITH ORDINALITY
        AS r(tenant_id, scope, name, key, n, ord)
    CROSS JOIN LATERAL (
        SELECT c.ctid AS row_id FROM concurrency_slots c
        WHERE c.tenant_id = r.tenant_id AND c.scope = r.scope AND c.name = r.name
          AND c.key = r.key
        FOR UPDATE
    ) s;
    UPDATE concurrency_slots s SET running = greatest(s.running - r.n, 0)
    FROM unnest(slot_rows, slot_counts) AS r(row_id, n)
    WHERE s.ctid = r.row_id;
    -- Most ends free a slot nothing waits for. The handoff, an update of
    -- executions, fires this table's statement triggers again even when it
    -- changes nothing, so it runs only when a key has something held back.
    -- Exact: holding the keys' slots, no claim can hold back more of them.
    IF NOT EXISTS (
        SELECT 1 FROM unnest(tenants, keys) AS r(tenant_id, key)
        WHERE EXISTS (
            SELECT 1 FROM executions q
            WHERE q.tenant_id = r.tenant_id AND q.concurrency_key = r.key
              AND q.eligibility_state = 'blocked_by_concurrency_key')) THEN
        RETURN NULL;
    END IF;
    UPDATE executions e SET eligibility_state = 'eligible_now',
        blocking_reason = 'waiting_for_worker', updated_at = now()
    WHERE e.ctid = ANY(ARRAY(
        SELECT x.row_id
        FROM unnest(tenants, scopes, names, keys, counts) AS r(tenant_id, scope, name, key, n)
        CROSS JOIN LATERAL (
            SELECT q.ctid AS row_id FROM executions q
            WHERE q.tenant_id = r.tenant_id AND q.concurrency_key = r.key
              AND q.eligibility_state = 'blocked_by_concurrency_key'
              AND r.name = CASE r.scope WHEN 'kind' THEN q.kind ELSE q.lane END
            ORDER BY q.priority DESC, q.eligible_at, q.execution_id
            LIMIT r.n
            FOR UPDATE SKIP LOCKED
        ) x));
    GET DIAGNOSTICS freed = ROW_COUNT;
    IF freed > 0 THEN
        PERFORM pg_notify('flowfabric_work', '');
    END IF;
    RETURN NULL;
END
$$;
