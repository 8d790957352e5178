//! The concurrency-key parts of the claim statement (`claim.rs`): each
//! candidate's limit, its key's slot locked, and whether it is admitted,
//! passed over or blocked; and how the slots are locked, waiting for a held
//! one with a bound or passing it. Kept apart from the rest of the claim
//! because only tenants with a concurrency limit need them, and a claim
//! leaves them out otherwise.

/// How long a keyed claim waits for a slot another transaction holds before
/// it claims again passing held slots; far below `deadlock_timeout` (1 s by
/// default), so a claim in a lock cycle gives way before Postgres would
/// abort either side.
pub(super) const SLOT_WAIT: &str = "100ms";

/// How a keyed claim locks its keys' slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotLocks {
    /// In key order, waiting up to [`SLOT_WAIT`] for each.
    Wait,
    /// Passing any slot another transaction holds.
    Pass,
}

/// The concurrency-key parts of `claim_sql` (`claim.rs`): each candidate's
/// limit (its kind's, else its lane's), its key's slot locked, and whether it
/// is admitted, passed over (another claim holds the slot) or blocked (the key
/// is full). Left out while no tenant has a limit.
///
/// The limit is looked up by tenant, kind and lane alone, and a candidate
/// without a key drops it afterwards (`rule_scope` is its only column read
/// for such a candidate): so the lookup's cache (a `Memoize` node) holds one
/// entry per kind and lane of a claim. With the key among the lookup's
/// inputs, every distinct key missed the cache: 100 probes of
/// `concurrency_limits` for a claim of 100 over 10,000 keys.
pub(super) const KEY_RULE_COLUMNS: &str =
    ",\n        CASE WHEN c.concurrency_key IS NOT NULL THEN rule.scope END AS rule_scope, \
     rule.name AS rule_name, rule.max_running, rule.max_starts, rule.window_ms";
pub(super) const KEY_RULE_JOIN: &str = r#"    LEFT JOIN LATERAL (
        SELECT cl.scope, cl.name, cl.max_running, cl.max_starts,
            coalesce(cl.window_ms, 1000) AS window_ms
        FROM concurrency_limits cl
        WHERE cl.tenant_id = c.tenant_id
          AND ((cl.scope = 'kind' AND cl.name = c.kind) OR (cl.scope = 'lane' AND cl.name = c.lane))
        ORDER BY cl.scope
        LIMIT 1
    ) rule ON true
