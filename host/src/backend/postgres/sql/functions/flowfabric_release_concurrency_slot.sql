CREATE OR REPLACE FUNCTION public.flowfabric_release_concurrency_slot()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
DECLARE
    slot_name text := CASE OLD.concurrency_held WHEN 'kind' THEN OLD.kind ELSE OLD.lane END;
BEGIN
    UPDATE concurrency_slots s SET running = greatest(s.running - 1, 0)
    WHERE s.tenant_id = OLD.tenant_id AND s.scope = OLD.concurrency_held
      AND s.name = slot_name AND s.key = OLD.concurrency_key;
    UPDATE executions e SET eligibility_state = 'eligible_now',
        blocking_reason = 'waiting_for_worker', updated_at = now()
    WHERE e.ctid = (
        SELECT x.ctid FROM executions x
        WHERE x.tenant_id = OLD.tenant_id AND x.concurrency_key = OLD.concurrency_key
          AND x.eligibility_state = 'blocked_by_concurrency_key'
          AND slot_name = CASE OLD.concurrency_held WHEN 'kind' THEN x.kind ELSE x.lane END
        ORDER BY x.priority DESC, x.eligible_at, x.execution_id
        LIMIT 1
        FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        PERFORM pg_notify('flowfabric_work', '');
    END IF;
    RETURN NULL;
END
$function$
