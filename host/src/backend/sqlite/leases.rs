//! The claim, renew and the fenced worker operations.
//!
//! Each runs in one write transaction: read the row, check the lease fence in
//! Rust, change the row, its attempt and the outbox, commit. A handle that no
//! longer names the live lease changes nothing; [`hold`] then says why, or
//! recognises a replay by the handle that already made the same move.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::seq::SliceRandom;
use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::batch::Batch;
use super::budget_admission;
use super::concurrency::{self, KeyVerdict};
use super::executions::{end_attempt, write_end_attempt};
use super::record::{not_found, Exec};
use super::time::{after, after_ms, at, millis_of, now, Millis};
use super::writes::Writes;
use super::{Effects, SqliteBackend};
use crate::backend::Leases;
use crate::backend::{stale_lease, LeaseLookup, LeaseMiss, NOT_HELD};
use crate::error::{EngineError, Result};
use crate::model::TerminalOutcome;
use crate::model::{AttemptPhase, Eligibility, LifecyclePhase, Ownership};
use crate::model::{
    AttemptState, AttemptType, ClaimRequest, ClaimedExecution, FailOutcome, Failure, LeaseHandle,
    PublicState, RetryDecision, TaskCeilings, TenantId, TenantLimits, DEFAULT_START_WINDOW_MS,
};
use crate::model::{ExecutionId, FailureClass};

