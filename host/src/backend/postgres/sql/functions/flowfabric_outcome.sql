CREATE OR REPLACE FUNCTION public.flowfabric_outcome(code "char")
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE code WHEN 's' THEN 'success' WHEN 'f' THEN 'failed'
        WHEN 'c' THEN 'cancelled' WHEN 'e' THEN 'expired' WHEN 'k' THEN 'skipped' END
$function$
