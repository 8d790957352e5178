-- Operator lease revoke (upstream `revoke_lease`, `POST …/revoke-lease`): the
-- running attempt ends at once with state `revoked`, and the execution is
-- runnable again (its next claim is a `reclaim` attempt), marked
-- `lease_revoked` until then. Unlike an expiry it does not count against
-- `max_reclaim_count`: an operator chose it.
ALTER TABLE attempts DROP CONSTRAINT attempts_state_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_state_check CHECK (state IN
    ('running', 'suspended', 'succeeded', 'failed', 'cancelled', 'delayed', 'lease_expired',
     'expired', 'revoked'));

-- Lease history names it `revoked`, like a cancel under a live lease.
CREATE OR REPLACE FUNCTION flowfabric_lease_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lease_events (tenant_id, execution_id, attempt_index, lease_epoch, kind,
                              lease_expires_at, phase)
    VALUES (NEW.tenant_id, NEW.execution_id, NEW.attempt_index, NEW.lease_epoch,
        CASE
            WHEN OLD.lease_id IS NULL AND OLD.attempt_state = 'attempt_interrupted' THEN 'reclaimed'
            WHEN OLD.lease_id IS NULL THEN 'acquired'
            WHEN NEW.lease_id IS NOT NULL THEN 'renewed'
            WHEN NEW.reclaim_count > OLD.reclaim_count THEN 'expired'
            WHEN NEW.ownership_state = 'lease_revoked'
                 OR NEW.terminal_outcome IN ('cancelled', 'expired', 'skipped') THEN 'revoked'
            ELSE 'released'
        END,
        NEW.lease_expires_at, NEW.lifecycle_phase);
    PERFORM pg_notify('flowfabric_events', 'lease:' || NEW.tenant_id);
    RETURN NULL;
END
$$;
