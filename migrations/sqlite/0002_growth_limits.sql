-- Payload bytes of the frames the current attempt appended, beside
-- `frame_seq`, so the per-attempt cap is one comparison in the append. It is
-- reset by the first append of an attempt (`frame_seq` starts again at 0 for
-- each new attempt and carries on across a resume). Tenants' new limits live
-- in their `limits` JSON and need no column.
ALTER TABLE executions ADD COLUMN frame_bytes INTEGER NOT NULL DEFAULT 0;

-- A parent's children, counted against `max_children_per_execution` when it
-- spawns another.
CREATE INDEX executions_children_idx ON executions (tenant_id, parent_id)
    WHERE parent_id IS NOT NULL;
