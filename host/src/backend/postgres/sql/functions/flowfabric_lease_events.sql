CREATE OR REPLACE FUNCTION public.flowfabric_lease_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SET enable_nestloop TO 'off'
AS $function$
DECLARE
    notified integer;
BEGIN
    WITH changed AS (
        INSERT INTO lease_event_batches (tenant_id, execution_ids, attempt_indexes, lease_epochs,
                                         kinds, lease_expires_ats, phases)
        SELECT e.tenant_id, array_agg(e.execution_id), array_agg(e.attempt_index),
            array_agg(e.lease_epoch), array_agg(e.kind), array_agg(e.lease_expires_at),
            array_agg(e.phase)
        FROM (
            SELECT n.tenant_id, n.execution_id, n.attempt_index, n.lease_epoch,
                CASE
                    WHEN o.lease_id IS NULL AND o.attempt_state = 'attempt_interrupted' THEN 'c'
                    WHEN o.lease_id IS NULL THEN 'a'
                    WHEN n.lease_id IS NOT NULL THEN 'n'
                    WHEN n.reclaim_count > o.reclaim_count THEN 'e'
                    WHEN n.ownership_state = 'lease_revoked'
                         OR n.terminal_outcome IN ('cancelled', 'expired', 'skipped') THEN 'v'
                    ELSE 'r'
                END::"char" AS kind,
                n.lease_expires_at,
                CASE n.lifecycle_phase WHEN 'submitted' THEN 'u' WHEN 'runnable' THEN 'r'
                    WHEN 'active' THEN 'a' WHEN 'suspended' THEN 's' WHEN 'terminal' THEN 't'
                END::"char" AS phase,
                -- Splits a statement's events into rows of fewer than 2^20.
                (row_number() OVER () - 1) / 1000000 AS part
            FROM new_rows n
            JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.execution_id = n.execution_id
            WHERE o.lease_id IS DISTINCT FROM n.lease_id
               OR o.lease_expires_at IS DISTINCT FROM n.lease_expires_at
        ) e
        GROUP BY e.tenant_id, e.part
        RETURNING tenant_id
    )
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('flowfabric_events', 'lease:' || t.tenant_id)
        FROM (SELECT DISTINCT tenant_id FROM changed) t) sent;
    RETURN NULL;
END
$function$
