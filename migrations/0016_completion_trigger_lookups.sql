-- The completion trigger looks up what it needs by key, whatever the
-- statistics say.
--
-- The trigger joined a statement's completions to `executions` (for their
-- parents) and semi-joined them to `flow_edges` (for pending edges). PL/pgSQL
-- plans those joins once per connection, from the statistics of that moment.
-- Planned while a table was young, they stayed hash joins over sequential
-- scans as it grew: with ~10,000 executions, every completion spent ~40 ms
-- scanning them (auto_explain, `bench flow` at eight claim loops). A lateral
-- subquery with a LIMIT is never pulled up into a join, so each completion is
-- looked up on the primary key, one index probe per row, at any size.
--
-- A statement trigger also fires for an insert of no rows, which flow
-- resolution makes on every hop (its skip step); it now returns at once.
CREATE OR REPLACE FUNCTION flowfabric_on_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM finished) THEN
        RETURN NULL;
    END IF;
    PERFORM flowfabric_wake_parents(array_agg(c.tenant_id), array_agg(c.parent_id))
    FROM (
        SELECT DISTINCT f.tenant_id, p.parent_id FROM finished f
        CROSS JOIN LATERAL (
            SELECT e.parent_id FROM executions e
            WHERE e.tenant_id = f.tenant_id AND e.execution_id = f.execution_id
            LIMIT 1) p
        WHERE p.parent_id IS NOT NULL
    ) c
    HAVING count(*) > 0;
    -- Events written by flowfabric_resolve itself are walked by its own loop.
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    PERFORM flowfabric_resolve(array_agg(f.tenant_id), array_agg(f.execution_id),
                               array_agg(f.outcome))
    FROM finished f
    CROSS JOIN LATERAL (
        SELECT 1 FROM flow_edges ed
        WHERE ed.tenant_id = f.tenant_id AND ed.upstream_id = f.execution_id
          AND ed.state = 'pending'
        LIMIT 1) pending
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;
