-- Lease history in one row per tenant per statement, not one per event.
--
-- Every claim and every end wrote a lease event of its own: two rows a run,
-- each with two index entries, about 760 bytes of write-ahead log a run (a
-- quarter of the total) for history nobody reads on the hot path. A claim or
-- completion batch changes many leases in one statement, and the trigger
-- that records them runs once per statement, so it now writes the
-- statement's events for each tenant as one row of parallel arrays.
--
-- Every event keeps its own id and cursor. A row's `event_id` is its first
-- event's id; the row's events are that id and the ones after it, in array
-- order. Ids come from a sequence stepped by 2^20 per row, starting above
-- every id `lease_events` has given, and a row holds fewer than 2^20 events
-- (the trigger splits larger statements), so rows' id ranges never overlap
-- and ids grow within a transaction as before: a cursor `(txid, event id)`
-- means what it meant.
--
-- `lease_events` stays, with what it holds: readers take both tables, so no
-- event written before this migration (or by a statement of the previous
-- build that was already running when it committed) is lost, and processes
-- of the previous build keep working while they are replaced (they see only
-- the events in the old table until then).
--
-- An execution's timeline is found by a GIN index on the rows' execution
-- ids (left to its pending list on insert, merged in the background),
-- instead of a btree entry per event.
--
-- Kinds and phases are stored as one-byte codes (decoded by the readers):
--   kind:  a acquired, c reclaimed, n renewed, r released, e expired, v revoked
--   phase: u submitted, r runnable, a active, s suspended, t terminal
CREATE SEQUENCE lease_event_batch_seq;
SELECT setval('lease_event_batch_seq', coalesce(max(event_id), 0) / 1048576 + 1)
FROM lease_events;

CREATE TABLE lease_event_batches (
    tenant_id         uuid NOT NULL,
    event_id          bigint NOT NULL DEFAULT nextval('lease_event_batch_seq') * 1048576,
    txid              bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    execution_ids     uuid[] NOT NULL,
    attempt_indexes   integer[] NOT NULL,
    lease_epochs      bigint[] NOT NULL,
    kinds             "char"[] NOT NULL,
    lease_expires_ats timestamptz[] NOT NULL,
    phases            "char"[] NOT NULL,
    PRIMARY KEY (tenant_id, txid, event_id),
    CHECK (cardinality(execution_ids) BETWEEN 1 AND 1048575
        AND cardinality(attempt_indexes) = cardinality(execution_ids)
        AND cardinality(lease_epochs) = cardinality(execution_ids)
        AND cardinality(kinds) = cardinality(execution_ids)
        AND cardinality(lease_expires_ats) = cardinality(execution_ids)
        AND cardinality(phases) = cardinality(execution_ids)),
    CHECK (kinds <@ '{a,c,n,r,e,v}'::"char"[]),
    CHECK (phases <@ '{u,r,a,s,t}'::"char"[])
);
ALTER SEQUENCE lease_event_batch_seq OWNED BY lease_event_batches.event_id;
-- Rows stay whole in their page up to its size (a batch of ~100 events is
-- ~4 kB) rather than being split out to TOAST above 2 kB.
ALTER TABLE lease_event_batches SET (toast_tuple_target = 8160);
CREATE INDEX lease_event_batches_execution_idx ON lease_event_batches USING gin (execution_ids);

CREATE OR REPLACE FUNCTION flowfabric_lease_events() RETURNS trigger LANGUAGE plpgsql
SET enable_nestloop = off AS $$
DECLARE
    notified integer;
BEGIN
    WITH changed AS (
        INSERT INTO lease_event_batches (tenant_id, execution_ids, attempt_indexes, lease_epochs,
                                         kinds, lease_expires_ats, phases)
        SELECT e.tenant_id, array_agg(e.execution_id), array_agg(e.attempt_index),
            array_agg(e.lease_epoch), array_agg(e.kind), array_agg(e.lease_expires_at),
            array_agg(e.phase)
        FROM (
            SELECT n.tenant_id, n.execution_id, n.attempt_index, n.lease_epoch,
                CASE
                    WHEN o.lease_id IS NULL AND o.attempt_state = 'attempt_interrupted' THEN 'c'
                    WHEN o.lease_id IS NULL THEN 'a'
                    WHEN n.lease_id IS NOT NULL THEN 'n'
                    WHEN n.reclaim_count > o.reclaim_count THEN 'e'
                    WHEN n.ownership_state = 'lease_revoked'
                         OR n.terminal_outcome IN ('cancelled', 'expired', 'skipped') THEN 'v'
                    ELSE 'r'
                END::"char" AS kind,
                n.lease_expires_at,
                CASE n.lifecycle_phase WHEN 'submitted' THEN 'u' WHEN 'runnable' THEN 'r'
                    WHEN 'active' THEN 'a' WHEN 'suspended' THEN 's' WHEN 'terminal' THEN 't'
                END::"char" AS phase,
                -- Splits a statement's events into rows of fewer than 2^20.
                (row_number() OVER () - 1) / 1000000 AS part
            FROM new_rows n
            JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.execution_id = n.execution_id
            WHERE o.lease_id IS DISTINCT FROM n.lease_id
               OR o.lease_expires_at IS DISTINCT FROM n.lease_expires_at
        ) e
        GROUP BY e.tenant_id, e.part
        RETURNING tenant_id
    )
    SELECT count(*) INTO notified FROM (
        SELECT pg_notify('flowfabric_events', 'lease:' || t.tenant_id)
        FROM (SELECT DISTINCT tenant_id FROM changed) t) sent;
    RETURN NULL;
END
$$;
