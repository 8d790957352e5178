//! The claim: lease a tenant-fair batch of runnable executions in one write
//! transaction, and write its rows together ([`Batch`]).

use std::collections::HashSet;

use rand::seq::SliceRandom;
use sqlx::types::Json;

use super::batch::Batch;
use super::budget_admission;
use super::concurrency::{self, ClaimKeys, KeyVerdict};
use super::record::Exec;
use super::time::{after, after_ms, at, now, Millis};
use super::tx::Tx;
use super::writes::Writes;
use super::{Effects, SqliteBackend};
use crate::backend::stored_i64;
use crate::error::Result;
use crate::model::{AttemptPhase, Eligibility, LifecyclePhase, Ownership};
use crate::model::{
    AttemptType, ClaimRequest, ClaimedExecution, TaskCeilings, TenantId, TenantLimits,
    DEFAULT_START_WINDOW_MS,
};

/// Lease up to `request.limit` runnable executions, round-robin across
/// tenants: each tenant's best candidates (priority, then age) within its
/// room under `max_running` and the start-rate quota; the first of every
/// tenant goes before the second of any, in a fresh random tenant order per
/// claim, so no tenant is always served first. A candidate an exhausted
/// budget covers is blocked instead of started.
#[tracing::instrument(skip_all, fields(worker = %request.worker_id, limit = request.limit))]
pub(super) async fn claim(
    db: &SqliteBackend,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedExecution>> {
    if request.limit == 0 || request.lanes.is_empty() {
        return Ok(Vec::new());
    }
    db.write_tx("claim", request, |tx, effects, request| {
        Box::pin(async move {
            let now = now();
            let mut queues = Vec::new();
            for (tenant, limits, exhausted) in tenants_with_work(tx).await? {
                if request.exclude_tenants.contains(&tenant) {
                    continue;
                }
                let room = room(tx, tenant, &limits, request.limit, now).await?;
                if room == 0 {
                    continue;
                }
                let candidates = candidates(tx, tenant, request, room).await?;
                // Budget admission reads and writes through sqlx (key
                // admission runs wherever the claim does).
                if exhausted {
                    tx.require_sqlx()?;
                }
                if !candidates.is_empty() {
                    queues.push((
                        candidates.into_iter(),
                        TaskCeilings::from(&limits),
                        exhausted,
                    ));
                }
            }
            queues.shuffle(&mut rand::rng());
            let mut leased = Batch::new();
            let with_attempt = |row: &Exec,
                                attempt: &(AttemptType, TaskCeilings),
                                w: &mut Writes<'_>,
                                _: &mut Effects| {
                write_attempt(w, row, attempt.0, request, now);
            };
            let mut keys = ClaimKeys::default();
            let mut progressed = true;
            while progressed && leased.len() < request.limit as usize {
                progressed = false;
                for (queue, ceilings, exhausted) in &mut queues {
                    if leased.len() == request.limit as usize {
                        break;
                    }
                    let Some(mut row) = queue.next() else {
                        continue;
                    };
                    progressed = true;
                    // Budget admission reads the leases so far; most rows
                    // need no check. (`keys` counts a key's own.)
                    if *exhausted {
                        leased.save(tx, effects, with_attempt).await?;
                    }
                    // Budget admission: what an exhausted budget covers is not
                    // started but blocked, so the next claim looks past it.
                    if *exhausted && budget_admission::over_budget(tx.conn()?, &row).await? {
                        budget_admission::block(tx.conn()?, &mut row, effects).await?;
                        continue;
                    }
                    if row.concurrency_key.is_some() {
                        match keys.judge(tx, &row, now).await? {
                            KeyVerdict::Admit(held) => row.concurrency_held = held,
                            KeyVerdict::Block(rule) => {
                                // Blocking the key's queue reads the rows as
                                // stored: the leases so far must be.
                                leased.save(tx, effects, with_attempt).await?;
                                concurrency::block(tx, &mut row, &rule, effects).await?;
                                continue;
                            }
                        }
                    }
                    let before = row.lease_before();
                    let attempt_type = lease_row(&mut row, request, now);
                    leased.push(row, Some(before), (attempt_type, *ceilings));
                }
            }
            leased.save(tx, effects, with_attempt).await?;
            let claimed: Vec<ClaimedExecution> = leased
                .into_rows()
                .map(|p| claimed_execution(p.row, p.extra.0, p.extra.1, now))
                .collect();
            tracing::debug!(claimed = claimed.len(), "claim");
            Ok(claimed)
        })
    })
    .await
}

/// Tenants with claimable work, their limits, and whether each has an
/// exhausted budget (one probe each of `executions_claim_idx` and
/// `budget_dimensions_exhausted_idx`), in one round trip.
const TENANTS_WITH_WORK: &str = "SELECT t.tenant_id, t.limits, \
        EXISTS (SELECT 1 FROM budget_dimensions d WHERE d.tenant_id = t.tenant_id AND d.exhausted) \
    FROM tenants t WHERE EXISTS (\
        SELECT 1 FROM executions e WHERE e.tenant_id = t.tenant_id \
          AND e.lifecycle_phase = 'runnable' AND e.eligibility_state = 'eligible_now')";

/// A tenant's running executions (off `executions_active_idx`).
const RUNNING: &str =
    "SELECT count(*) FROM executions WHERE tenant_id = ? AND lifecycle_phase = 'active'";

async fn tenants_with_work(tx: &mut Tx<'_>) -> Result<Vec<(TenantId, TenantLimits, bool)>> {
    let rows: Vec<(TenantId, Json<TenantLimits>, bool)> =
        tx.fetch("claim", TENANTS_WITH_WORK, |_| {}).await?;
    Ok(rows.into_iter().map(|(t, l, x)| (t, l.0, x)).collect())
}

/// How many executions the tenant may start now, at most `limit`.
async fn room(
    tx: &mut Tx<'_>,
    tenant: TenantId,
    limits: &TenantLimits,
    limit: u32,
    now: Millis,
) -> Result<u32> {
    let mut room = i64::from(limit);
    if let Some(max) = limits.max_running {
        let running = count(tx, RUNNING, |w| {
            w.bind(tenant);
        })
        .await?;
        room = room.min(i64::from(max) - running);
    }
    if let Some(max) = limits.max_starts_per_window {
        let window = limits.start_window_ms.unwrap_or(DEFAULT_START_WINDOW_MS);
        let since = now - stored_i64(window);
        let started = count(
            tx,
            "SELECT count(*) FROM attempts WHERE tenant_id = ? AND started_at > ?",
            |w| {
                w.bind(tenant).bind(since);
            },
        )
        .await?;
        room = room.min(i64::from(max) - started);
    }
    Ok(u32::try_from(room.max(0)).unwrap_or(0))
}

/// The one number a `count(*)` returns.
async fn count<'q>(tx: &mut Tx<'_>, sql: &str, bind: impl FnOnce(&mut Writes<'q>)) -> Result<i64> {
    let rows: Vec<(i64,)> = tx.fetch("claim", sql, bind).await?;
    Ok(rows.first().map_or(0, |r| r.0))
}

/// The tenant's best `room` claimable executions in the request's lanes whose
/// required capabilities the worker has.
async fn candidates(
    tx: &mut Tx<'_>,
    tenant: TenantId,
    request: &ClaimRequest,
    room: u32,
) -> Result<Vec<Exec>> {
    let capabilities = serde_json::to_string(&request.capabilities).expect("strings serialise");
    let mut all = Vec::new();
    let lanes: HashSet<&String> = request.lanes.iter().collect();
    let sql = Exec::select_sql(
        "tenant_id = ? AND lane = ? AND lifecycle_phase = 'runnable' \
           AND eligibility_state = 'eligible_now' \
           AND (required_capabilities = '[]' OR NOT EXISTS ( \
               SELECT 1 FROM json_each(required_capabilities) need \
               WHERE need.value NOT IN (SELECT value FROM json_each(?)))) \
         ORDER BY priority DESC, eligible_at, execution_id LIMIT ?",
    );
    for lane in lanes {
        let rows: Vec<Exec> = tx
            .fetch("claim", &sql, |w| {
                w.bind(tenant)
                    .bind(lane.as_str())
                    .bind(capabilities.as_str())
                    .bind(i64::from(room));
            })
            .await?;
        all.extend(rows.into_iter().map(Exec::remembering_stored));
    }
    all.sort_by(|a, b| {
        (b.priority, a.eligible_at, a.execution_id).cmp(&(
            a.priority,
            b.eligible_at,
            b.execution_id,
        ))
    });
    all.truncate(room as usize);
    Ok(all)
}

/// Give `row` a new lease (and, unless it resumes a suspension, a new
/// attempt), in memory; the claim saves its rows together.
fn lease_row(row: &mut Exec, request: &ClaimRequest, now: Millis) -> AttemptType {
    let attempt_type = row.attempt_state.next_attempt_type();
    row.lifecycle_phase = LifecyclePhase::Active;
    row.ownership_state = Ownership::Leased;
    row.eligibility_state = Eligibility::NotApplicable;
    row.attempt_state = AttemptPhase::RunningAttempt;
    // A resumed suspension continues its attempt (and its frame sequence).
    if attempt_type != AttemptType::Resume {
        row.attempt_index += 1;
        row.frame_seq = 0;
    }
    row.lease_epoch += 1;
    row.lease_id = Some(uuid::Builder::from_random_bytes(rand::random()).into_uuid());
    row.lease_expires_at = Some(after(now, request.lease_ttl));
    row.attempt_timeout_at = row
        .policy
        .timeouts
        .attempt_timeout_ms
        .map(|ms| after_ms(now, ms));
    row.started_at = row.started_at.or(Some(now));
    row.progress_percent = None;
    row.progress_message = None;
    row.updated_at = now;
    attempt_type
}

/// The attempt a claim starts (a resumed one's row exists: it takes the new
/// lease), written with its execution's row.
fn write_attempt(
    w: &mut Writes<'_>,
    row: &Exec,
    attempt_type: AttemptType,
    request: &ClaimRequest,
    now: Millis,
) {
    w.statement(
        "INSERT INTO attempts (tenant_id, execution_id, attempt_index, attempt_type, lease_id, \
         lease_epoch, worker_id, worker_instance, state, started_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?) \
         ON CONFLICT (tenant_id, execution_id, attempt_index) DO UPDATE SET \
             lease_id = excluded.lease_id, lease_epoch = excluded.lease_epoch, \
             worker_id = excluded.worker_id, worker_instance = excluded.worker_instance, \
             state = 'running'",
    )
    .bind(row.tenant_id)
    .bind(row.execution_id)
    .bind(row.attempt_index)
    .bind(attempt_type_str(attempt_type))
    .bind(row.lease_id)
    .bind(row.lease_epoch)
    .bind(request.worker_id.clone())
    .bind(request.worker_instance.clone())
    .bind(now);
}

/// What the worker gets for a leased row.
fn claimed_execution(
    mut row: Exec,
    attempt_type: AttemptType,
    ceilings: TaskCeilings,
    now: Millis,
) -> ClaimedExecution {
    let lease = row.lease().expect("a claimed row holds a lease");
    ClaimedExecution {
        lease,
        kind: std::mem::take(&mut row.kind),
        lane: std::mem::take(&mut row.lane),
        input: std::mem::take(&mut row.input),
        priority: row.priority,
        tags: std::mem::take(&mut row.tags.0),
        policy: std::mem::take(&mut row.policy.0),
        attempt_type,
        retry_count: row.retry_count,
        lease_expires_at: at(row.lease_expires_at.unwrap_or(now)),
        ceilings,
        resumed_from: (attempt_type == AttemptType::Resume).then_some(row.suspension_seq),
    }
}

fn attempt_type_str(t: AttemptType) -> &'static str {
    match t {
        AttemptType::Initial | AttemptType::Resume => "initial",
        AttemptType::Retry => "retry",
        AttemptType::Reclaim => "reclaim",
        AttemptType::Replay => "replay",
        AttemptType::Delayed => "delayed",
    }
}

