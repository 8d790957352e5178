//! The concurrency-key parts of the claim statement (`claim.rs`): each
//! candidate's limit, its key's slot locked, and whether it is admitted,
//! passed over or blocked; and how the slots are locked, waiting for a held
//! one with a bound or passing it; and how a claim that gave way on a slot
//! claims again. Kept apart from the rest of the claim because only tenants
//! with a concurrency limit need them, and a claim leaves them out otherwise.

use crate::error::EngineError;

/// How long a keyed claim waits for a slot another transaction holds (to
/// lock it, or to count its runs into it) before it claims again passing
/// held slots; far below `deadlock_timeout` (1 s by default), so a claim in
/// a lock cycle gives way before Postgres would abort either side.
pub(super) const SLOT_WAIT: &str = "100ms";

/// How a keyed claim treats its keys' slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotLocks {
    /// Read no slot first: admit every keyed candidate and count the runs
    /// into their slots at the end, where the room is checked on each row
    /// as last committed. A key without room for all of its runs fails the
    /// statement (`serialization_failure`), and the claim runs again as
    /// [`SlotLocks::Tight`], which holds a full key's queue back. The
    /// cheapest claim while limits do not bind: a key's slot is read and
    /// written once, by the count. Waits up to [`SLOT_WAIT`] for a held slot.
    CountOnly,
    /// Read every slot as the statement's snapshot has it, and lock only
    /// the tight ones: keys with less room than candidates, whose queue may
    /// have to be held back, which only a slot's last committed count may
    /// decide. The others' runs are counted into their slots at the end,
    /// their room checked again there on the row as last committed (the
    /// statement fails with `serialization_failure` if another claim took
    /// it). Waits up to [`SLOT_WAIT`] for a held slot, tight ones in key
    /// order.
    Tight,
    /// Lock every slot, passing any another transaction holds: every room
    /// exact, nothing waited for.
    Pass,
}

impl SlotLocks {
    /// Every way, in declaration order (`slots as usize` indexes it).
    pub(super) const ALL: [SlotLocks; 3] =
        [SlotLocks::CountOnly, SlotLocks::Tight, SlotLocks::Pass];

    /// Why a claim treating its slots so gave way with `error`, if it did,
    /// and how it claims again.
    pub(super) fn after(self, error: &EngineError) -> Option<(&'static str, SlotLocks)> {
        match (self, gave_way(error)?) {
            (SlotLocks::Pass, _) => None,
            (SlotLocks::CountOnly, Conflict::Room) => Some(("room_short", SlotLocks::Tight)),
            (SlotLocks::Tight, Conflict::Room) => Some(("room_taken", SlotLocks::Pass)),
            (_, Conflict::HeldSlot) => Some(("held_slot", SlotLocks::Pass)),
        }
    }

    /// Whether the claim reads its slots before it judges its candidates.
    fn reads_first(self) -> bool {
        self != SlotLocks::CountOnly
    }
}

/// What made a keyed claim give way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conflict {
    /// It stopped waiting for a held slot (its own lock timeout, `55P03`),
    /// or Postgres broke a lock cycle (`40P01`).
    HeldSlot,
    /// A key had no room for the runs it counted in (`40001`, migration
    /// 0044): another claim took the room it saw in its snapshot, or it
    /// read no room at all.
    Room,
}