#[async_trait]
impl Leases for SqliteBackend {
    /// Lease up to `request.limit` runnable executions, round-robin across
    /// tenants: each tenant's best candidates (priority, then age) within its
    /// room under `max_running` and the start-rate quota; the first of every
    /// tenant goes before the second of any, in a fresh random tenant order per
    /// claim, so no tenant is always served first. A candidate an exhausted
    /// budget covers is blocked instead of started.
    #[tracing::instrument(skip_all, fields(worker = %request.worker_id, limit = request.limit))]
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>> {
        let db = self;
        if request.limit == 0 || request.lanes.is_empty() {
            return Ok(Vec::new());
        }
        db.write("claim", async |conn, effects| {
            let now = now();
            let mut queues = Vec::new();
            for (tenant, limits) in tenants_with_work(conn).await? {
                if request.exclude_tenants.contains(&tenant) {
                    continue;
                }
                let room = room(conn, tenant, &limits, request.limit, now).await?;
                if room == 0 {
                    continue;
                }
                let candidates = candidates(conn, tenant, request, room).await?;
                if !candidates.is_empty() {
                    let exhausted = budget_admission::any_exhausted(conn, tenant).await?;
                    queues.push((
                        candidates.into_iter(),
                        TaskCeilings::from(&limits),
                        exhausted,
                    ));
                }
            }
            queues.shuffle(&mut rand::rng());
            let mut leased = Batch::new();
            let write_attempt = |row: &Exec,
                                 attempt: &(AttemptType, TaskCeilings),
                                 w: &mut Writes<'_>,
                                 _: &mut Effects| {
                write_attempt(w, row, attempt.0, request, now);
            };
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
                    // What the checks below read must see the leases so far
                    // (a key's running count); most rows need neither check.
                    if *exhausted || row.concurrency_key.is_some() {
                        leased.save(conn, effects, write_attempt).await?;
                    }
                    // Budget admission: what an exhausted budget covers is not
                    // started but blocked, so the next claim looks past it.
                    if *exhausted && budget_admission::over_budget(conn, &row).await? {
                        budget_admission::block(conn, &mut row, effects).await?;
                        continue;
                    }
                    match concurrency::judge(conn, &row, now).await? {
                        KeyVerdict::Admit(held) => row.concurrency_held = held,
                        KeyVerdict::Block(rule) => {
                            concurrency::block(conn, &mut row, &rule, effects).await?;
                            continue;
                        }
                    }
                    let before = row.lease_before();
                    let attempt_type = lease_row(&mut row, request, now);
                    leased.push(row, Some(before), (attempt_type, *ceilings));
                }
            }
            leased.save(conn, effects, write_attempt).await?;
            let claimed: Vec<ClaimedExecution> = leased
                .into_rows()
                .map(|p| claimed_execution(p.row, p.extra.0, p.extra.1, now))
                .collect();
            tracing::debug!(claimed = claimed.len(), "claim");
            Ok(claimed)
        })
        .await
    }

    async fn renew(&self, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>> {
        let db = self;
        db.write("renew", async |conn, effects| {
            let mut row = held(conn, lease).await?;
            let before = row.lease_before();
            let now = now();
            row.lease_expires_at = Some(after(now, ttl));
            row.updated_at = now;
            row.save(conn, Some(before), effects).await?;
            Ok(at(row.lease_expires_at.unwrap_or(now)))
        })
        .await
    }

    async fn complete(&self, lease: &LeaseHandle, result: &[u8]) -> Result<()> {
        let db = self;
        db.write("complete", async |conn, effects| {
            complete_in(conn, lease, result, effects).await
        })
        .await
    }

    /// Complete several executions in one write transaction. One that is
    /// refused (stale, foreign) or replayed is told so and writes nothing; the
    /// fence is checked before anything is written, so the rest go on. A
    /// storage error fails the whole batch, which rolls back, and the worker
    /// pool's completer then writes them one at a time. The batch costs one
    /// read of its rows, one round trip a chunk of completions
    /// ([`Batch`]) and one commit.
    async fn complete_many(&self, completions: &[(LeaseHandle, &[u8])]) -> Result<Vec<Result<()>>> {
        let db = self;
        db.write("complete many", async |conn, effects| {
            let now = now();
            let write_end = |row: &Exec, _: &(), w: &mut Writes<'_>, effects: &mut Effects| {
                write_success(w, row, now, effects);
            };
            let mut results = Vec::with_capacity(completions.len());
            let keys = completions
                .iter()
                .map(|(l, _)| (l.tenant_id, l.execution_id));
            let mut rows = Exec::load_many(conn, keys).await?;
            let mut ended = Batch::new();
            for (lease, result) in completions {
                let key = (lease.tenant_id, lease.execution_id);
                // A row read above that the lease still holds; any other (not
                // held, or completed earlier in this batch) is read again,
                // after what is pending is written, and explained one by one.
                let held = rows.remove(&key).filter(|row| row.is_held_by(lease));
                let row = match held {
                    Some(row) => Ok(Some(row)),
                    None => {
                        ended.save(conn, effects, write_end).await?;
                        held_or_replayed(conn, lease, AttemptState::Succeeded).await
                    }
                };
                match row {
                    Ok(Some(mut row)) => {
                        let before = row.lease_before();
                        end_with_success(&mut row, result, now);
                        ended.push(row, Some(before), ());
                        results.push(Ok(()));
                    }
                    Ok(None) => results.push(Ok(())),
                    Err(e @ EngineError::Storage { .. }) => return Err(e),
                    Err(refused) => results.push(Err(refused)),
                }
            }
            ended.save(conn, effects, write_end).await?;
            Ok(results)
        })
        .await
    }

    async fn fail(&self, lease: &LeaseHandle, failure: &Failure) -> Result<FailOutcome> {
        let db = self;
        db.write("fail", async |conn, effects| {
            match hold(conn, lease, AttemptState::Failed).await? {
                Hold::Held(mut row) => fail_row(conn, &mut row, failure, effects).await,
                Hold::Replayed {
                    state: PublicState::Failed,
                    attempt_is_current: true,
                } => Ok(FailOutcome::TerminalFailed),
                Hold::Replayed { .. } => Ok(FailOutcome::RetryScheduled { retry_at: None }),
            }
        })
        .await
    }

    async fn cancel_by_worker(&self, lease: &LeaseHandle, reason: &str) -> Result<()> {
        let db = self;
        db.write("cancel", async |conn, effects| {
            let Some(mut row) = held_or_replayed(conn, lease, AttemptState::Cancelled).await?
            else {
                return Ok(());
            };
            let now = now();
            let before = row.lease_before();
            row.make_terminal(TerminalOutcome::Cancelled, now);
            row.cancellation_reason = Some(reason.to_owned());
            row.save(conn, Some(before), effects).await?;
            end_attempt(conn, &row, "cancelled", None, &["running"], now).await?;
            row.record_completion(conn, effects).await
        })
        .await
    }

    /// Operator revoke: the active attempt ends `revoked` now and the execution
    /// is runnable again; the worker holding the lease is told at once.
    async fn revoke_lease(&self, tenant: TenantId, id: ExecutionId) -> Result<i32> {
        let db = self;
        db.write("revoke lease", async |conn, effects| {
            let mut row = Exec::get(conn, tenant, id).await?;
            if row.lifecycle_phase != LifecyclePhase::Active {
                return Err(EngineError::NotActive {
                    execution_id: id,
                    state: row.derived_public_state(),
                });
            }
            let now = now();
            let before = row.lease_before();
            row.release_lease(now);
            row.ownership_state = Ownership::LeaseRevoked;
            row.make_runnable(now, AttemptPhase::AttemptInterrupted, now);
            row.save(conn, Some(before), effects).await?;
            let failure = Failure::new(
                FailureClass::LeaseExpired,
                "the lease was revoked by an operator",
            );
            end_attempt(conn, &row, "revoked", Some(&failure), &["running"], now).await?;
            effects.revoked.push(id);
            Ok(row.attempt_index)
        })
        .await
    }

    async fn delay(&self, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()> {
        let db = self;
        db.write("delay", async |conn, effects| {
            let Some(mut row) = held_or_replayed(conn, lease, AttemptState::Delayed).await? else {
                return Ok(());
            };
            let now = now();
            let before = row.lease_before();
            row.release_lease(now);
            row.make_runnable(millis_of(until), AttemptPhase::PendingDelayedAttempt, now);
            row.save(conn, Some(before), effects).await?;
            end_attempt(conn, &row, "delayed", None, &["running"], now).await
        })
        .await
    }
}

