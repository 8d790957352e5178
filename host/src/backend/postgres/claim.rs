//! The claim: one statement that picks, locks and leases executions across
//! tenants, and the probe that picks its shape.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use super::Connections;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgRow};

use super::claim_keys::{
    key_parts, KeyParts, SlotLocks, KEY_CLAIMED_COLUMNS, KEY_RULE_COLUMNS, KEY_RULE_JOIN,
};
use super::leases::millis;
use super::rows::{col, json, parse, Args};
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{AttemptType, ClaimRequest, ClaimedExecution, LeaseHandle, TaskCeilings};

/// The admission parts of [`claim_sql`]: a tenant's room under its limits and
/// budget admission, as the module docs describe. Left out of the lean shape.
const ADMISSION_BUDGET: &str = r#"    CROSS JOIN LATERAL (
        SELECT EXISTS (SELECT 1 FROM budget_dimensions d
                       WHERE d.tenant_id = t.tenant_id AND d.exhausted) AS any_exhausted
    ) budget
"#;
const ADMISSION_ROOM: &str = r#"    CROSS JOIN LATERAL (
        -- Unlimited tenants get the claim's limit itself.
        SELECT random() AS draw,
            CASE WHEN t.max_running IS NULL AND t.max_starts_per_window IS NULL
                THEN (SELECT $3::bigint)
            ELSE greatest(0, least((SELECT $3::bigint),
                CASE WHEN t.max_running IS NULL THEN (SELECT $3::bigint)
                ELSE t.max_running - (SELECT count(*) FROM (
                    SELECT 1 FROM executions r
                    WHERE r.tenant_id = t.tenant_id AND r.lifecycle_phase = 'active'
                    LIMIT t.max_running) running) END,
                CASE WHEN t.max_starts_per_window IS NULL THEN (SELECT $3::bigint)
                ELSE t.max_starts_per_window - (SELECT count(*) FROM (
                        SELECT 1 FROM attempts a
                        WHERE a.tenant_id = t.tenant_id AND a.started_at > now()
                            - coalesce(t.start_window_ms, 1000) * interval '1 millisecond'
                        LIMIT t.max_starts_per_window) started) END)) END AS n
    ) room
"#;
const ADMISSION_OVER_BUDGET: &str = r#"            CASE WHEN ch.any_exhausted THEN EXISTS (
                SELECT 1 FROM budget_dimensions d JOIN budgets b
                    ON b.tenant_id = d.tenant_id AND b.budget_id = d.budget_id
                WHERE d.tenant_id = e.tenant_id AND d.exhausted
                  AND (b.scope, b.scope_key) IN (('tenant', ''),
                      ('flow', coalesce(e.flow_id::text, '')),
                      ('execution', e.execution_id::text), ('lane', e.lane)))
            ELSE false END AS over_budget"#;
const ADMISSION_BLOCKED: &str = r#"blocked AS (
    UPDATE executions e SET eligibility_state = 'blocked_by_budget',
        blocking_reason = 'waiting_for_budget', updated_at = now()
    FROM locked l
    WHERE l.over_budget AND e.tenant_id = l.tenant_id AND e.execution_id = l.execution_id
      AND e.ctid = ANY(ARRAY(SELECT row_id FROM locked WHERE over_budget))
),
"#;
/// The lean shape: every tenant's room is the claim's limit, nothing is over
/// budget. The room names its tenant so it stays per tenant: uncorrelated, it
/// would be computed once, and every tenant would draw the same number.
const LEAN_ROOM: &str =
    "    CROSS JOIN LATERAL (SELECT random() AS draw, (SELECT $3::bigint) AS n, \
     t.tenant_id AS of_tenant) room\n";
const LEAN_OVER_BUDGET: &str = "            false AS over_budget";

/// An execution a claim may take: runnable now, in a lane of the claim, with
/// capabilities the worker has (`$2`). The rows of `executions_claim_idx`.
const RUNNABLE: &str = "e.lifecycle_phase = 'runnable'
          AND e.eligibility_state = 'eligible_now'
          -- `= '{}'` is implied by `<@` but keeps the planner on the index: alone,
          -- `<@` is estimated at 0.5% selectivity and a large LIMIT then looks
          -- cheaper as a sequential scan plus sort of the whole backlog.
          AND (e.required_capabilities = '{}' OR e.required_capabilities <@ (SELECT $2::text[]))";