#[cfg(test)]
mod tests {
    use super::{RUNNING, TENANTS_WITH_WORK};
    use crate::backend::sqlite::plans::{claim_request, query_plans, Scratch};
    use crate::backend::{ConcurrencyLimits, Executions, Leases, Tenancy};
    use crate::model::{
        Completion, ConcurrencyLimit, ConcurrencyScope, KeyLimit, NewExecution, PublicState,
    };

    /// The claim's per-tenant lookups stay on their partial indexes, not on
    /// `executions_state_idx`, which lists a tenant's finished executions
    /// too: a tenant with a long history would then hold the one writer on
    /// every claim. (The bundled SQLite plans them so; an older system
    /// SQLite, 3.40, picks `executions_state_idx` for the first.)
    #[tokio::test]
    async fn the_claims_lookups_stay_on_their_partial_indexes() {
        let plans = query_plans(&[TENANTS_WITH_WORK, RUNNING]).await;
        let (tenants, running) = (&plans[0], &plans[1]);
        assert!(tenants.contains("executions_claim_idx"), "{tenants}");
        assert!(
            tenants.contains("budget_dimensions_exhausted_idx"),
            "{tenants}"
        );
        assert!(running.contains("executions_active_idx"), "{running}");
        for plan in [tenants, running] {
            assert!(!plan.contains("executions_state_idx"), "{plan}");
        }
    }