/// A fenced write found its row: held by the handle, or already moved by it.
pub(super) enum Hold {
    Held(Box<Exec>),
    /// The same handle already made this move (its attempt is in the state
    /// the move leaves): a replay.
    Replayed {
        state: PublicState,
        attempt_is_current: bool,
    },
}

/// Read the row a lease names and check the fence; when it does not hold,
/// the error that says why (or [`Hold::Replayed`] for a replay of `replay_as`).
pub(super) async fn hold(
    conn: &mut SqliteConnection,
    lease: &LeaseHandle,
    replay_as: AttemptState,
) -> Result<Hold> {
    let row = Exec::load(conn, lease.tenant_id, lease.execution_id)
        .await?
        .ok_or_else(|| not_found(lease.execution_id))?;
    if row.is_held_by(lease) {
        return Ok(Hold::Held(Box::new(row)));
    }
    let attempt: Option<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT lease_id, lease_epoch, state FROM attempts \
         WHERE tenant_id = ? AND execution_id = ? AND attempt_index = ?",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(lease.attempt_index)
    .fetch_optional(conn)
    .await
    .map_err(EngineError::storage("read lease state"))?;
    let attempt = match attempt {
        Some((id, epoch, state)) => Some((id, epoch, state.parse().map_err(EngineError::Corrupt)?)),
        None => None,
    };
    let lookup = LeaseLookup {
        state: row.derived_public_state(),
        current_attempt: row.attempt_index,
        current_epoch: row.lease_epoch,
        attempt,
    };
    match lookup.explain(lease, replay_as) {
        LeaseMiss::Replayed {
            state,
            attempt_is_current,
        } => Ok(Hold::Replayed {
            state,
            attempt_is_current,
        }),
        LeaseMiss::Rejected(e) => Err(e),
    }
}

/// The row the lease holds, or why it does not: for writes that are not
/// moves out of `active` (renew, frames, progress, waitpoints, spawns), for
/// which a replay is nothing to recognise.
pub(super) async fn held(conn: &mut SqliteConnection, lease: &LeaseHandle) -> Result<Exec> {
    match hold(conn, lease, AttemptState::Running).await? {
        Hold::Held(row) => Ok(*row),
        Hold::Replayed { .. } => Err(stale_lease(lease, NOT_HELD)),
    }
}

/// A held row, or `Ok(None)` for a replay that needs no answer of its own.
async fn held_or_replayed(
    conn: &mut SqliteConnection,
    lease: &LeaseHandle,
    replay_as: AttemptState,
) -> Result<Option<Exec>> {
    Ok(match hold(conn, lease, replay_as).await? {
        Hold::Held(row) => Some(*row),
        Hold::Replayed { .. } => None,
    })
}

async fn complete_in(
    conn: &mut SqliteConnection,
    lease: &LeaseHandle,
    result: &[u8],
    effects: &mut Effects,
) -> Result<()> {
    match held_or_replayed(conn, lease, AttemptState::Succeeded).await? {
        Some(row) => succeed(conn, row, result, effects).await,
        None => Ok(()),
    }
}