/// Whether any tenant has a limit or an exhausted budget, so claims need the
/// admission subqueries (both answered off partial indexes; migration 0014).
const NEEDS_ADMISSION: &str = "(EXISTS (SELECT 1 FROM tenants \
        WHERE max_running IS NOT NULL OR max_starts_per_window IS NOT NULL) \
    OR EXISTS (SELECT 1 FROM budget_dimensions WHERE exhausted))";
/// Whether any tenant has a concurrency-key limit, so claims need the key parts.
const NEEDS_KEYS: &str = "EXISTS (SELECT 1 FROM concurrency_limits)";

/// Round-robin across tenants: the first of every tenant ranks before the
/// second of any. Within a turn, tenants go in a fresh random order per claim:
/// priority and age only order a tenant's own work, so neither a tenant's high
/// priorities nor its old backlog can put it first every time (with one free
/// slot, every claim would go to it).
///
/// A claim locks about as many rows as it takes, however many tenants have
/// work. `chosen` goes through the (tenant, lane) pairs in the random order,
/// probing the head of `executions_claim_idx` for runnable work (no lock),
/// and stops at `$3` pairs that have some: a claim of one picks one tenant
/// with work at random, and probes only as many as it takes. Each chosen
/// pair then locks its best candidates, an even share of `$3`, from an
/// ordered `SKIP LOCKED` scan of the index: at most `$3` plus one per pair
/// are locked, where every pair used to lock up to `$3` of its own (with 100
/// tenants, a claim of 100 locked 10,000 rows to take 100). A pair whose share
/// is more than it has leaves the claim short, to be filled by the next.
///
/// A tenant with `max_running` gets at most its free room: the running count
/// comes off `executions_lease_expiry_idx`, bounded by the limit. Likewise
/// `max_starts_per_window`: attempts started within the window are counted
/// off `attempts_started_idx`, bounded by the limit. Claims that run at the
/// same moment each see the other's claims only after commit, so either limit
/// can be overshot by concurrent claimers for as long as they race; neither is
/// exceeded by a single claimer.
///
/// Budget admission: a candidate covered by an exhausted budget (migration
/// 0012) is not started but moved to `blocked_by_budget` by the same
/// statement. Its scopes are checked only for tenants that have an exhausted
/// budget, found by one probe of `budget_dimensions_exhausted_idx` per tenant.
///
/// Concurrency keys: a candidate with a key that a limit covers (its kind's,
/// else its lane's) needs room in its key's slot. While limits do not bind, a
/// claim reads no slot before it picks: it counts its runs into their slots
/// at the end, by an update that checks each key's room on the row as last
/// committed, and should a key lack room for them the statement fails
/// (`serialization_failure`, migration 0044) rather than run past the limit.
/// It then claims again reading its slots first, as the next claims do
/// ([`KnownShape`]): it reads each slot as its snapshot has it, and locks
/// only the tight ones, keys with fewer free runs than candidates: a locked
/// row reads as last committed, so their counts are exact even when another
/// claim committed after this statement's snapshot was taken, and a full
/// key's queue may be held back (a key held back on a stale count could wait
/// for a run's end that already came). A roomy key is not locked: it is
/// counted in at the end as above. Reading first costs a probe a key and
/// the judging of every candidate against its key's room: counting only
/// made keyed claims of 100 a fifth to a third cheaper (figures in
/// docs/performance-log/2026-12-07-keyed-claims-count-only.md). Locking
/// every slot held each from early in the statement to its commit, and at
/// 10 keys, where every claim and every run's end want the same slots,
/// claims waited on each other.
/// A slot another transaction holds (a claim, or the end of a keyed run,
/// until it commits) is waited for, tight ones in key order, but only for
/// `SLOT_WAIT` (`claim_keys.rs`): some transactions that hold a slot go
/// on to wait for other executions' rows (the schedule scanner cancels each
/// overlapping schedule's previous run in turn, in one transaction), so a
/// claim that waited while it holds runnable candidates could deadlock with
/// one. The bound is far below Postgres's `deadlock_timeout`, so the claim
/// always gives way first: its statement fails on the lock timeout, and the
/// claim runs again locking every slot and passing held ones (`SKIP
/// LOCKED`), whose candidates stay runnable for the next claim; so does a
/// claim that read first and whose room was taken after its snapshot.
/// Passing at once made keyed claims under contention come back empty: at 10
/// keys, 243 claims for 50 batches.
/// Candidates past a key's room, and up to 1,000 more of the full key's
/// queue, move to `blocked_by_concurrency_key`, out of the index, so a key
/// with a backlog cannot fill every claim's share. The statement counts what
/// it leases into the slots; the release trigger
/// (`sql/functions/flowfabric_release_concurrency_slots.sql`) counts them out.
///
/// Four shapes: the admission parts (the room lateral, the budget probe, the
/// over-budget check and the blocking update) and the key parts cost more to
/// plan than the whole claim takes to run, so a claim leaves out what no one
/// needs. Which parts are needed is remembered from the last claim
/// ([`KnownShape`]): every claim's rows say whether any tenant has a limit
/// or an exhausted budget, and whether any has a concurrency limit, as of the
/// claim's own snapshot. A shape without some part is gated on its not being
/// needed, in the same snapshot, so it claims nothing rather than claim past
/// a limit; a claim that comes back empty on such a shape asks again with a
/// probe of its own and, if the shape was short, claims again. So a claim is
/// one round trip, and a limit set, or a budget exhausted, is seen by the
/// very next claim.
///
/// Planned once per connection, not once per claim. Planning the claim costs
/// about a millisecond, more than running it, and Postgres replans a prepared
/// statement for every call while its custom plans look cheaper than the
/// generic one. So the statement reads its parameters through scalar
/// subqueries (`(SELECT $3::bigint)`), which hide their values from the
/// planner (custom plans would cost what the generic plan costs), and it runs
/// on connections that plan for no values ([`claim_connect_options`]). Hiding the
/// values alone was not enough: Postgres compares a new generic plan (after
/// an `ANALYZE`, say) with the average of the custom plans before it, and
/// when the backlog has grown since those, every claim was planned anew
/// until hundreds of dearer custom plans had moved that average (608 of
/// 1,565 claims in one 100,000-run drain; 12-15 µs of the server's CPU a run
/// over all statements in such drains). Not knowing how many rows are picked,
/// that plan would join them back to `executions` by hashing a sequential
/// scan, so both updates name their rows by `ctid = ANY(...)`: a TID scan,
/// whatever the statistics. (`= ANY` on both key columns probed every
/// pairing of the picked tenants and ids: 10,000 probes for 100 rows from
/// 100 tenants.) The ctids are those of the versions `locked` locked; no one
/// else can change a row this transaction holds, so the update finds each.
/// The one it misses is a row changed and committed after this statement's
/// snapshot but before its lock, and still runnable (a new priority, say):
/// locked at its new version, which the snapshot does not see, it is left
/// runnable and the claim returns one fewer.
const CLAIM_TEMPLATE: &str = r#"
WITH chosen AS (
    SELECT r.* FROM (
        -- Sorted before any probe, so the probes below go in this order and
        -- stop at the claim's limit (an ORDER BY keeps this subquery whole).
        SELECT t.tenant_id, l.lane, room.n AS room, room.draw, {exhausted} AS any_exhausted,
            t.max_task_timeout_ms, t.max_memory_mib
        FROM tenants t
{budget}{room}        CROSS JOIN unnest((SELECT $1::text[])) AS l(lane)
        WHERE room.n > 0 AND t.tenant_id <> ALL((SELECT $7::uuid[])::uuid[]){gate}
        ORDER BY room.draw
    ) r
    CROSS JOIN LATERAL (
        SELECT 1 FROM executions e
        WHERE e.tenant_id = r.tenant_id AND e.lane = r.lane AND {runnable}
        -- The index's order, so the probe is its first entry (with statistics
        -- that show only runnable rows, a bare LIMIT 1 plans as a table scan).
        ORDER BY e.priority DESC, e.eligible_at, e.execution_id
        LIMIT 1
    ) has_work
    LIMIT (SELECT $3::bigint)
),
locked AS (
    SELECT c.*, ch.room, ch.draw, ch.max_task_timeout_ms, ch.max_memory_mib{rule_columns}
    FROM chosen ch
    CROSS JOIN LATERAL (
        SELECT e.ctid AS row_id, e.tenant_id, e.execution_id, e.priority, e.eligible_at,
            e.attempt_state, e.kind, e.lane, e.concurrency_key,
{over_budget}
        FROM executions e
        WHERE e.tenant_id = ch.tenant_id AND e.lane = ch.lane AND {runnable}
        ORDER BY e.priority DESC, e.eligible_at, e.execution_id
        LIMIT least(ch.room,
            (SELECT ceil((SELECT $3::bigint)::numeric / count(*))::bigint FROM chosen))
        FOR UPDATE SKIP LOCKED
    ) c
{rule_join}),
{key_admission}picked AS (
    SELECT * FROM (
        SELECT l.*, row_number() OVER (
            PARTITION BY l.tenant_id ORDER BY l.priority DESC, l.eligible_at, l.execution_id
        ) AS turn
        FROM {candidates} l
        WHERE NOT l.over_budget{admitted}
    ) ranked
    WHERE turn <= room
    ORDER BY turn, draw
    LIMIT (SELECT $3::bigint)
),
{blocked}claimed AS (
    UPDATE executions e SET
        lifecycle_phase = 'active',
        ownership_state = 'leased',
        eligibility_state = 'not_applicable',
        blocking_reason = NULL,
        attempt_state = 'running_attempt',
        -- A resumed suspension continues its attempt (and so its frame sequence,
        -- which `execution_counters` keeps per attempt).
        attempt_index = e.attempt_index
            + CASE WHEN e.attempt_state = 'pending_resume_attempt' THEN 0 ELSE 1 END,
        lease_epoch = e.lease_epoch + 1,
        lease_id = gen_random_uuid(),
        lease_expires_at = now() + $6 * interval '1 millisecond',
        -- Clamped, so that no stored policy can make this statement fail for
        -- every tenant (the API refuses such values; rows are not trusted).
        -- No timeout in the policy is none (`least` alone would make it the cap).
        attempt_timeout_at = now() + CASE
            WHEN e.policy -> 'timeouts' ->> 'attempt_timeout_ms' IS NOT NULL THEN least(
                (e.policy -> 'timeouts' ->> 'attempt_timeout_ms')::numeric, 604800000
            )::bigint * interval '1 millisecond' END,
        started_at = coalesce(e.started_at, now()),
        progress_percent = NULL, progress_message = NULL,
        concurrency_held = {held},
        updated_at = now()
    FROM picked p
    WHERE e.tenant_id = p.tenant_id AND e.execution_id = p.execution_id
      AND e.ctid = ANY(ARRAY(SELECT row_id FROM picked))
    RETURNING e.tenant_id, e.execution_id, e.attempt_index, e.lease_id, e.lease_epoch,
        e.lease_expires_at, e.kind, e.lane, e.input, e.priority, e.tags, e.policy, e.retry_count,
        e.eligible_at, p.turn, p.draw, p.max_task_timeout_ms, p.max_memory_mib,
        CASE p.attempt_state
            WHEN 'pending_retry_attempt' THEN 'retry'
            WHEN 'attempt_interrupted' THEN 'reclaim'
            WHEN 'pending_replay_attempt' THEN 'replay'
            WHEN 'pending_delayed_attempt' THEN 'delayed'
            WHEN 'pending_resume_attempt' THEN 'resume'
            ELSE 'initial'
        END AS attempt_type,
        CASE WHEN p.attempt_state = 'pending_resume_attempt' THEN e.suspension_seq END
            AS resumed_from,
        e.concurrency_key, e.concurrency_held{claimed_key_columns}
),
{slots_taken}
-- Every claim but a resume starts the next attempt (`claimed` counts its
-- index up), whose row cannot exist yet: a plain insert, not an upsert,
-- whose speculative insertion costs each row a lock and a confirming WAL
-- record.
attempt AS (
    INSERT INTO attempts (tenant_id, execution_id, attempt_index, attempt_type, lease_id,
                          lease_epoch, worker_id, worker_instance, state)
    SELECT tenant_id, execution_id, attempt_index, attempt_type, lease_id, lease_epoch,
           $4, $5, 'running'
    FROM claimed WHERE attempt_type <> 'resume'
),
-- A resumed attempt's row exists and keeps its type; it takes the new lease.
resumed_attempt AS (
    UPDATE attempts a SET lease_id = c.lease_id, lease_epoch = c.lease_epoch,
        worker_id = $4, worker_instance = $5, state = 'running'
    FROM claimed c
    WHERE c.attempt_type = 'resume' AND a.tenant_id = c.tenant_id
      AND a.execution_id = c.execution_id AND a.attempt_index = c.attempt_index
)
SELECT *, (SELECT {needs_admission}) AS needs_admission, (SELECT {needs_keys}) AS needs_keys{key_room_checked}
FROM claimed ORDER BY turn, draw
"#;

