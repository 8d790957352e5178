-- Flows: executions joined by dependency edges.
--
-- Dependency resolution runs inside the transaction that ends an upstream
-- execution, whichever path ended it (worker complete or fail, operator cancel,
-- a scanner's expiry or timeout, a skip): every terminal transition writes a
-- completion event, and a statement trigger on `completion_events` resolves the
-- edges out of the executions that just ended. A downstream therefore becomes
-- runnable (or is skipped) atomically with the upstream's outcome; there is no
-- dispatch outbox to lose or replay, and no per-hop transaction.
--
-- Lock order, shared with the Rust side (backend/postgres/flows.rs): the
-- upstream execution, then join groups in (tenant, downstream) order, then the
-- downstream executions.

CREATE TABLE flows (
    tenant_id           uuid NOT NULL REFERENCES tenants (tenant_id),
    flow_id             uuid NOT NULL,
    name                text NOT NULL,
    tags                jsonb NOT NULL DEFAULT '{}',
    -- Bumped by every change to the graph; callers may pass the revision they
    -- read to detect a concurrent change (optimistic concurrency).
    graph_revision      integer NOT NULL DEFAULT 0,
    cancelled_at        timestamptz,
    cancellation_reason text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, flow_id)
);

ALTER TABLE executions
    ADD COLUMN flow_id uuid,
    -- The member's name within its flow; edges are written between keys.
    ADD COLUMN flow_key text,
    ADD CONSTRAINT executions_flow_fk FOREIGN KEY (tenant_id, flow_id)
        REFERENCES flows (tenant_id, flow_id),
    ADD CONSTRAINT executions_flow_key_check CHECK ((flow_id IS NULL) = (flow_key IS NULL));
CREATE UNIQUE INDEX executions_flow_key_idx ON executions (tenant_id, flow_id, flow_key)
    WHERE flow_id IS NOT NULL;

-- One join group per downstream execution that has incoming edges: how many of
-- its upstreams must succeed (`k`; NULL means all of them), and the counts so far.
CREATE TABLE flow_groups (
    tenant_id      uuid NOT NULL,
    downstream_id  uuid NOT NULL,
    flow_id        uuid NOT NULL,
    policy         text NOT NULL CHECK (policy IN ('all_of', 'any_of', 'quorum')),
    k              integer CHECK (k >= 1),
    on_satisfied   text NOT NULL CHECK (on_satisfied IN ('cancel_remaining', 'let_run')),
    total          integer NOT NULL DEFAULT 0,
    succeeded      integer NOT NULL DEFAULT 0,
    unsatisfied    integer NOT NULL DEFAULT 0,
    state          text NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'satisfied', 'impossible')),
    -- Satisfied with `cancel_remaining`, but an upstream could not be cancelled
    -- at once (its row was locked): the sibling-cancel scanner finishes the job.
    cancel_pending boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, downstream_id),
    FOREIGN KEY (tenant_id, downstream_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);
CREATE INDEX flow_groups_cancel_pending_idx ON flow_groups (tenant_id, downstream_id)
    WHERE cancel_pending;

CREATE TABLE flow_edges (
    tenant_id      uuid NOT NULL,
    upstream_id    uuid NOT NULL,
    downstream_id  uuid NOT NULL,
    flow_id        uuid NOT NULL,
    -- The upstream's result becomes the downstream's input when it is promoted.
    pass_result    boolean NOT NULL DEFAULT false,
    state          text NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'satisfied', 'unsatisfied')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Resolution walks edges out of an upstream: this key's prefix.
    PRIMARY KEY (tenant_id, upstream_id, downstream_id),
    FOREIGN KEY (tenant_id, downstream_id) REFERENCES flow_groups (tenant_id, downstream_id)
        ON DELETE CASCADE,
    CHECK (upstream_id <> downstream_id)
);
CREATE INDEX flow_edges_downstream_idx ON flow_edges (tenant_id, downstream_id);
CREATE INDEX flow_edges_flow_idx ON flow_edges (tenant_id, flow_id);
-- A downstream takes its input from at most one upstream.
CREATE UNIQUE INDEX flow_edges_one_input_idx ON flow_edges (tenant_id, downstream_id)
    WHERE pass_result;