/// End a held execution with its result.
async fn succeed(
    conn: &mut SqliteConnection,
    mut row: Exec,
    result: &[u8],
    effects: &mut Effects,
) -> Result<()> {
    let now = now();
    let before = row.lease_before();
    end_with_success(&mut row, result, now);
    row.save_and(conn, Some(before), effects, |row, w, effects| {
        write_success(w, row, now, effects);
    })
    .await
}

/// A held row ended with its result, in memory.
fn end_with_success(row: &mut Exec, result: &[u8], now: Millis) {
    row.make_terminal(TerminalOutcome::Success, now);
    row.result = Some(result.to_vec());
}

/// What a success writes beside its row: the attempt's end and the outbox.
fn write_success(w: &mut Writes<'_>, row: &Exec, now: Millis, effects: &mut Effects) {
    write_end_attempt(w, row, "succeeded", None, &["running"], now);
    row.write_completion(w, effects);
}

/// Apply a failure to a held row: another attempt after the policy's backoff,
/// or the end. Shared by worker `fail` and the attempt-timeout scanner.
pub(super) async fn fail_row(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    failure: &Failure,
    effects: &mut Effects,
) -> Result<FailOutcome> {
    let now = now();
    let before = row.lease_before();
    let retries = u32::try_from(row.retry_count).unwrap_or(0);
    let decision = row.policy.retry_decision(failure.class, retries);
    row.release_lease(now);
    row.last_failure = Some(Json(failure.clone()));
    let outcome = match decision {
        RetryDecision::RetryAfter(backoff) => {
            row.retry_count += 1;
            row.make_runnable(after(now, backoff), AttemptPhase::PendingRetryAttempt, now);
            FailOutcome::RetryScheduled {
                retry_at: Some(at(row.eligible_at)),
            }
        }
        RetryDecision::Terminal => {
            row.make_terminal(TerminalOutcome::Failed, now);
            FailOutcome::TerminalFailed
        }
    };
    row.save_and(conn, Some(before), effects, |row, w, effects| {
        write_end_attempt(w, row, "failed", Some(failure), &["running"], now);
        if row.is_terminal() {
            row.write_completion(w, effects);
        }
    })
    .await?;
    Ok(outcome)
}

/// Tenants with claimable work, and their limits (off `executions_claim_idx`).
async fn tenants_with_work(conn: &mut SqliteConnection) -> Result<Vec<(TenantId, TenantLimits)>> {
    let rows: Vec<(TenantId, Json<TenantLimits>)> = sqlx::query_as(
        "SELECT t.tenant_id, t.limits FROM tenants t WHERE EXISTS (\
             SELECT 1 FROM executions e WHERE e.tenant_id = t.tenant_id \
             AND e.lifecycle_phase = 'runnable' AND e.eligibility_state = 'eligible_now')",
    )
    .fetch_all(conn)
    .await
    .map_err(EngineError::storage("claim"))?;
    Ok(rows.into_iter().map(|(t, l)| (t, l.0)).collect())
}

/// How many executions the tenant may start now, at most `limit`.
async fn room(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    limits: &TenantLimits,
    limit: u32,
    now: Millis,
) -> Result<u32> {
    let mut room = i64::from(limit);
    if let Some(max) = limits.max_running {
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM executions WHERE tenant_id = ? AND lifecycle_phase = 'active'",
        )
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await
        .map_err(EngineError::storage("claim"))?;
        room = room.min(i64::from(max) - running);
    }
    if let Some(max) = limits.max_starts_per_window {
        let window = limits.start_window_ms.unwrap_or(DEFAULT_START_WINDOW_MS);
        let started: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attempts WHERE tenant_id = ? AND started_at > ?",
        )
        .bind(tenant)
        .bind(now - i64::try_from(window).unwrap_or(i64::MAX))
        .fetch_one(&mut *conn)
        .await
        .map_err(EngineError::storage("claim"))?;
        room = room.min(i64::from(max) - started);
    }
    Ok(u32::try_from(room.max(0)).unwrap_or(0))
}

/// The tenant's best `room` claimable executions in the request's lanes whose
/// required capabilities the worker has.
async fn candidates(
    conn: &mut SqliteConnection,
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
        let rows: Vec<Exec> = sqlx::query_as(&sql)
            .bind(tenant)
            .bind(lane)
            .bind(&capabilities)
            .bind(i64::from(room))
            .fetch_all(&mut *conn)
            .await
            .map_err(EngineError::storage("claim"))?;
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