/// Which optional parts a claim statement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Tenant limits and budget admission.
    admission: bool,
    /// Concurrency-key limits.
    keys: bool,
}

impl Shape {
    const FULL: Shape = Shape {
        admission: true,
        keys: true,
    };

    /// Whether a claim of this shape is right where `needed` is what is set.
    fn covers(self, needed: Shape) -> bool {
        (self.admission || !needed.admission) && (self.keys || !needed.keys)
    }

    fn index(self) -> usize {
        usize::from(self.admission) * 2 + usize::from(self.keys)
    }

    /// The shape of [`Shape::index`] `i` (its low two bits).
    fn from_index(i: usize) -> Shape {
        Shape {
            admission: i & 2 != 0,
            keys: i & 1 != 0,
        }
    }
}

/// How many keyed claims read their slots first after one found a key with
/// less room than candidates. While limits bind, claims keep reading first
/// (each that still finds such a key starts the count again); once they
/// stop binding, claims go back to counting only, the cheaper statement
/// (`SlotLocks::CountOnly`). A burst costs one statement in vain, the
/// count-only claim that met the full key.
const READ_FIRST_CLAIMS: u32 = 8;

/// The shape the last claim found needed, and how the next keyed claims
/// treat their slots; shared by a backend's claims.
#[derive(Default)]
pub(super) struct KnownShape {
    needed: AtomicU8,
    /// Keyed claims left that read their slots first.
    read_first: AtomicU32,
}

