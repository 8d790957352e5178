CREATE OR REPLACE FUNCTION public.flowfabric_completed(p_tenants uuid[], p_ids uuid[], p_outcomes text[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$
