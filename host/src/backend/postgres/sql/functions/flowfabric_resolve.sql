CREATE OR REPLACE FUNCTION public.flowfabric_resolve(p_tenants uuid[], p_ids uuid[], p_outcomes text[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$
