CREATE OR REPLACE FUNCTION public.flowfabric_lease_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SET enable_nestloop TO 'off'
AS $function$
DECLARE
    notified integer;
BEGIN
    WITH changed AS (
        INSERT INTO lease_events (tenant_id, execution_id, attempt_index, lease_epoch, kind,
                                  lease_expires_at, phase)
        SELECT n.tenant_id, n.execution_id, n.attempt_index, n.lease_epoch,
            CASE
                WHEN o.lease_id IS NULL AND o.attempt_state = 'attempt_interrupted' THEN 'reclaimed'
                WHEN o.lease_id IS NULL THEN 'acquired'
                WHEN n.lease_id IS NOT NULL THEN 'renewed'
                WHEN n.reclaim_count > o.reclaim_count THEN 'expired'
                WHEN n.ownership_state = 'lease_revoked'
                     OR n.terminal_outcome IN ('cancelled', 'expired', 'skipped') THEN 'revoked'
                ELSE 'released'
            END,
            n.lease_expires_at, n.lifecycle_phase
        FROM new_rows n
        JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.execution_id = n.execution_id
        WHERE o.lease_id IS DISTINCT FROM n.lease_id
           OR o.lease_expires_at IS DISTINCT FROM n.lease_expires_at
        RETURNING tenant_id
    )
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('flowfabric_events', 'lease:' || t.tenant_id)
        FROM (SELECT DISTINCT tenant_id FROM changed) t) sent;
    RETURN NULL;
END
$function$
