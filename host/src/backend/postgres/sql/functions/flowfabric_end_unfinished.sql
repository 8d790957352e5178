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
    RETURNING e.tenant_id, e.execution_id, e.attempt_index,
        e.flow_id IS NOT NULL OR e.parent_id IS NOT NULL AS linked
),
attempt AS (
    UPDATE attempts a SET state = p_outcome, ended_at = now()
    FROM moved m
    WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id
      AND a.attempt_index = m.attempt_index AND a.state IN ('running', 'suspended')
),
event AS (
    INSERT INTO completion_event_batches (tenant_id, execution_ids, attempt_indexes, outcomes, linked)
    SELECT m.tenant_id, array_agg(m.execution_id), array_agg(m.attempt_index),
        array_agg(flowfabric_outcome_code(p_outcome)), array_agg(m.linked)
    FROM (SELECT *, (row_number() OVER () - 1) / 1000000 AS part FROM moved) m
    GROUP BY m.tenant_id, m.part
    RETURNING event_id + cardinality(execution_ids) - 1 AS last_event_id
),
event_notify AS (
    SELECT pg_notify('flowfabric_completion', max(last_event_id)::text) FROM event
    HAVING count(*) > 0
),
revoke AS (SELECT pg_notify('flowfabric_revoked', execution_id::text) FROM moved)
SELECT tenant_id, execution_id FROM moved
WHERE (SELECT count(*) FROM event_notify) + (SELECT count(*) FROM revoke) >= 0
$function$
