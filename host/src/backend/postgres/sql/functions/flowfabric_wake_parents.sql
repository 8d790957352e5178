CREATE OR REPLACE FUNCTION public.flowfabric_wake_parents(p_tenants uuid[], p_ids uuid[])
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    w_tenants uuid[]; w_ids uuid[]; woken integer;
BEGIN
    SELECT array_agg(p.tenant_id), array_agg(p.execution_id) INTO w_tenants, w_ids
    FROM (
        SELECT e.tenant_id, e.execution_id FROM executions e
        JOIN unnest(p_tenants, p_ids) AS w(tenant_id, execution_id)
            ON e.tenant_id = w.tenant_id AND e.execution_id = w.execution_id
        WHERE e.lifecycle_phase = 'suspended' AND e.blocking_reason = 'waiting_for_children'
        ORDER BY e.tenant_id, e.execution_id
        FOR UPDATE OF e SKIP LOCKED
    ) p;
    IF w_ids IS NULL THEN
        RETURN 0;
    END IF;
    -- A new statement, so it sees every child that committed before the locks
    -- were taken; one committing later resumes the parent from its own trigger.
    WITH resumed AS (
        UPDATE executions e
        SET lifecycle_phase = 'runnable', eligibility_state = 'eligible_now',
            blocking_reason = 'waiting_for_worker', attempt_state = 'pending_resume_attempt',
            suspension = NULL, suspension_timeout_at = NULL, eligible_at = now(),
            updated_at = now()
        FROM unnest(w_tenants, w_ids) AS w(tenant_id, execution_id)
        WHERE e.tenant_id = w.tenant_id AND e.execution_id = w.execution_id
          AND NOT EXISTS (
              SELECT 1 FROM executions c
              WHERE c.tenant_id = e.tenant_id AND c.parent_id = e.execution_id
                AND c.lifecycle_phase <> 'terminal')
        RETURNING 1
    )
    SELECT count(*) INTO woken FROM resumed;
    IF woken > 0 THEN
        PERFORM pg_notify('flowfabric_work', '');
    END IF;
    RETURN woken;
END
$function$
