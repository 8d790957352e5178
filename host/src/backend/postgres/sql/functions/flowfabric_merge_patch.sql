CREATE OR REPLACE FUNCTION public.flowfabric_merge_patch(target jsonb, patch jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 IMMUTABLE
AS $function$
DECLARE
    k text;
    v jsonb;
    merged jsonb;
BEGIN
    IF patch = '"__ff_null__"'::jsonb THEN
        RETURN 'null'::jsonb;
    END IF;
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    merged := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            merged := merged - k;
        ELSE
            merged := jsonb_set(merged, ARRAY[k], flowfabric_merge_patch(merged -> k, v));
        END IF;
    END LOOP;
    RETURN merged;
END
$function$