-- Cancel non-terminal executions (pairs of tenant and id), revoking live leases
-- and writing completion events, in one statement. The one definition of
-- "cancel", shared by operator cancel, flow cancel and sibling cancel.
CREATE FUNCTION flowfabric_cancel(p_tenants uuid[], p_ids uuid[], p_reason text)
RETURNS TABLE (tenant_id uuid, execution_id uuid)
LANGUAGE sql AS $$
WITH target AS (
    SELECT * FROM unnest(p_tenants, p_ids) AS t(tenant_id, execution_id)
),
moved AS (
    UPDATE executions e SET lifecycle_phase = 'terminal', ownership_state = 'unowned',
        eligibility_state = 'not_applicable', blocking_reason = NULL,
        terminal_outcome = 'cancelled', attempt_state = 'attempt_terminal',
        lease_id = NULL, lease_expires_at = NULL, attempt_timeout_at = NULL,
        cancellation_reason = p_reason, suspension = NULL, suspension_timeout_at = NULL,
        finished_at = now(), updated_at = now()
    FROM target t
    WHERE e.tenant_id = t.tenant_id AND e.execution_id = t.execution_id
      AND e.lifecycle_phase <> 'terminal'
    RETURNING e.tenant_id, e.execution_id, e.attempt_index
),
attempt AS (
    UPDATE attempts a SET state = 'cancelled', ended_at = now()
    FROM moved m
    WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id
      AND a.attempt_index = m.attempt_index AND a.state IN ('running', 'suspended')
),
event AS (
    INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome)
    SELECT tenant_id, execution_id, attempt_index, 'cancelled' FROM moved
    RETURNING event_id
),
event_notify AS (
    SELECT pg_notify('flowfabric_completion', max(event_id)::text) FROM event
    HAVING count(*) > 0
),
revoke AS (SELECT pg_notify('flowfabric_revoked', execution_id::text) FROM moved)
SELECT tenant_id, execution_id FROM moved
WHERE (SELECT count(*) FROM event_notify) + (SELECT count(*) FROM revoke) >= 0
$$;

