-- Giving a concurrency slot back, corrected and made cheaper.
--
-- Migration 0022 locked the slots and counted them down in one statement,
-- naming each by the ctid it locked. A slot that a claim held (and updated)
-- while this waited for it is locked at the version that claim committed,
-- newer than the statement's snapshot; the update by ctid could not see that
-- version and skipped it. The count was lost: the key stayed full with
-- nothing running, and its queue was held back for good.
--
-- Now the slots are locked by one statement and counted down by the next,
-- whose snapshot is taken after the locks and sees the versions locked. Each
-- slot is found by a primary-key probe (joined, the plan hashed a scan of
-- every slot), in key order: the keys are sorted before they are probed, and
-- a nested loop locks as it goes, so two statements that end runs of the same
-- keys wait for each other instead of deadlocking.
--
-- And the handoff runs only when a key holds something back. It is an update
-- of executions, which fires the table's statement triggers (lease events,
-- this one) even when it changes no row, as most ends' handoffs do: 0.24 ms
-- of a 2.8 ms completion at batch 1 (`bench engine --keys 10000`).
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
        SELECT o.tenant_id, o.concurrency_held AS scope,
            CASE o.concurrency_held WHEN 'kind' THEN o.kind ELSE o.lane END AS name,
            o.concurrency_key AS key, count(*)::int AS n
        FROM old_rows o
        JOIN new_rows w ON w.tenant_id = o.tenant_id AND w.execution_id = o.execution_id
        WHERE o.concurrency_held IS NOT NULL AND o.lifecycle_phase = 'active'
          AND w.lifecycle_phase <> 'active'
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
