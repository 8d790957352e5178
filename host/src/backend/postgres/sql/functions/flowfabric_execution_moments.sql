CREATE OR REPLACE FUNCTION public.flowfabric_execution_moments(tenant uuid, executions uuid[])
 RETURNS bigint[]
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE STRICT
AS $function$
DECLARE
    tenant_bits bigint := ('x' || right(tenant::text, 8))::bit(32)::bigint << 32;
BEGIN
    RETURN array(
        SELECT tenant_bits
            | ((('x' || translate(left(e::text, 13), '-', ''))::bit(48)::bigint >> 4) & 4294967295)
        FROM unnest(executions) e);
END
$function$
