-- Durable event streams: completion (existing), lease history and signal
-- delivery, each an outbox table read by cursor.
--
-- Why a cursor of (txid, event_id) and not event_id alone: identity values are
-- taken at insert, not at commit, so a reader paging by `event_id > cursor` can
-- see event 7 (committed) while event 6 (inserted earlier by a transaction
-- still running) is invisible, move its cursor past 6 and never deliver it.
-- Every row records the id of the transaction that wrote it; readers deliver
-- only rows whose transaction is older than the oldest one still running
-- (`pg_snapshot_xmin(pg_current_snapshot())`), in (txid, event_id) order. That
-- set never grows behind a cursor: a transaction that could still commit has a
-- txid at or above the horizon, and new transactions get larger ones.
--
-- The price is that a long-running writing transaction anywhere in the cluster
-- holds back delivery (not recording) until it ends.

ALTER TABLE completion_events
    ADD COLUMN txid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint;
ALTER TABLE completion_events DROP CONSTRAINT completion_events_pkey;
ALTER TABLE completion_events ADD PRIMARY KEY (tenant_id, txid, event_id);
-- The process-wide dispatcher (wake-ups for result waiters) and retention.
DROP INDEX completion_events_id_idx;
CREATE INDEX completion_events_txid_idx ON completion_events (txid, event_id);

-- Every change of an execution's lease: acquired (a claim; `reclaimed` when the
-- previous lease had expired), renewed, released (the holder completed, failed,
-- retried or suspended), expired (the lease-expiry scanner took it back) and
-- revoked (an operator or flow cancel, or the deadline, ended the execution
-- under it). Written by a trigger, so no path that moves a lease can forget it.
CREATE TABLE lease_events (
    tenant_id        uuid NOT NULL,
    event_id         bigint GENERATED ALWAYS AS IDENTITY,
    txid             bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    execution_id     uuid NOT NULL,
    attempt_index    integer NOT NULL,
    lease_epoch      bigint NOT NULL,
    kind             text NOT NULL CHECK (kind IN
                         ('acquired', 'reclaimed', 'renewed', 'released', 'expired', 'revoked')),
    lease_expires_at timestamptz,
    -- Where the execution went when the lease ended.
    phase            text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, txid, event_id)
);

CREATE FUNCTION flowfabric_lease_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lease_events (tenant_id, execution_id, attempt_index, lease_epoch, kind,
                              lease_expires_at, phase)
    VALUES (NEW.tenant_id, NEW.execution_id, NEW.attempt_index, NEW.lease_epoch,
        CASE
            WHEN OLD.lease_id IS NULL AND OLD.attempt_state = 'attempt_interrupted' THEN 'reclaimed'
            WHEN OLD.lease_id IS NULL THEN 'acquired'
            WHEN NEW.lease_id IS NOT NULL THEN 'renewed'
            WHEN NEW.reclaim_count > OLD.reclaim_count THEN 'expired'
            WHEN NEW.terminal_outcome IN ('cancelled', 'expired', 'skipped') THEN 'revoked'
            ELSE 'released'
        END,
        NEW.lease_expires_at, NEW.lifecycle_phase);
    -- One wake-up per tenant per transaction: identical payloads are folded.
    PERFORM pg_notify('flowfabric_events', 'lease:' || NEW.tenant_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER executions_lease_events
    AFTER UPDATE OF lease_id, lease_expires_at ON executions
    FOR EACH ROW
    WHEN (OLD.lease_id IS DISTINCT FROM NEW.lease_id
          OR OLD.lease_expires_at IS DISTINCT FROM NEW.lease_expires_at)
    EXECUTE FUNCTION flowfabric_lease_event();

-- What became of every signal delivered: it resumed the execution, it was
-- buffered (the condition is not yet met, or the execution is not suspended
-- yet), or it repeated an idempotency key and changed nothing.
CREATE TABLE signal_events (
    tenant_id     uuid NOT NULL,
    event_id      bigint GENERATED ALWAYS AS IDENTITY,
    txid          bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    execution_id  uuid NOT NULL,
    waitpoint_id  uuid NOT NULL,
    signal_id     uuid NOT NULL,
    name          text NOT NULL,
    effect        text NOT NULL CHECK (effect IN ('resumed', 'buffered', 'duplicate')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, txid, event_id)
);
