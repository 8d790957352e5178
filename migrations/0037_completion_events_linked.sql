-- Whether an ended execution belonged to a flow or had a parent, recorded on
-- its completion event by the statement that ends it.
--
-- The outbox's trigger wakes parents and resolves flows. It looked up every
-- event's execution for its parent and flow, although the statement that
-- wrote the event had just updated that row: most executions have neither,
-- and each lookup was a probe of `executions` for nothing. The statements
-- that end an execution (`rows::completion_outbox`) now say so; events
-- written without it (the SQL functions' own, NULL) are looked up as before.
ALTER TABLE completion_events ADD COLUMN linked boolean;

CREATE OR REPLACE FUNCTION flowfabric_on_completion() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p_tenants uuid[]; p_ids uuid[];
    f_tenants uuid[]; f_ids uuid[]; f_outcomes text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM finished WHERE linked IS NOT FALSE) THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(f.tenant_id) FILTER (WHERE e.parent_id IS NOT NULL),
           array_agg(e.parent_id) FILTER (WHERE e.parent_id IS NOT NULL),
           array_agg(f.tenant_id) FILTER (WHERE e.flow_id IS NOT NULL),
           array_agg(f.execution_id) FILTER (WHERE e.flow_id IS NOT NULL),
           array_agg(f.outcome) FILTER (WHERE e.flow_id IS NOT NULL)
    INTO p_tenants, p_ids, f_tenants, f_ids, f_outcomes
    FROM finished f
    CROSS JOIN LATERAL (
        SELECT x.parent_id, x.flow_id FROM executions x
        WHERE x.tenant_id = f.tenant_id AND x.execution_id = f.execution_id
        LIMIT 1) e
    WHERE f.linked IS NOT FALSE;
    -- Siblings ending together name their parent twice; it is woken once.
    IF p_ids IS NOT NULL THEN
        PERFORM flowfabric_wake_parents(p_tenants, p_ids);
    END IF;
    -- Events written by flowfabric_resolve itself are walked by its own loop.
    IF f_ids IS NOT NULL AND pg_trigger_depth() = 1 THEN
        PERFORM flowfabric_resolve(f_tenants, f_ids, f_outcomes);
    END IF;
    RETURN NULL;
END
$$;
