-- Operator replay of a terminal execution (a new attempt of type `replay`),
-- capped by the policy's `max_replays`.
ALTER TABLE executions ADD COLUMN replay_count integer NOT NULL DEFAULT 0;
