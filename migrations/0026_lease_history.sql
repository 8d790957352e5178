-- An execution's lease history (the dashboard's timeline): its events by
-- execution, in order. Costs one more index entry per lease event.
CREATE INDEX lease_events_execution_idx ON lease_events (tenant_id, execution_id, event_id);
