CREATE OR REPLACE FUNCTION public.flowfabric_release_concurrency_slots()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
            SELECT h.row_id FROM (
                SELECT h.ctid AS row_id, h.kind, h.lane, h.priority, h.eligible_at,
                    h.execution_id
                FROM executions h
                WHERE h.tenant_id = r.tenant_id AND h.concurrency_key = r.key
                  AND h.eligibility_state = 'blocked_by_concurrency_key'
                ORDER BY h.priority DESC, h.eligible_at, h.execution_id
                LIMIT 1000
            ) h
            WHERE r.name = CASE r.scope WHEN 'kind' THEN h.kind ELSE h.lane END
            ORDER BY h.priority DESC, h.eligible_at, h.execution_id
            LIMIT r.n
        ) x));
    GET DIAGNOSTICS freed = ROW_COUNT;
    IF freed > 0 THEN
        PERFORM pg_notify('flowfabric_work', '');
    END IF;
    RETURN NULL;
END
$function$
