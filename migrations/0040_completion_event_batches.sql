-- The completion outbox in one row per tenant per statement, not one per
-- event, as lease history is since migration 0038.
--
-- Every ended execution wrote an outbox row with two index entries, about
-- 300 bytes of write-ahead log a run, although the statements that end
-- executions end a worker's whole completion batch at once. Each such
-- statement now writes its events for each tenant as one row of parallel
-- arrays.
--
-- Every event keeps its own id and cursor, as lease events do: a row's
-- `event_id` is its first event's id, its events are that id and the ones
-- after it in array order, ids step by 2^20 a row from a sequence started
-- above every id `completion_events` has given, and a row holds fewer than
-- 2^20 events (writers split larger statements).
--
-- `completion_events` stays, with what it holds, and keeps its trigger:
-- readers take both tables, so no event written before this migration (or
-- by a process of the previous build while it is replaced) is lost, and
-- the previous build keeps working.
--
-- Outcomes are stored as one-byte codes: s success, f failed, c cancelled,
-- e expired, k skipped (`flowfabric_outcome_code` and `flowfabric_outcome`
-- translate; both are inlined where they are used).
CREATE FUNCTION flowfabric_outcome_code(outcome text) RETURNS "char"
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE outcome WHEN 'success' THEN 's' WHEN 'failed' THEN 'f'
        WHEN 'cancelled' THEN 'c' WHEN 'expired' THEN 'e' WHEN 'skipped' THEN 'k' END::"char"
$$;

CREATE FUNCTION flowfabric_outcome(code "char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE code WHEN 's' THEN 'success' WHEN 'f' THEN 'failed'
        WHEN 'c' THEN 'cancelled' WHEN 'e' THEN 'expired' WHEN 'k' THEN 'skipped' END
$$;

CREATE SEQUENCE completion_event_batch_seq;
SELECT setval('completion_event_batch_seq', coalesce(max(event_id), 0) / 1048576 + 1)
FROM completion_events;

CREATE TABLE completion_event_batches (
    tenant_id       uuid NOT NULL,
    event_id        bigint NOT NULL DEFAULT nextval('completion_event_batch_seq') * 1048576,
    txid            bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    execution_ids   uuid[] NOT NULL,
    attempt_indexes integer[] NOT NULL,
    outcomes        "char"[] NOT NULL,
    -- Whether each execution has a flow or a parent (NULL: not known, looked
    -- up), as `completion_events.linked`.
    linked          boolean[] NOT NULL,
    PRIMARY KEY (tenant_id, txid, event_id),
    CHECK (cardinality(execution_ids) BETWEEN 1 AND 1048575
        AND cardinality(attempt_indexes) = cardinality(execution_ids)
        AND cardinality(outcomes) = cardinality(execution_ids)
        AND cardinality(linked) = cardinality(execution_ids)),
    CHECK (outcomes <@ '{s,f,c,e,k}'::"char"[])
);
ALTER SEQUENCE completion_event_batch_seq OWNED BY completion_event_batches.event_id;
ALTER TABLE completion_event_batches SET (toast_tuple_target = 8160);
-- Every tenant's events in cursor order, for the process-wide dispatcher.
CREATE INDEX completion_event_batches_txid_idx ON completion_event_batches (txid, event_id);

-- What an outbox trigger does with the executions a statement ended (those
-- with a flow or a parent, or not known to have neither): wake parents, and
-- resolve the flows they belong to. One rule for both outbox tables.
CREATE FUNCTION flowfabric_completed(p_tenants uuid[], p_ids uuid[], p_outcomes text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p_parent_tenants uuid[]; p_parents uuid[];
    f_tenants uuid[]; f_ids uuid[]; f_outcomes text[];
BEGIN
    SELECT array_agg(f.tenant_id) FILTER (WHERE e.parent_id IS NOT NULL),
           array_agg(e.parent_id) FILTER (WHERE e.parent_id IS NOT NULL),
           array_agg(f.tenant_id) FILTER (WHERE e.flow_id IS NOT NULL),
           array_agg(f.execution_id) FILTER (WHERE e.flow_id IS NOT NULL),
           array_agg(f.outcome) FILTER (WHERE e.flow_id IS NOT NULL)
    INTO p_parent_tenants, p_parents, f_tenants, f_ids, f_outcomes
    FROM unnest(p_tenants, p_ids, p_outcomes) AS f(tenant_id, execution_id, outcome)
    CROSS JOIN LATERAL (
        SELECT x.parent_id, x.flow_id FROM executions x
        WHERE x.tenant_id = f.tenant_id AND x.execution_id = f.execution_id
        LIMIT 1) e;
    -- Siblings ending together name their parent twice; it is woken once.
    IF p_parents IS NOT NULL THEN
        PERFORM flowfabric_wake_parents(p_parent_tenants, p_parents);
    END IF;
    -- Events written by flowfabric_resolve itself are walked by its own loop.
    IF f_ids IS NOT NULL AND pg_trigger_depth() = 1 THEN
        PERFORM flowfabric_resolve(f_tenants, f_ids, f_outcomes);
    END IF;
END
$$;

-- The previous build's outbox rows, one an event.
CREATE OR REPLACE FUNCTION flowfabric_on_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM finished WHERE linked IS NOT FALSE) THEN
        PERFORM flowfabric_completed(array_agg(tenant_id), array_agg(execution_id),
                                     array_agg(outcome))
        FROM finished WHERE linked IS NOT FALSE;
    END IF;
    RETURN NULL;
END
$$;

-- Rows of events: a tenant without flows or parents says so for every event
-- of a row, and the trigger reads nothing else.
CREATE FUNCTION flowfabric_on_completion_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM finished WHERE (false = ALL(linked)) IS NOT TRUE) THEN
        PERFORM flowfabric_completed(array_agg(f.tenant_id), array_agg(u.execution_id),
                                     array_agg(flowfabric_outcome(u.outcome)))
        FROM finished f
        CROSS JOIN LATERAL unnest(f.execution_ids, f.outcomes, f.linked)
            AS u(execution_id, outcome, linked)
        WHERE u.linked IS NOT FALSE;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER completion_event_batches_resolve_flows
    AFTER INSERT ON completion_event_batches
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION flowfabric_on_completion_batch();

