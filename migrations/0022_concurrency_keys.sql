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

-- Slot holders that left `active` (ended, suspended, failed into a retry,
-- lost their lease) free their slots, and as many of each key's blocked
-- executions become claimable. Once per statement, from its transition
-- tables: the slots are locked in key order (ORDER BY … FOR UPDATE locks as
-- it returns rows), so two statements that end runs of the same keys in
-- different orders wait for each other instead of deadlocking. The claim
-- takes slots with SKIP LOCKED and never waits here. The handoff is a second
-- statement, so its snapshot is taken after the slot locks: a claim that
-- held a slot while this waited, and blocked the key's queue, has committed
-- by then, and the rows it blocked are seen and handed on.
CREATE FUNCTION flowfabric_release_concurrency_slots() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tenants uuid[];
    scopes text[];
    names text[];
    keys text[];
    counts integer[];
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
    ) r;
    IF tenants IS NULL THEN
        RETURN NULL;
    END IF;
    WITH slots AS (
        SELECT s.ctid AS row_id, r.n
        FROM concurrency_slots s
        JOIN unnest(tenants, scopes, names, keys, counts) AS r(tenant_id, scope, name, key, n)
            ON r.tenant_id = s.tenant_id AND r.scope = s.scope AND r.name = s.name
           AND r.key = s.key
        ORDER BY s.tenant_id, s.scope, s.name, s.key
        FOR UPDATE OF s
    )
    UPDATE concurrency_slots s SET running = greatest(s.running - l.n, 0)
    FROM slots l WHERE s.ctid = l.row_id;
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

CREATE TRIGGER executions_release_concurrency_slots AFTER UPDATE ON executions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_release_concurrency_slots();
