-- Executions a live stream follows, and until when (each follower's
-- process renews its rows while the stream lasts). A frame or a step
-- notifies `flowfabric_updates` only for these: every process that listens
-- reads each notification in a transaction of its own, so a notification
-- nobody follows cost the server as much as the frame's own write.
-- Rows are few (one per followed execution, and a tenant's open streams
-- are bounded) and short-lived; expired ones are deleted by any process's
-- renewal pass.
CREATE TABLE followed_executions (
    tenant_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, execution_id)
);
