CREATE OR REPLACE FUNCTION public.flowfabric_end_unfinished(p_tenants uuid[], p_ids uuid[], p_outcome text, p_reason text)
 RETURNS TABLE(tenant_id uuid, execution_id uuid)
 LANGUAGE sql
AS $function$
WITH target AS (
    SELECT * FROM unnest(p_tenants, p_ids) AS t(tenant_id, execution_id)
),
moved AS (
    UPDATE executions e SET lifecycle_phase = 'terminal', ownership_state = 'unowned',
        eligibility_state = 'not_applicable', blocking_reason = NULL,
        terminal_outcome = p_outcome, attempt_state = 'attempt_terminal',
        lease_id = NULL, lease_expires_at = NULL, attempt_timeout_at = NULL,
        cancellation_reason = p_reason, suspension = NULL, suspension_timeout_at = NULL,
        finished_at = now(), updated_at = now()
    FROM target t
    WHERE e.tenant_id = t.tenant_id AND e.execution_id = t.execution_id
      AND e.lifecycle_phase <> 'terminal'
    RETURNING e.tenant_id, e.execution_id, e.attempt_index
),
attempt AS (
    UPDATE attempts a SET state = p_outcome, ended_at = now()
    FROM moved m
    WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id
      AND a.attempt_index = m.attempt_index AND a.state IN ('running', 'suspended')
),
event AS (
    INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome)
    SELECT tenant_id, execution_id, attempt_index, p_outcome FROM moved
    RETURNING event_id
),
event_notify AS (
    SELECT pg_notify('flowfabric_completion', max(event_id)::text) FROM event
    HAVING count(*) > 0
),
revoke AS (SELECT pg_notify('flowfabric_revoked', execution_id::text) FROM moved)
SELECT tenant_id, execution_id FROM moved
WHERE (SELECT count(*) FROM event_notify) + (SELECT count(*) FROM revoke) >= 0
$function$
