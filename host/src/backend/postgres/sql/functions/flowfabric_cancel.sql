CREATE OR REPLACE FUNCTION public.flowfabric_cancel(p_tenants uuid[], p_ids uuid[], p_reason text)
 RETURNS TABLE(tenant_id uuid, execution_id uuid)
 LANGUAGE sql
AS $function$
SELECT * FROM flowfabric_end_unfinished(p_tenants, p_ids, 'cancelled', p_reason)
$function$