fn gave_way(e: &EngineError) -> Option<Conflict> {
    let EngineError::Storage { cause, .. } = e else {
        return None;
    };
    match cause.as_database_error()?.code()?.as_ref() {
        "55P03" | "40P01" => Some(Conflict::HeldSlot),
        "40001" => Some(Conflict::Room),
        _ => None,
    }
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
pub(super) const KEY_ADMISSION: &str = r#"-- The candidates' keys, each with its limit and its number of candidates.
slot_keys AS (
    SELECT tenant_id, rule_scope AS scope, rule_name AS name, concurrency_key AS key,
        max_running, max_starts, window_ms, count(*) AS wanted
    FROM locked WHERE rule_scope IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6, 7
),
-- Their slots as this statement's snapshot has them, no lock taken: one
-- primary-key probe a key. When waiting, the transaction's lock timeout is
-- set first.
seen AS (
    SELECT k.*, {room} AS room
    FROM slot_keys k
    CROSS JOIN LATERAL (
        SELECT s.running, s.window_started_at, s.window_starts
        FROM concurrency_slots s
        WHERE s.tenant_id = k.tenant_id AND s.scope = k.scope AND s.name = k.name
          AND s.key = k.key{wait_bound}
        -- Keeps the subquery a probe a key: flattened into a join, it plans
        -- as a hash of every slot.
        LIMIT 1
    ) s
),
-- The slots a room must be exact for, locked (see `SlotLocks`; a passed
-- slot's candidates stay for the next claim). Locked rows read as last
-- committed, so their counts are exact whatever this statement's snapshot
-- saw, and a full key's queue may be held back.
tight AS (
    SELECT k.tenant_id, k.scope, k.name, k.key, {room} AS room
    FROM (SELECT * FROM seen WHERE {is_tight} ORDER BY tenant_id, scope, name, key) k
    CROSS JOIN LATERAL (
        SELECT s.running, s.window_started_at, s.window_starts
        FROM concurrency_slots s
        WHERE s.tenant_id = k.tenant_id AND s.scope = k.scope AND s.name = k.name
          AND s.key = k.key
        {slot_lock}
    ) s
),
slot_room AS (
    SELECT tenant_id, scope, name, key, room FROM seen WHERE NOT ({is_tight})
    UNION ALL
    SELECT tenant_id, scope, name, key, room FROM tight
),
-- A slot the key's submit did not make (it raced a cleanup): made now, and
-- used by the next claim.
missing_slots AS (
    INSERT INTO concurrency_slots (tenant_id, scope, name, key)
    SELECT k.tenant_id, k.scope, k.name, k.key
    FROM slot_keys k
    WHERE NOT EXISTS (
        SELECT 1 FROM seen s WHERE s.tenant_id = k.tenant_id AND s.scope = k.scope
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
-- Only a tight key can be full: its room is exact.
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
/// The runs this statement leased, counted into their keys' slots: by key,
/// so a slot updated after this statement's snapshot is updated as last
/// committed (an update by row id would not see that version). The room is
/// checked again on the counts written: a key whose slot was not locked had
/// its room counted off the snapshot, and a claim that committed since may
/// have taken it, or (`SlotLocks::CountOnly`) not counted at all. Such a
/// key's count does not fit, and `KEY_CHECKED_COLUMNS` fails the statement,
/// undoing it. The limits come with the claimed rows (`KEY_CLAIMED_COLUMNS`).
pub(super) const KEY_SLOTS_TAKEN: &str = r#"taken AS (
    UPDATE concurrency_slots s SET running = s.running + t.n,
        window_started_at = CASE WHEN t.max_starts IS NOT NULL AND {new_window}
                                 THEN now() ELSE s.window_started_at END,
        window_starts = CASE WHEN t.max_starts IS NULL THEN 0
                             WHEN {new_window} THEN t.n
                             ELSE s.window_starts + t.n END
    FROM (
        SELECT c.tenant_id, c.concurrency_held AS scope, c.rule_name AS name,
            c.concurrency_key AS key, c.max_running, c.max_starts,
            c.window_ms * interval '1 millisecond' AS window_length, count(*)::int AS n
        FROM claimed c
        WHERE c.concurrency_held IS NOT NULL{count_wait_bound}
        GROUP BY 1, 2, 3, 4, 5, 6, 7
        -- Probed in this order, so the slots not locked before are locked in
        -- key order too.
        ORDER BY 1, 2, 3, 4
    ) t
    WHERE s.tenant_id = t.tenant_id AND s.scope = t.scope AND s.name = t.name AND s.key = t.key
    -- The room is checked on the counts written, not in the filter: a filter
    -- is tested first on the version this statement's snapshot sees, and a
    -- slot a run's end counted down since then would be passed over on its
    -- stale count.
    RETURNING t.n, s.running <= t.max_running
        AND (t.max_starts IS NULL OR s.window_starts <= t.max_starts) AS fits
),
"#;
/// The limit a claimed keyed run was admitted under, returned by `claimed`
/// for `KEY_SLOTS_TAKEN`.
pub(super) const KEY_CLAIMED_COLUMNS: &str =
    ",\n        p.rule_name, p.max_running, p.max_starts, p.window_ms";

/// The claim's last columns when it has the key parts: whether it found a
/// key tight (for [`SlotLocks::CountOnly`], which reads no slot first,
/// never), and that every keyed run it leased was counted into a slot it
/// fits (each held run is in exactly one of `taken`'s groups), or the
/// statement fails (migration 0044).
const KEY_CHECKED_COLUMNS: &str = ",\n    {keys_tight} AS keys_tight, (SELECT CASE \
     WHEN (SELECT coalesce(sum(n) FILTER (WHERE fits), 0) FROM taken) \
        = (SELECT count(*) FROM claimed WHERE concurrency_held IS NOT NULL) THEN true \
     ELSE flowfabric_key_room_taken() END) AS key_room_checked";

/// A slot's room for more runs of its key (`s`: the slot, `k`: its limit).
const ROOM: &str = "greatest(0, least(k.max_running - s.running,
        CASE WHEN k.max_starts IS NULL THEN k.max_running
             WHEN s.window_started_at > now() - k.window_ms * interval '1 millisecond'
             THEN k.max_starts - s.window_starts
             ELSE k.max_starts END))";

/// Whether a slot's start window has run out (`s`: the slot, `t`: its limit).
const NEW_WINDOW: &str =
    "(s.window_started_at IS NULL OR s.window_started_at <= now() - t.window_length)";

/// The concurrency-key parts of the claim statement for `slots`.
pub(super) struct KeyParts {
    /// `KEY_ADMISSION`, if the claim reads its slots first.
    pub admission: String,
    /// The claim's candidates: judged against their keys' room, or all.
    pub candidates: &'static str,
    /// The filter of the candidates a key admits.
    pub admitted: &'static str,
    /// `KEY_SLOTS_TAKEN`.
    pub taken: String,
    /// `KEY_CHECKED_COLUMNS`.
    pub checked: String,
}

impl KeyParts {
    /// A claim without the key parts: its candidates are all it locked.
    pub(super) fn none() -> KeyParts {
        KeyParts {
            admission: String::new(),
            candidates: "locked",
            admitted: "",
            taken: String::new(),
            checked: String::new(),
        }
    }
}

pub(super) fn key_parts(slots: SlotLocks) -> KeyParts {
    let reads_first = slots.reads_first();
    let admission = match reads_first {
        true => KEY_ADMISSION
            .replace("{room}", ROOM)
            .replace("{wait_bound}", &wait_bound(slots == SlotLocks::Tight))
            .replace("{is_tight}", is_tight(slots))
            .replace("{slot_lock}", slot_lock(slots)),
        false => String::new(),
    };
    let keys_tight = match reads_first {
        true => "(SELECT EXISTS (SELECT 1 FROM seen WHERE room < wanted))",
        false => "false",
    };
    KeyParts {
        admission,
        candidates: if reads_first { "judged" } else { "locked" },
        admitted: if reads_first {
            " AND l.key_state = 'admit'"
        } else {
            ""
        },
        taken: KEY_SLOTS_TAKEN
            .replace("{new_window}", NEW_WINDOW)
            .replace("{count_wait_bound}", &wait_bound(!reads_first)),
        checked: KEY_CHECKED_COLUMNS.replace("{keys_tight}", keys_tight),
    }
}

/// When `waits`: the statement's lock timeout, set (for this transaction
/// only) by a one-time filter evaluated before the first slot is read or
/// counted into, so it bounds both the tight slots' locks and the count at
/// the end.
fn wait_bound(waits: bool) -> String {
    match waits {
        true => format!(
            "\n          AND (SELECT set_config('lock_timeout', '{SLOT_WAIT}', true)) IS NOT NULL"
        ),
        false => String::new(),
    }
}

/// The keys whose slots are locked.
fn is_tight(slots: SlotLocks) -> &'static str {
    match slots {
        SlotLocks::CountOnly | SlotLocks::Tight => "room < wanted",
        SlotLocks::Pass => "true",
    }
}

fn slot_lock(slots: SlotLocks) -> &'static str {
    match slots {
        SlotLocks::CountOnly | SlotLocks::Tight => "FOR UPDATE",
        SlotLocks::Pass => "FOR UPDATE SKIP LOCKED",
    }
}

#[cfg(test)]
mod tests {
    use super::SlotLocks;

    /// `claim_sql` finds a statement by `slots as usize` among those built
    /// in the order of `ALL`.
    #[test]
    fn all_is_in_declaration_order() {
        for (i, slots) in SlotLocks::ALL.into_iter().enumerate() {
            assert_eq!(slots as usize, i, "{slots:?}");
        }
    }
}
