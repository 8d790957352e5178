-- Concurrency keys: at most N running (and M starts per window) per key.
--
-- An execution may carry a concurrency key. A tenant's limit applies per
-- kind or per lane (the kind's first). Each (limit, key) pair has a slot row
-- that counts the key's running executions and its starts in the current
-- window: a claim locks the slots of its candidates FOR UPDATE SKIP LOCKED,
-- so concurrent claimers never both take a key's last room, and records on
-- each execution it leases which slot it holds (`concurrency_held`). A
-- candidate whose key is full is moved to `blocked_by_concurrency_key`, out
-- of `executions_claim_idx`; when a slot holder leaves `active`, the trigger
-- below gives the slot back and makes the key's next execution claimable.
ALTER TABLE executions
    ADD COLUMN concurrency_key text
        CHECK (concurrency_key IS NULL OR octet_length(concurrency_key) BETWEEN 1 AND 256),
    ADD COLUMN concurrency_held text CHECK (concurrency_held IN ('kind', 'lane'));

ALTER TABLE executions DROP CONSTRAINT executions_eligibility_state_check;
ALTER TABLE executions ADD CONSTRAINT executions_eligibility_state_check
    CHECK (eligibility_state IN ('eligible_now', 'not_eligible_until_time',
        'blocked_by_dependencies', 'blocked_by_budget', 'blocked_by_quota',
        'blocked_by_operator', 'blocked_by_concurrency_key', 'not_applicable'));

CREATE TABLE concurrency_limits (
    tenant_id   uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    scope       text NOT NULL CHECK (scope IN ('kind', 'lane')),
    name        text NOT NULL,
    max_running integer NOT NULL CHECK (max_running BETWEEN 1 AND 100000),
    max_starts  integer CHECK (max_starts BETWEEN 1 AND 100000),
    window_ms   bigint CHECK (window_ms BETWEEN 100 AND 86400000),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, scope, name)
);

CREATE TABLE concurrency_slots (
    tenant_id         uuid NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    scope             text NOT NULL,
    name              text NOT NULL,
    key               text NOT NULL,
    running           integer NOT NULL DEFAULT 0,
    window_started_at timestamptz,
    window_starts     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, scope, name, key)
);

-- A key's queue, to block the rest of it when the key is full.
CREATE INDEX executions_concurrency_key_idx ON executions
    (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id)
    WHERE concurrency_key IS NOT NULL AND lifecycle_phase = 'runnable'
      AND eligibility_state = 'eligible_now';
-- What a key's limit holds back, in claim order, to hand a freed slot on.
CREATE INDEX executions_concurrency_blocked_idx ON executions
    (tenant_id, concurrency_key, priority DESC, eligible_at, execution_id)
    WHERE eligibility_state = 'blocked_by_concurrency_key';

-- A slot holder left `active` (ended, suspended, failed into a retry, lost
-- its lease): its slot is free again, and the key's next blocked execution
-- becomes claimable. A row trigger with a WHEN clause, so executions that
-- hold no slot cost nothing.
CREATE FUNCTION flowfabric_release_concurrency_slot() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    slot_name text := CASE OLD.concurrency_held WHEN 'kind' THEN OLD.kind ELSE OLD.lane END;
BEGIN
    UPDATE concurrency_slots s SET running = greatest(s.running - 1, 0)
    WHERE s.tenant_id = OLD.tenant_id AND s.scope = OLD.concurrency_held
      AND s.name = slot_name AND s.key = OLD.concurrency_key;
    UPDATE executions e SET eligibility_state = 'eligible_now',
        blocking_reason = 'waiting_for_worker', updated_at = now()
    WHERE e.ctid = (
        SELECT x.ctid FROM executions x
        WHERE x.tenant_id = OLD.tenant_id AND x.concurrency_key = OLD.concurrency_key
          AND x.eligibility_state = 'blocked_by_concurrency_key'
          AND slot_name = CASE OLD.concurrency_held WHEN 'kind' THEN x.kind ELSE x.lane END
        ORDER BY x.priority DESC, x.eligible_at, x.execution_id
        LIMIT 1
        FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        PERFORM pg_notify('flowfabric_work', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER executions_release_concurrency_slot AFTER UPDATE OF lifecycle_phase ON executions
    FOR EACH ROW
    WHEN (OLD.concurrency_held IS NOT NULL AND OLD.lifecycle_phase = 'active'
          AND NEW.lifecycle_phase <> 'active')
    EXECUTE FUNCTION flowfabric_release_concurrency_slot();