    /// A claim of keyed work judges its keys on the locked handle, counting
    /// starts and blocking a full key's queue there, with no write through
    /// sqlx.
    #[tokio::test]
    async fn a_keyed_claim_stays_on_the_locked_handle() {
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        let tenant = db.create_tenant("keys").await.unwrap().tenant_id;
        let limit = ConcurrencyLimit {
            scope: ConcurrencyScope::Kind,
            name: "job".into(),
            limit: KeyLimit {
                max_running: 1,
                max_starts: Some(10),
                window_ms: Some(60_000),
            },
        };
        db.set_concurrency_limit(tenant, &limit, 10).await.unwrap();
        let keyed = |key: &str| NewExecution {
            concurrency_key: Some(key.into()),
            ..NewExecution::new("job", Vec::new())
        };
        let news = [keyed("a"), keyed("a"), keyed("a"), keyed("b")];
        let ids = db.create_executions(tenant, &news, None).await.unwrap();
        let before = db.sqlx_writes();
        let claimed = db
            .claim(&claim_request(&["default"], &[], 4))
            .await
            .unwrap();
        assert_eq!(db.sqlx_writes(), before, "the claim ran on the handle");
        assert_eq!(claimed.len(), 2, "one of each key: {claimed:?}");
        let mut states = Vec::new();
        for created in &ids {
            let id = created.execution_id;
            states.push(db.get_execution(tenant, id).await.unwrap().state);
        }
        let blocked = states.iter().filter(|s| **s != PublicState::Active).count();
        assert_eq!(blocked, 2, "the rest of key a held back: {states:?}");
        let starts: i64 = sqlx::query_scalar(
            "SELECT sum(window_starts) FROM concurrency_slots WHERE tenant_id = ?",
        )
        .bind(tenant)
        .fetch_one(db.reader())
        .await
        .unwrap();
        assert_eq!(starts, 2, "each key's start counted");

        // Their ends hand key a's slot on, on the handle too.
        let done: Vec<Completion<'_>> = claimed
            .iter()
            .map(|c| Completion::new(&c.lease, b"done"))
            .collect();
        let before = db.sqlx_writes();
        for written in db.complete_many(&done).await.unwrap() {
            written.unwrap();
        }
        assert_eq!(db.sqlx_writes(), before, "the ends ran on the handle");
        let next = db
            .claim(&claim_request(&["default"], &[], 4))
            .await
            .unwrap();
        assert_eq!(next.len(), 1, "key a's next was handed the slot: {next:?}");
    }
}
