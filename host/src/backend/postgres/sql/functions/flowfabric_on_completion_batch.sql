CREATE OR REPLACE FUNCTION public.flowfabric_on_completion_batch()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
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
$function$