impl KnownShape {
    fn get(&self) -> Option<Shape> {
        match self.needed.load(Ordering::Relaxed) {
            0 => None,
            known => Some(Shape::from_index(usize::from(known))),
        }
    }

    fn set(&self, shape: Shape) {
        self.needed
            .store(4 | shape.index() as u8, Ordering::Relaxed);
    }

    /// How the next keyed claim first treats its slots.
    fn first_slot_locks(&self) -> SlotLocks {
        let read_first = self
            .read_first
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        match read_first {
            Ok(_) => SlotLocks::Tight,
            Err(_) => SlotLocks::CountOnly,
        }
    }

    /// A claim found a key with less room than candidates.
    fn met_tight_key(&self) {
        self.read_first.store(READ_FIRST_CLAIMS, Ordering::Relaxed);
    }
}

/// The claim statement of `shape` (treating slots as `slots` says, if it has
/// the key parts), built once each.
fn claim_sql(shape: Shape, slots: SlotLocks) -> &'static str {
    static SHAPES: LazyLock<Vec<String>> = LazyLock::new(|| {
        SlotLocks::ALL
            .iter()
            .flat_map(|&slots| (0..4).map(move |i| fill_claim(Shape::from_index(i), slots)))
            .collect()
    });
    // A shape without the key parts is the same whatever `slots` says.
    let slots = if shape.keys { slots } else { SlotLocks::ALL[0] };
    &SHAPES[slots as usize * 4 + shape.index()]
}