-- The SQL functions that end executions write rows of events too.
CREATE OR REPLACE FUNCTION flowfabric_end_unfinished(p_tenants uuid[], p_ids uuid[],
                                                     p_outcome text, p_reason text)
RETURNS TABLE(tenant_id uuid, execution_id uuid) LANGUAGE sql AS $$
WITH target AS (
    SELECT * FROM unnest(p_tenants, p_ids) AS t(tenant_id, execution_id)
),
moved AS (
    UPDATE executions e SET lifecycle_phase = 'terminal', ownership_state = 'unowned',
        eligibility_state = 'not_applicable', blocking_reason = NULL,
        terminal_outcome = p_outcome, attempt_state = 'attempt_terminal',
        lease_id = NULL, lease_expires_at = NULL, attempt_timeout_at = NULL,
        cancellation_reason = p_reason, suspension = NULL, suspension_timeout_at = NULL,
        finished_at = now(), updated_at = now()
    FROM target t
    WHERE e.tenant_id = t.tenant_id AND e.execution_id = t.execution_id
      AND e.lifecycle_phase <> 'terminal'
    RETURNING e.tenant_id, e.execution_id, e.attempt_index,
        e.flow_id IS NOT NULL OR e.parent_id IS NOT NULL AS linked
),
attempt AS (
    UPDATE attempts a SET state = p_outcome, ended_at = now()
    FROM moved m
    WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id
      AND a.attempt_index = m.attempt_index AND a.state IN ('running', 'suspended')
),
event AS (
    INSERT INTO completion_event_batches (tenant_id, execution_ids, attempt_indexes, outcomes, linked)
    SELECT m.tenant_id, array_agg(m.execution_id), array_agg(m.attempt_index),
        array_agg(flowfabric_outcome_code(p_outcome)), array_agg(m.linked)
    FROM (SELECT *, (row_number() OVER () - 1) / 1000000 AS part FROM moved) m
    GROUP BY m.tenant_id, m.part
    RETURNING event_id + cardinality(execution_ids) - 1 AS last_event_id
),
event_notify AS (
    SELECT pg_notify('flowfabric_completion', max(last_event_id)::text) FROM event
    HAVING count(*) > 0
),
revoke AS (SELECT pg_notify('flowfabric_revoked', execution_id::text) FROM moved)
SELECT tenant_id, execution_id FROM moved
WHERE (SELECT count(*) FROM event_notify) + (SELECT count(*) FROM revoke) >= 0
$$;

-- Flows skip the downstreams they can no longer run, writing rows of events.
CREATE OR REPLACE FUNCTION flowfabric_resolve(p_tenants uuid[], p_ids uuid[], p_outcomes text[])
 RETURNS void
 LANGUAGE plpgsql
AS $$
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
            RETURNING e.tenant_id, e.execution_id, e.attempt_index,
                e.flow_id IS NOT NULL OR e.parent_id IS NOT NULL AS linked
        ),
        event AS (
            INSERT INTO completion_event_batches (tenant_id, execution_ids, attempt_indexes,
                                                  outcomes, linked)
            SELECT m.tenant_id, array_agg(m.execution_id), array_agg(m.attempt_index),
                array_agg(flowfabric_outcome_code('skipped')), array_agg(m.linked)
            FROM (SELECT *, (row_number() OVER () - 1) / 1000000 AS part FROM moved) m
            GROUP BY m.tenant_id, m.part
            RETURNING event_id + cardinality(execution_ids) - 1 AS last_event_id
        )
        SELECT (SELECT array_agg(tenant_id) FROM moved), (SELECT array_agg(execution_id) FROM moved),
            max(last_event_id)
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
