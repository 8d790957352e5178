CREATE OR REPLACE FUNCTION public.flowfabric_outcome_code(outcome text)
 RETURNS "char"
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE outcome WHEN 'success' THEN 's' WHEN 'failed' THEN 'f'
        WHEN 'cancelled' THEN 'c' WHEN 'expired' THEN 'e' WHEN 'skipped' THEN 'k' END::"char"
$function$