/// The gate of a shape that leaves parts out: they must not be needed.
fn gate(shape: Shape) -> String {
    let mut unneeded = Vec::new();
    if !shape.admission {
        unneeded.push(format!("NOT {NEEDS_ADMISSION}"));
    }
    if !shape.keys {
        unneeded.push(format!("NOT {NEEDS_KEYS}"));
    }
    match unneeded.is_empty() {
        true => String::new(),
        false => format!("\n          AND (SELECT {})", unneeded.join(" AND ")),
    }
}

fn fill_claim(shape: Shape, slots: SlotLocks) -> String {
    let pick = |yes: &'static str, no: &'static str| if shape.admission { yes } else { no };
    let key = |yes: &'static str, no: &'static str| if shape.keys { yes } else { no };
    let keys = match shape.keys {
        true => key_parts(slots),
        false => KeyParts::none(),
    };
    CLAIM_TEMPLATE
        .replace("{runnable}", RUNNABLE)
        .replace("{exhausted}", pick("budget.any_exhausted", "false"))
        .replace("{budget}", pick(ADMISSION_BUDGET, ""))
        .replace("{room}", pick(ADMISSION_ROOM, LEAN_ROOM))
        .replace(
            "{over_budget}",
            pick(ADMISSION_OVER_BUDGET, LEAN_OVER_BUDGET),
        )
        .replace("{blocked}", pick(ADMISSION_BLOCKED, ""))
        .replace("{rule_columns}", key(KEY_RULE_COLUMNS, ""))
        .replace("{rule_join}", key(KEY_RULE_JOIN, ""))
        .replace("{key_admission}", &keys.admission)
        .replace("{candidates}", keys.candidates)
        .replace("{admitted}", keys.admitted)
        .replace("{held}", key("p.rule_scope", "NULL"))
        .replace("{claimed_key_columns}", key(KEY_CLAIMED_COLUMNS, ""))
        .replace("{slots_taken}", &keys.taken)
        .replace("{key_room_checked}", &keys.checked)
        .replace("{gate}", &gate(shape))
        .replace("{needs_admission}", NEEDS_ADMISSION)
        .replace("{needs_keys}", NEEDS_KEYS)
}

