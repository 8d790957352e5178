-- Lease history, written once per statement instead of once per row.
--
-- The worker pool claims and completes dozens of executions per statement.
-- The row trigger ran a PL/pgSQL call and an SPI insert for each of them:
-- about a fifth of the database's time under a backlog of short runs. This
-- trigger writes one statement's events in one INSERT from its transition
-- tables. Transition tables cannot be limited to columns, so it runs for
-- every UPDATE of `executions` and writes only rows whose lease changed (the
-- condition the row trigger had in its WHEN clause); on a one-row update that
-- leaves the lease alone, such as a frame append, the cost was within noise.
-- Events and their kinds are unchanged, and one NOTIFY per tenant is sent per
-- statement (identical payloads were folded per transaction before).
DROP TRIGGER executions_lease_events ON executions;
DROP FUNCTION flowfabric_lease_event();

CREATE FUNCTION flowfabric_lease_events() RETURNS trigger LANGUAGE plpgsql AS $$
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
$$;

CREATE TRIGGER executions_lease_events AFTER UPDATE ON executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_lease_events();
