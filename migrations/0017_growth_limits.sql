-- Per-tenant overrides of the limits on what one execution or flow may grow:
-- result bytes, frame bytes per attempt, children, flow members, waitpoints;
-- and the tenant's storage quota.
-- NULL means the installation's default applies; a tenant's value can only
-- tighten it.
ALTER TABLE tenants
    ADD COLUMN max_result_bytes             integer CHECK (max_result_bytes > 0),
    ADD COLUMN max_frame_bytes_per_attempt  bigint  CHECK (max_frame_bytes_per_attempt > 0),
    ADD COLUMN max_children_per_execution   integer CHECK (max_children_per_execution > 0),
    ADD COLUMN max_flow_members             integer CHECK (max_flow_members > 0),
    ADD COLUMN max_waitpoints_per_execution integer CHECK (max_waitpoints_per_execution > 0),
    ADD COLUMN max_stored_bytes             bigint  CHECK (max_stored_bytes > 0);

-- Payload bytes of the frames the current attempt appended, beside
-- `frame_seq`, so the per-attempt cap is one comparison in the fenced append.
ALTER TABLE executions ADD COLUMN frame_bytes bigint NOT NULL DEFAULT 0;