"#;
pub(super) const KEY_ADMISSION: &str = r#"-- The candidates' keys, each with its limit.
slot_keys AS (
    SELECT DISTINCT tenant_id, rule_scope AS scope, rule_name AS name, concurrency_key AS key,
        max_running, max_starts, window_ms
    FROM locked WHERE rule_scope IS NOT NULL
),
-- Their slots, locked (waited for briefly, in key order, or passed over:
-- see `SlotLocks`); a passed slot's candidates stay for the next claim.
-- Locked rows read as last committed, so the counts are exact whatever this
-- statement's snapshot saw. One primary-key probe a key: joined, the generic
-- plan hashes a scan of every slot.
slots AS (
    SELECT k.*, s.running, s.window_started_at, s.window_starts
    FROM {slot_keys} k
    CROSS JOIN LATERAL (
        SELECT s.running, s.window_started_at, s.window_starts
        FROM concurrency_slots s
        WHERE s.tenant_id = k.tenant_id AND s.scope = k.scope AND s.name = k.name
          AND s.key = k.key{wait_bound}
        {slot_lock}
    ) s
),
slot_room AS (
    SELECT s.tenant_id, s.scope, s.name, s.key,
        s.max_starts IS NOT NULL AS counts_starts,
        s.max_starts IS NOT NULL AND (s.window_started_at IS NULL
            OR s.window_started_at <= now() - s.window_ms * interval '1 millisecond') AS new_window,
        greatest(0, least(s.max_running - s.running,
            CASE WHEN s.max_starts IS NULL THEN s.max_running
                 WHEN s.window_started_at > now() - s.window_ms * interval '1 millisecond'
                 THEN s.max_starts - s.window_starts
                 ELSE s.max_starts END)) AS room
    FROM slots s
),
-- A slot the key's submit did not make (it raced a cleanup): made now, and
-- used by the next claim. Only keys without a locked slot are probed, and
-- by snapshot, so a slot another claim is updating is not waited for.
missing_slots AS (
    INSERT INTO concurrency_slots (tenant_id, scope, name, key)
    SELECT k.tenant_id, k.scope, k.name, k.key
    FROM slot_keys k
    LEFT JOIN LATERAL (
        SELECT 1 AS found FROM concurrency_slots s
        WHERE s.tenant_id = k.tenant_id AND s.scope = k.scope AND s.name = k.name
          AND s.key = k.key
        LIMIT 1
    ) f ON true
    WHERE f.found IS NULL AND NOT EXISTS (
        SELECT 1 FROM slots s WHERE s.tenant_id = k.tenant_id AND s.scope = k.scope
            AND s.name = k.name AND s.key = k.key)
    ON CONFLICT DO NOTHING
),
judged AS (
    SELECT l.*, CASE
        WHEN l.rule_scope IS NULL THEN 'admit'
        WHEN r.room IS NULL THEN 'pass'
        WHEN row_number() OVER (
            PARTITION BY l.tenant_id, l.rule_scope, l.rule_name, l.concurrency_key
            ORDER BY l.over_budget, l.priority DESC, l.eligible_at, l.execution_id) <= r.room
            THEN 'admit'
        ELSE 'block' END AS key_state
    FROM locked l
    LEFT JOIN slot_room r ON r.tenant_id = l.tenant_id AND r.scope = l.rule_scope
        AND r.name = l.rule_name AND r.key = l.concurrency_key
),
-- A full key's candidates, and the rest of its queue (up to 1,000 a claim),
-- leave the claim index, so the next claims look past them to other keys.
key_blocked AS (
    UPDATE executions e SET eligibility_state = 'blocked_by_concurrency_key',
        blocking_reason = 'blocked_by_concurrency_key', updated_at = now()
    WHERE e.ctid = ANY(ARRAY(
        SELECT row_id FROM judged WHERE key_state = 'block' AND NOT over_budget
        UNION ALL
        SELECT q.ctid FROM (
            SELECT DISTINCT tenant_id, rule_scope, rule_name, concurrency_key
            FROM judged WHERE key_state = 'block') f
        CROSS JOIN LATERAL (
            SELECT x.ctid FROM executions x
            WHERE x.tenant_id = f.tenant_id AND x.concurrency_key = f.concurrency_key
              AND x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now'
              AND f.rule_name = CASE f.rule_scope WHEN 'kind' THEN x.kind ELSE x.lane END
              AND (f.rule_scope = 'kind' OR NOT EXISTS (
                  SELECT 1 FROM concurrency_limits k WHERE k.tenant_id = x.tenant_id
                      AND k.scope = 'kind' AND k.name = x.kind))
              -- SKIP LOCKED does not skip rows this statement locked.
              AND x.ctid <> ALL(ARRAY(SELECT row_id FROM locked))
            ORDER BY x.priority DESC, x.eligible_at, x.execution_id
            LIMIT 1000
            FOR UPDATE SKIP LOCKED) q))
),
"#;
pub(super) const KEY_SLOTS_TAKEN: &str = r#"taken AS (
    UPDATE concurrency_slots s SET running = s.running + t.n,
        window_started_at = CASE WHEN t.new_window THEN now() ELSE s.window_started_at END,
        window_starts = CASE WHEN t.new_window THEN t.n
                             WHEN t.counts_starts THEN s.window_starts + t.n ELSE 0 END
    FROM (
        SELECT r.tenant_id, r.scope, r.name, r.key, r.new_window, r.counts_starts,
            count(*)::int AS n
        FROM claimed c
        JOIN slot_room r ON r.tenant_id = c.tenant_id AND r.scope = c.concurrency_held
            AND r.name = CASE c.concurrency_held WHEN 'kind' THEN c.kind ELSE c.lane END
            AND r.key = c.concurrency_key
        GROUP BY 1, 2, 3, 4, 5, 6
    ) t
    -- By key, not by the ctid `slots` locked: that version may be newer than
    -- this statement's snapshot, and an update by ctid would not see it.
    WHERE s.tenant_id = t.tenant_id AND s.scope = t.scope AND s.name = t.name AND s.key = t.key
),
"#;

/// The keys whose slots are locked: in key order when waiting, so that two
/// claims never wait for each other's slots.
pub(super) fn slot_keys(slots: SlotLocks) -> &'static str {
    match slots {
        SlotLocks::Wait => "(SELECT * FROM slot_keys ORDER BY tenant_id, scope, name, key)",
        SlotLocks::Pass => "slot_keys",
    }
}

/// When waiting: the statement's lock timeout, set (for this transaction
/// only) by a one-time filter evaluated before the first slot is locked.
pub(super) fn wait_bound(slots: SlotLocks) -> String {
    match slots {
        SlotLocks::Wait => format!(
            "\n          AND (SELECT set_config('lock_timeout', '{SLOT_WAIT}', true)) IS NOT NULL"
        ),
        SlotLocks::Pass => String::new(),
    }
}

pub(super) fn slot_lock(slots: SlotLocks) -> &'static str {
    match slots {
        SlotLocks::Wait => "FOR UPDATE",
        SlotLocks::Pass => "FOR UPDATE SKIP LOCKED",
    }
}
