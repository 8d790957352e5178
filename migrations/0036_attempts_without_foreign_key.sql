-- An attempt's row no longer checks for its execution's by foreign key.
--
-- The check ran once for every attempt a claim inserts: a query of its own
-- per row that locked the execution's new version again (`FOR KEY SHARE`),
-- although the claim's own statement holds that row locked and has just
-- updated it. Attempts are only ever written by statements that lock their
-- execution's row, so the row always exists; the one thing the key did
-- besides was cascade retention's deletes, and retention now deletes an
-- execution's attempts beside it (`backend/postgres/retention.rs`).
ALTER TABLE attempts DROP CONSTRAINT attempts_tenant_id_execution_id_fkey;
