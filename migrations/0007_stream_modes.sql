-- Stream modes beyond `durable`: a rolling summary document per attempt,
-- merged from `summary` frames (JSON merge patch, RFC 7396), and
-- `best_effort` frames, of which only the newest window is kept.

CREATE TABLE stream_summaries (
    tenant_id         uuid NOT NULL,
    execution_id      uuid NOT NULL,
    attempt_index     integer NOT NULL,
    document          jsonb NOT NULL,
    -- 1 after the first patch, +1 per patch.
    version           bigint NOT NULL,
    first_applied_at  timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, execution_id, attempt_index),
    FOREIGN KEY (tenant_id, execution_id) REFERENCES executions (tenant_id, execution_id)
        ON DELETE CASCADE
);

-- Trimming walks only the best-effort frames still kept.
CREATE INDEX frames_best_effort_idx ON frames (tenant_id, execution_id, attempt_index, seq)
    WHERE mode = 'best_effort';

-- RFC 7396: an object patch merges key by key, `null` removes a key, anything
-- else replaces. The string "__ff_null__" stands for a literal null value.
CREATE FUNCTION flowfabric_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
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
$$;
