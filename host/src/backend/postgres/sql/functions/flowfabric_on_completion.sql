CREATE OR REPLACE FUNCTION public.flowfabric_on_completion()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    IF EXISTS (SELECT 1 FROM finished WHERE linked IS NOT FALSE) THEN
        PERFORM flowfabric_completed(array_agg(tenant_id), array_agg(execution_id),
                                     array_agg(outcome))
        FROM finished WHERE linked IS NOT FALSE;
    END IF;
    RETURN NULL;
END
$function$