/// The plans Postgres chooses for the claim statement with these arguments
/// (`EXPLAIN`, nothing is executed): with concurrency limits set, one plan for
/// each way of treating the keys' slots, each after a `-- slots: …` line.
/// Lets tests and operators check that the claim stays on
/// `executions_claim_idx` however large the backlog.
pub(super) async fn explain_claim(pool: &Connections, request: &ClaimRequest) -> Result<String> {
    let shape = probe_shape(pool).await?;
    let modes: &[SlotLocks] = match shape.keys {
        true => &SlotLocks::ALL,
        false => &[SlotLocks::Pass],
    };
    let mut plans = Vec::new();
    for &slots in modes {
        let lines: Vec<String> = sqlx::query_scalar_with(
            &format!("EXPLAIN {}", claim_sql(shape, slots)),
            claim_args(request, "explain claim")?,
        )
        .all(pool, "explain claim")
        .await?;
        if shape.keys {
            plans.push(format!("-- slots: {slots:?}"));
        }
        plans.extend(lines);
    }
    Ok(plans.join("\n"))
}

/// What the claim needs now, asked on its own.
async fn probe_shape(pool: &Connections) -> Result<Shape> {
    static SHAPE_SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {NEEDS_ADMISSION}, {NEEDS_KEYS}"));
    let (admission, keys) = sqlx::query_as(&SHAPE_SQL)
        .one(pool, "claim admission probe")
        .await?;
    Ok(Shape { admission, keys })
}

/// How many of a backend's `statements` connections are the claim's own: an
/// eighth, at least one. A worker pool has one claim in flight at a time
/// (its budget of slots + 4 counted one for it); callers of `Engine::claim`
/// beyond that take turns, each claim a few milliseconds long.
pub(super) fn claim_connections(statements: u32) -> u32 {
    (statements / 8).max(1)
}

/// How the claim's own connections open: every statement on them is planned
/// for no values of its own (`plan_cache_mode = force_generic_plan`), so the
/// claim is planned once per connection (see [`CLAIM_TEMPLATE`]). Set on
/// connections of their own rather than for each claim, where it would cost
/// a transaction and two more round trips a claim, a sixth of a claim of one
/// (`bench engine --batch 1`); the backend's other statements plan as before.
pub(super) fn claim_connect_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("plan_cache_mode", "force_generic_plan")])
}

