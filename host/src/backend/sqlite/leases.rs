//! Renew and the fenced worker operations (the claim is in `claim`).
//!
//! Each runs in one write transaction: read the row, check the lease fence in
//! Rust, change the row, its attempt and the outbox, commit. A handle that no
//! longer names the live lease changes nothing; [`hold`] then says why, or
//! recognises a replay by the handle that already made the same move.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::batch::Batch;
use super::claim::claim;
use super::executions::{end_attempt, write_end_attempt};
use super::record::{not_found, Exec};
use super::time::{after, at, millis_of, now, Millis};
use super::tx::Tx;
use super::writes::Writes;
use super::{Effects, SqliteBackend};
use crate::backend::refusals;
use crate::backend::{stale_lease, LeaseLookup, LeaseMiss, NOT_HELD};
use crate::error::{EngineError, Result};
use crate::model::TerminalOutcome;
use crate::model::{AttemptPhase, LifecyclePhase, Ownership};
use crate::model::{
    AttemptState, Completion, FailOutcome, Failure, LeaseHandle, PublicState, RetryDecision,
    TenantId,
};
use crate::model::{ExecutionId, FailureClass};

crate::backend::traits::implement_leases!(SqliteBackend, sqlite);

async fn renew(db: &SqliteBackend, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>> {
    db.write_held_tx("renew", lease, &ttl, |held, ttl| {
        Box::pin(async move {
            let (tx, mut row, effects) = (held.tx, held.row, held.effects);
            let before = row.lease_before();
            let now = now();
            row.lease_expires_at = Some(after(now, *ttl));
            row.updated_at = now;
            row.save_in(tx, Some(before), effects, |_, _, _| {}).await?;
            Ok(at(row.lease_expires_at.unwrap_or(now)))
        })
    })
    .await
}

async fn complete(db: &SqliteBackend, completion: &Completion<'_>) -> Result<()> {
    db.write_tx("complete", completion, |tx, effects, completion| {
        Box::pin(async move {
            match held_or_replayed(tx, completion.lease, AttemptState::Succeeded).await? {
                Some(row) => succeed(tx, row, completion, effects).await,
                None => Ok(()),
            }
        })
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
async fn complete_many(
    db: &SqliteBackend,
    completions: &[Completion<'_>],
) -> Result<Vec<Result<()>>> {
    db.write_tx("complete many", completions, |tx, effects, completions| {
        Box::pin(async move {
            let now = now();
            let write_end = |row: &Exec, _: &(), w: &mut Writes<'_>, effects: &mut Effects| {
                write_success(w, row, now, effects);
            };
            let mut results = Vec::with_capacity(completions.len());
            let keys: Vec<_> = completions
                .iter()
                .map(|c| (c.lease.tenant_id, c.lease.execution_id))
                .collect();
            let mut rows = Exec::load_many(tx, &keys).await?;
            let mut ended = Batch::new();
            for completion in completions {
                let lease = completion.lease;
                let key = (lease.tenant_id, lease.execution_id);
                // A row read above that the lease still holds; any other (not
                // held, or completed earlier in this batch) is read again,
                // after what is pending is written, and explained one by one.
                let held = rows.remove(&key).filter(|row| row.is_held_by(lease));
                let row = match held {
                    Some(row) => Ok(Some(row)),
                    None => {
                        ended.save(tx, effects, write_end).await?;
                        held_or_replayed(tx, lease, AttemptState::Succeeded).await
                    }
                };
                match row {
                    Ok(Some(mut row)) => {
                        let before = row.lease_before();
                        end_with_success(&mut row, completion, now);
                        ended.push(row, Some(before), ());
                        results.push(Ok(()));
                    }
                    Ok(None) => results.push(Ok(())),
                    Err(e @ EngineError::Storage { .. }) => return Err(e),
                    Err(refused) => results.push(Err(refused)),
                }
            }
            ended.save(tx, effects, write_end).await?;
            Ok(results)
        })
    })
    .await
}

async fn fail(db: &SqliteBackend, lease: &LeaseHandle, failure: &Failure) -> Result<FailOutcome> {
    db.write_tx("fail", &(lease, failure), |tx, effects, input| {
        let (lease, failure) = *input;
        Box::pin(async move {
            match hold(tx, lease, AttemptState::Failed).await? {
                Hold::Held(mut row) => fail_row(tx, &mut row, failure, effects).await,
                Hold::Replayed {
                    state: PublicState::Failed,
                    attempt_is_current: true,
                } => Ok(FailOutcome::TerminalFailed),
                Hold::Replayed { .. } => Ok(FailOutcome::RetryScheduled { retry_at: None }),
            }
        })
    })
    .await
}

async fn cancel_by_worker(db: &SqliteBackend, lease: &LeaseHandle, reason: &str) -> Result<()> {
    db.write("cancel", async |conn, effects| {
        let Some(mut row) =
            held_or_replayed(&mut Tx::Sqlx(conn), lease, AttemptState::Cancelled).await?
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
async fn revoke_lease(db: &SqliteBackend, tenant: TenantId, id: ExecutionId) -> Result<i32> {
    let op = "revoke lease";
    db.write_row(op, tenant, id, async |conn, mut row, effects| {
        row.require(LifecyclePhase::Active, refusals::not_active)?;
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

async fn delay(db: &SqliteBackend, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()> {
    db.write("delay", async |conn, effects| {
        let Some(mut row) =
            held_or_replayed(&mut Tx::Sqlx(conn), lease, AttemptState::Delayed).await?
        else {
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
    tx: &mut Tx<'_>,
    lease: &LeaseHandle,
    replay_as: AttemptState,
) -> Result<Hold> {
    let row = Exec::load_in(tx, lease.tenant_id, lease.execution_id)
        .await?
        .ok_or_else(|| not_found(lease.execution_id))?;
    if row.is_held_by(lease) {
        return Ok(Hold::Held(Box::new(row)));
    }
    let attempt: Option<(Uuid, i64, String)> = tx
        .optional(
            "read lease state",
            "SELECT lease_id, lease_epoch, state FROM attempts \
             WHERE tenant_id = ? AND execution_id = ? AND attempt_index = ?",
            |w| {
                w.bind_attempt(lease);
            },
        )
        .await?;
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
/// moves out of `active` (renew, frames, progress, steps, waitpoints,
/// spawns), for which a replay is nothing to recognise.
pub(super) async fn held(tx: &mut Tx<'_>, lease: &LeaseHandle) -> Result<Exec> {
    match hold(tx, lease, AttemptState::Running).await? {
        Hold::Held(row) => Ok(*row),
        Hold::Replayed { .. } => Err(stale_lease(lease, NOT_HELD)),
    }
}

/// A held row, or `Ok(None)` for a replay that needs no answer of its own.
async fn held_or_replayed(
    tx: &mut Tx<'_>,
    lease: &LeaseHandle,
    replay_as: AttemptState,
) -> Result<Option<Exec>> {
    Ok(match hold(tx, lease, replay_as).await? {
        Hold::Held(row) => Some(*row),
        Hold::Replayed { .. } => None,
    })
}

/// End a held execution with its result.
async fn succeed(
    tx: &mut Tx<'_>,
    mut row: Exec,
    completion: &Completion<'_>,
    effects: &mut Effects,
) -> Result<()> {
    let now = now();
    let before = row.lease_before();
    end_with_success(&mut row, completion, now);
    row.save_in(tx, Some(before), effects, |row, w, effects| {
        write_success(w, row, now, effects);
    })
    .await
}

/// A held row ended with its result, in memory.
fn end_with_success(row: &mut Exec, completion: &Completion<'_>, now: Millis) {
    row.make_terminal(TerminalOutcome::Success, now);
    row.result = Some(completion.result.to_vec());
    if let Some(progress) = completion.progress {
        row.progress_percent = Some(i16::from(progress.percent));
        row.progress_message = Some(progress.message.to_owned());
    }
}

/// What a success writes beside its row: the attempt's end and the outbox.
fn write_success(w: &mut Writes<'_>, row: &Exec, now: Millis, effects: &mut Effects) {
    write_end_attempt(w, row, "succeeded", None, &["running"], now);
    row.write_completion(w, effects);
}

/// Apply a failure to a held row: another attempt after the policy's backoff,
/// or the end. Shared by worker `fail` and the attempt-timeout scanner.
pub(super) async fn fail_row(
    tx: &mut Tx<'_>,
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
    row.save_in(tx, Some(before), effects, |row, w, effects| {
        write_end_attempt(w, row, "failed", Some(failure), &["running"], now);
        if row.is_terminal() {
            row.write_completion(w, effects);
        }
    })
    .await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlite::plans::{claim_request, Scratch};
    use crate::backend::{Executions, Leases, Tenancy};
    use crate::model::NewExecution;

    /// A failure and its replay, a completion and its replay, run whole on
    /// the locked handle (none runs again through sqlx), and a replay
    /// writes nothing more.
    #[tokio::test]
    async fn ends_and_their_replays_stay_on_the_locked_handle() {
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        let tenant = db.create_tenant("ends").await.unwrap().tenant_id;
        let new = NewExecution::new("job", Vec::new());
        db.create_executions(tenant, &[new.clone(), new], None)
            .await
            .unwrap();
        let claimed = db
            .claim(&claim_request(&["default"], &[], 2))
            .await
            .unwrap();
        let (failing, completing) = (&claimed[0].lease, &claimed[1].lease);
        let before = db.sqlx_writes();
        let failure = Failure::new(FailureClass::Permanent, "broke");
        let failed = db.fail(failing, &failure).await.unwrap();
        assert!(matches!(failed, FailOutcome::TerminalFailed), "{failed:?}");
        let replayed = db.fail(failing, &failure).await.unwrap();
        assert!(
            matches!(replayed, FailOutcome::TerminalFailed),
            "{replayed:?}"
        );
        let completion = Completion::new(completing, b"done");
        db.complete(&completion).await.unwrap();
        db.complete(&completion).await.unwrap();
        assert_eq!(db.sqlx_writes(), before, "every end ran locked");
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM completion_events")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(outbox, 2, "one completion event each, replays wrote none");
    }
}
