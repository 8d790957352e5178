-- The completion trigger looks up what it needs by key, whatever the
-- statistics say, and in one statement.
--
-- The trigger joined a statement's completions to `executions` (for their
-- parents) and semi-joined them to `flow_edges` (for pending edges). PL/pgSQL
-- plans those joins once per connection, from the statistics of that moment.
-- Planned while a table was young, they stayed hash joins over sequential
-- scans as it grew: with ~10,000 executions, every completion spent ~40 ms
-- scanning them (auto_explain, `bench flow` at eight claim loops). Now one
-- lateral subquery with a LIMIT, which is never pulled up into a join, reads
-- each completion's row on the primary key, at any size: its parent, and its
-- flow. Only flow members go on to resolution, which finds their pending
-- edges itself, and nothing else runs for a completion with neither (most of
-- them): one statement where there were three, and none of them for the
-- insert of no rows that flow resolution makes on every hop.
CREATE OR REPLACE FUNCTION flowfabric_on_completion() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p_tenants uuid[]; p_ids uuid[];
    f_tenants uuid[]; f_ids uuid[]; f_outcomes text[];
BEGIN
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
        LIMIT 1) e;
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