/// The claim's rows. A keyed claim first counts only, or (after a claim
/// met a key with less room than candidates) reads its slots and locks the
/// tight ones, waiting for held ones ([`KnownShape::first_slot_locks`]). If
/// a key had no room for what a count-only claim took, it claims again
/// reading first; if a wait runs out (or Postgres found a lock cycle), or a
/// key's room was taken under it, it claims again locking every slot and
/// passing held ones.
async fn claim_rows(
    pool: &Connections,
    known: &KnownShape,
    shape: Shape,
    request: &ClaimRequest,
) -> Result<Vec<PgRow>> {
    let run = async |slots| {
        sqlx::query_with(claim_sql(shape, slots), claim_args(request, "claim")?)
            .all(pool, "claim")
            .await
    };
    if !shape.keys {
        return run(SlotLocks::Pass).await;
    }
    let mut slots = known.first_slot_locks();
    loop {
        let error = match run(slots).await {
            Ok(rows) => {
                if let Some(row) = rows.first() {
                    if col(row, "keys_tight")? {
                        known.met_tight_key();
                    }
                }
                return Ok(rows);
            }
            Err(error) => error,
        };
        let Some((why, next)) = slots.after(&error) else {
            return Err(error);
        };
        if next == SlotLocks::Tight {
            known.met_tight_key();
        }
        tracing::debug!(why, next = ?next, "keyed claim: claiming again");
        metrics::counter!("flowfabric_keyed_claims_rerun_total", "why" => why).increment(1);
        slots = next;
    }
}

/// `$1`–`$7` of [`claim_sql`].
fn claim_args(request: &ClaimRequest, op: &'static str) -> Result<PgArguments> {
    Args::new()
        .push(&request.lanes)
        .push(&request.capabilities)
        .push(i64::from(request.limit))
        .push(&request.worker_id)
        .push(&request.worker_instance)
        .push(millis(request.lease_ttl))
        .push(&request.exclude_tenants)
        .done(op)
}

fn claimed_execution(row: &PgRow) -> Result<ClaimedExecution> {
    Ok(ClaimedExecution {
        lease: LeaseHandle {
            tenant_id: col(row, "tenant_id")?,
            execution_id: col(row, "execution_id")?,
            attempt_index: col(row, "attempt_index")?,
            lease_id: col(row, "lease_id")?,
            lease_epoch: col(row, "lease_epoch")?,
        },
        kind: col(row, "kind")?,
        lane: col(row, "lane")?,
        input: col(row, "input")?,
        priority: col(row, "priority")?,
        tags: json(col(row, "tags")?, "tags")?,
        policy: json(col(row, "policy")?, "policy")?,
        attempt_type: parse::<AttemptType>(&col::<String>(row, "attempt_type")?)?,
        retry_count: col(row, "retry_count")?,
        lease_expires_at: col(row, "lease_expires_at")?,
        resumed_from: col(row, "resumed_from")?,
        ceilings: TaskCeilings {
            timeout: col::<Option<i64>>(row, "max_task_timeout_ms")?
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            memory_bytes: col::<Option<i32>>(row, "max_memory_mib")?
                .map(|mib| (mib.max(0) as usize) << 20),
        },
    })
}

pub(super) async fn claim(
    pool: &Connections,
    known: &KnownShape,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedExecution>> {
    let mut shape = match known.get() {
        Some(shape) => shape,
        None => probe_shape(pool).await?,
    };
    // The known shape, then the one a probe found needed (short again only
    // if yet another limit came in between).
    for _ in 0..3 {
        let rows = claim_rows(pool, known, shape, request).await?;
        if let Some(row) = rows.first() {
            known.set(Shape {
                admission: col(row, "needs_admission")?,
                keys: col(row, "needs_keys")?,
            });
        } else if shape != Shape::FULL {
            // Nothing claimed: no work, or the gate found the shape short.
            let needed = probe_shape(pool).await?;
            known.set(needed);
            if !shape.covers(needed) {
                shape = needed;
                continue;
            }
        }
        let claimed = rows
            .iter()
            .map(claimed_execution)
            .collect::<Result<Vec<_>>>()?;
        tracing::debug!(
            claimed = claimed.len(),
            admission = shape.admission,
            keys = shape.keys,
            "claim"
        );
        return Ok(claimed);
    }
    Ok(Vec::new())
}