-- Resolve the pending edges out of executions that just ended (parallel arrays
-- of tenant, execution and terminal outcome), and everything that follows:
-- satisfied downstreams become runnable (taking an upstream's result as input
-- when an edge says so), impossible ones are skipped, `cancel_remaining` groups
-- cancel their unfinished upstreams. Skips and cancels end executions too, so
-- the walk repeats on them until nothing changes: a cascade is a loop here,
-- not a recursion, so a long chain cannot exhaust the stack.
CREATE FUNCTION flowfabric_resolve(p_tenants uuid[], p_ids uuid[], p_outcomes text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    f_tenants uuid[] := p_tenants;
    f_ids uuid[] := p_ids;
    f_outcomes text[] := p_outcomes;
    d_tenants uuid[]; d_ids uuid[]; d_ok int[]; d_bad int[];
    ok_tenants uuid[]; ok_ids uuid[];
    bad_tenants uuid[]; bad_ids uuid[];
    cr_tenants uuid[]; cr_ids uuid[];
    c_tenants uuid[]; c_ids uuid[];
    s_tenants uuid[]; s_ids uuid[]; s_event bigint;
    promoted int;
BEGIN
    WHILE coalesce(cardinality(f_ids), 0) > 0 LOOP
        -- 1. The edges out of the finished executions.
        WITH fin AS (
            SELECT * FROM unnest(f_tenants, f_ids, f_outcomes) AS f(tenant_id, execution_id, outcome)
        ),
        resolved AS (
            UPDATE flow_edges ed
            SET state = CASE WHEN fin.outcome = 'success' THEN 'satisfied' ELSE 'unsatisfied' END
            FROM fin
            WHERE ed.tenant_id = fin.tenant_id AND ed.upstream_id = fin.execution_id
              AND ed.state = 'pending'
            RETURNING ed.tenant_id, ed.downstream_id, ed.state
        )
        SELECT array_agg(tenant_id), array_agg(downstream_id), array_agg(ok), array_agg(bad)
        INTO d_tenants, d_ids, d_ok, d_bad
        FROM (
            SELECT tenant_id, downstream_id,
                   count(*) FILTER (WHERE state = 'satisfied')::int AS ok,
                   count(*) FILTER (WHERE state = 'unsatisfied')::int AS bad
            FROM resolved GROUP BY tenant_id, downstream_id
        ) c;
        EXIT WHEN d_ids IS NULL;

        -- 2. Their join groups, locked in key order so concurrent resolutions
        --    sharing downstreams cannot deadlock.
        PERFORM 1 FROM flow_groups g
        WHERE (g.tenant_id, g.downstream_id) IN (SELECT * FROM unnest(d_tenants, d_ids))
        ORDER BY g.tenant_id, g.downstream_id
        FOR UPDATE;

        WITH changed AS (
            UPDATE flow_groups g
            SET succeeded = g.succeeded + c.ok,
                unsatisfied = g.unsatisfied + c.bad,
                state = CASE
                    WHEN g.succeeded + c.ok >= coalesce(g.k, g.total) THEN 'satisfied'
                    WHEN g.total - g.unsatisfied - c.bad < coalesce(g.k, g.total) THEN 'impossible'
                    ELSE 'pending' END
            FROM unnest(d_tenants, d_ids, d_ok, d_bad) AS c(tenant_id, downstream_id, ok, bad)
            WHERE g.tenant_id = c.tenant_id AND g.downstream_id = c.downstream_id
              AND g.state = 'pending'
            RETURNING g.tenant_id, g.downstream_id, g.state, g.on_satisfied
        )
        SELECT array_agg(tenant_id) FILTER (WHERE state = 'satisfied'),
               array_agg(downstream_id) FILTER (WHERE state = 'satisfied'),
               array_agg(tenant_id) FILTER (WHERE state = 'impossible'),
               array_agg(downstream_id) FILTER (WHERE state = 'impossible'),
               array_agg(tenant_id) FILTER (WHERE state = 'satisfied' AND on_satisfied = 'cancel_remaining'),
               array_agg(downstream_id) FILTER (WHERE state = 'satisfied' AND on_satisfied = 'cancel_remaining')
        INTO ok_tenants, ok_ids, bad_tenants, bad_ids, cr_tenants, cr_ids
        FROM changed;

        -- 3. Satisfied: runnable now (or at its delay), input from the passing edge.
        UPDATE executions e
        SET eligibility_state = CASE WHEN e.eligible_at > now()
                THEN 'not_eligible_until_time' ELSE 'eligible_now' END,
            blocking_reason = CASE WHEN e.eligible_at > now()
                THEN 'waiting_for_delay' ELSE 'waiting_for_worker' END,
            eligible_at = greatest(e.eligible_at, now()),
            input = coalesce((
                SELECT u.result FROM flow_edges ed
                JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id
                WHERE ed.tenant_id = e.tenant_id AND ed.downstream_id = e.execution_id
                  AND ed.pass_result AND ed.state = 'satisfied'), e.input),
            updated_at = now()
        FROM unnest(ok_tenants, ok_ids) AS s(tenant_id, execution_id)
        WHERE e.tenant_id = s.tenant_id AND e.execution_id = s.execution_id
          AND e.lifecycle_phase = 'runnable' AND e.eligibility_state = 'blocked_by_dependencies';
        GET DIAGNOSTICS promoted = ROW_COUNT;
        IF promoted > 0 THEN
            PERFORM pg_notify('flowfabric_work', '');
        END IF;

        -- 4. Impossible: skipped, which ends them in turn.
        WITH moved AS (
            UPDATE executions e
            SET lifecycle_phase = 'terminal', eligibility_state = 'not_applicable',
                blocking_reason = NULL, terminal_outcome = 'skipped',
                attempt_state = 'attempt_terminal', finished_at = now(), updated_at = now()
            FROM unnest(bad_tenants, bad_ids) AS s(tenant_id, execution_id)
            WHERE e.tenant_id = s.tenant_id AND e.execution_id = s.execution_id
              AND e.lifecycle_phase = 'runnable' AND e.eligibility_state = 'blocked_by_dependencies'
            RETURNING e.tenant_id, e.execution_id, e.attempt_index
        ),
        event AS (
            INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome)
            SELECT tenant_id, execution_id, attempt_index, 'skipped' FROM moved
            RETURNING tenant_id, execution_id, event_id
        )
        SELECT array_agg(tenant_id), array_agg(execution_id), max(event_id)
        INTO s_tenants, s_ids, s_event
        FROM event;
        IF s_event IS NOT NULL THEN
            PERFORM pg_notify('flowfabric_completion', s_event::text);
        END IF;

        -- 5. Satisfied with `cancel_remaining`: cancel the upstreams still
        --    running. One locked by its own transaction is left to the sibling
        --    scanner rather than waited for (it may be finishing right now,
        --    holding its lock while it waits for one of ours).
        c_tenants := NULL; c_ids := NULL;
        IF cr_ids IS NOT NULL THEN
            WITH candidates AS (
                SELECT e.tenant_id, e.execution_id FROM executions e
                JOIN flow_edges ed ON ed.tenant_id = e.tenant_id AND ed.upstream_id = e.execution_id
                JOIN unnest(cr_tenants, cr_ids) AS g(tenant_id, downstream_id)
                    ON ed.tenant_id = g.tenant_id AND ed.downstream_id = g.downstream_id
                WHERE ed.state = 'pending' AND e.lifecycle_phase <> 'terminal'
                ORDER BY e.tenant_id, e.execution_id
                FOR UPDATE OF e SKIP LOCKED
            )
            SELECT array_agg(tenant_id), array_agg(execution_id) INTO c_tenants, c_ids
            FROM (SELECT DISTINCT tenant_id, execution_id FROM candidates) d;

            SELECT array_agg(x.tenant_id), array_agg(x.execution_id) INTO c_tenants, c_ids
            FROM flowfabric_cancel(c_tenants, c_ids, 'flow: a sibling satisfied the join') x;

            UPDATE flow_groups g SET cancel_pending = true
            FROM unnest(cr_tenants, cr_ids) AS s(tenant_id, downstream_id)
            WHERE g.tenant_id = s.tenant_id AND g.downstream_id = s.downstream_id
              AND EXISTS (
                  SELECT 1 FROM flow_edges ed JOIN executions u
                      ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id
                  WHERE ed.tenant_id = g.tenant_id AND ed.downstream_id = g.downstream_id
                    AND ed.state = 'pending' AND u.lifecycle_phase <> 'terminal');
        END IF;

        -- 6. Go again over what this round ended.
        f_tenants := coalesce(s_tenants, '{}') || coalesce(c_tenants, '{}');
        f_ids := coalesce(s_ids, '{}') || coalesce(c_ids, '{}');
        f_outcomes := array_fill('skipped'::text, ARRAY[coalesce(cardinality(s_ids), 0)])
                   || array_fill('cancelled'::text, ARRAY[coalesce(cardinality(c_ids), 0)]);
    END LOOP;
END
$$;

CREATE FUNCTION flowfabric_on_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Events written by flowfabric_resolve itself are walked by its own loop.
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    PERFORM flowfabric_resolve(array_agg(f.tenant_id), array_agg(f.execution_id),
                               array_agg(f.outcome))
    FROM finished f
    WHERE EXISTS (SELECT 1 FROM flow_edges ed
                  WHERE ed.tenant_id = f.tenant_id AND ed.upstream_id = f.execution_id
                    AND ed.state = 'pending')
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER completion_events_resolve_flows
    AFTER INSERT ON completion_events
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_on_completion();
