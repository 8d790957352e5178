-- Cancelling a flow marks it, then cancels its live members one statement at
-- a time (each waits for its member's row lock, so no transaction holds many
-- member locks at once). If the process dies in between, the members left
-- behind are found through `cancel_phases` (the lifecycle phases the cancel
-- policy ends; NULL once nothing is left to cancel) and cancelled by the
-- sibling-cancel scanner pass.
ALTER TABLE flows ADD COLUMN cancel_phases text[];
CREATE INDEX flows_cancel_unfinished_idx ON flows (tenant_id, flow_id)
    WHERE cancel_phases IS NOT NULL;
