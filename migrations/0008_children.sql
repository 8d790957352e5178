-- Child executions: a running guest spawns executions into its flow and may
-- suspend until they have all ended (`wait-children`).
--
-- A parent waiting on children is suspended with blocking reason
-- `waiting_for_children`. The transaction that ends its last child resumes it,
-- through the completion outbox trigger like flow resolution, so every way a
-- child can end (worker, operator, scanner, skip, sibling cancel) counts. The
-- parent's row is locked with SKIP LOCKED there: a child never waits for its
-- parent's lock (the parent's own transaction may be waiting for the child's),
-- and a parent skipped that way is resumed by the `wake_parents` scanner pass.

ALTER TABLE executions ADD COLUMN parent_id uuid;
-- Counting a parent's unfinished children.
CREATE INDEX executions_children_idx ON executions (tenant_id, parent_id, lifecycle_phase)
    WHERE parent_id IS NOT NULL;
-- The scanner's walk over parents waiting on children.
CREATE INDEX executions_waiting_children_idx ON executions (tenant_id, execution_id)
    WHERE lifecycle_phase = 'suspended' AND blocking_reason = 'waiting_for_children';

-- Resume the parents (pairs of tenant and id) that wait on children and have
-- none left unfinished; returns how many resumed.
CREATE FUNCTION flowfabric_wake_parents(p_tenants uuid[], p_ids uuid[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    w_tenants uuid[]; w_ids uuid[]; woken integer;
BEGIN
    SELECT array_agg(p.tenant_id), array_agg(p.execution_id) INTO w_tenants, w_ids
    FROM (
        SELECT e.tenant_id, e.execution_id FROM executions e
        JOIN unnest(p_tenants, p_ids) AS w(tenant_id, execution_id)
            ON e.tenant_id = w.tenant_id AND e.execution_id = w.execution_id
        WHERE e.lifecycle_phase = 'suspended' AND e.blocking_reason = 'waiting_for_children'
        ORDER BY e.tenant_id, e.execution_id
        FOR UPDATE OF e SKIP LOCKED
    ) p;
    IF w_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- A new statement, so it sees every child that committed before the locks
    -- were taken; one committing later resumes the parent from its own trigger.
    WITH resumed AS (
        UPDATE executions e
        SET lifecycle_phase = 'runnable', eligibility_state = 'eligible_now',
            blocking_reason = 'waiting_for_worker', attempt_state = 'pending_resume_attempt',
            suspension = NULL, suspension_timeout_at = NULL, eligible_at = now(),
            updated_at = now()
        FROM unnest(w_tenants, w_ids) AS w(tenant_id, execution_id)
        WHERE e.tenant_id = w.tenant_id AND e.execution_id = w.execution_id
          AND NOT EXISTS (
              SELECT 1 FROM executions c
              WHERE c.tenant_id = e.tenant_id AND c.parent_id = e.execution_id
                AND c.lifecycle_phase <> 'terminal')
        RETURNING 1
    )
    SELECT count(*) INTO woken FROM resumed;
    IF woken > 0 THEN
        PERFORM pg_notify('flowfabric_work', '');
    END IF;
    RETURN woken;
END
$$;

-- The completion trigger now also wakes parents. It does so at every depth:
-- children skipped or cancelled inside flow resolution count as well.
CREATE OR REPLACE FUNCTION flowfabric_on_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flowfabric_wake_parents(array_agg(c.tenant_id), array_agg(c.parent_id))
    FROM (
        SELECT DISTINCT e.tenant_id, e.parent_id FROM finished f
        JOIN executions e ON e.tenant_id = f.tenant_id AND e.execution_id = f.execution_id
        WHERE e.parent_id IS NOT NULL
    ) c
    HAVING count(*) > 0;
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
