//! Renew and the fenced worker operations (the claim is in `claim`).
//!
//! Every write here names the lease it holds in its `WHERE` clause
//! (`attempt_index`, `lease_id`, `lease_epoch`, phase `active`), so a stale handle
//! changes nothing; [`explain_lease_miss`] then says why, or recognises a replay by
//! the caller that already succeeded.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use super::Connections;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::executions::read_execution;
use super::rows::{col, completion_outbox, explain_lease_miss, json, transaction, Args};
use super::PgBackend;
use crate::backend::refusals;
use crate::backend::stored_millis;
use crate::backend::Fetch;
use crate::backend::{stale_lease, LeaseMiss, NOT_HELD};
use crate::error::{EngineError, Result};
use crate::model::{
    AttemptState, Completion, ExecutionPolicy, FailOutcome, Failure, LeaseHandle, Progress,
    PublicState, RetryDecision,
};
use crate::model::{ClaimRequest, ClaimedExecution, ExecutionId, FailureClass, TenantId};

crate::backend::traits::implement_leases!(PgBackend, pg);

#[tracing::instrument(skip_all, fields(worker = %request.worker_id, limit = request.limit))]
async fn claim(db: &PgBackend, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>> {
    super::claim::claim(&db.claims, &db.claim_shape, request).await
}

async fn renew(db: &PgBackend, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>> {
    let pool = &db.pool;
    let sql = format!(
        "UPDATE executions SET lease_expires_at = now() + $6 * interval '1 millisecond' \
         WHERE {FENCE} RETURNING lease_expires_at"
    );
    let expires =
        sqlx::query_scalar_with(&sql, Args::fence(lease).push(millis(ttl)).done("renew")?)
            .optional(pool, "renew")
            .await?;
    match expires {
        Some(at) => Ok(at),
        None => Err(rejection(pool, lease, None).await?),
    }
}

/// Complete many executions in one statement, each fenced by its own lease.
///
/// The rows are not locked before they change, nor in any order: no other
/// statement waits for more than one running execution's row (every other
/// writer of many rows passes over locked ones, `SKIP LOCKED`), and two
/// batches never share a row whose lease they both hold, so there is no lock
/// cycle to order them against. A `FOR UPDATE` in key order before the update
/// wrote a lock record a row, 56 of a run's ~1,650 WAL bytes. Should a
/// deadlock come all the same, Postgres aborts one side and the worker
/// writes the batch one completion at a time. Completions whose lease no
/// longer matches change nothing and are explained afterwards one by one,
/// exactly as a single `complete` would be: a replay by the handle that
/// completed it is `Ok`, anything else its error.
#[tracing::instrument(skip_all, fields(count = completions.len()))]
async fn complete_many(db: &PgBackend, completions: &[Completion<'_>]) -> Result<Vec<Result<()>>> {
    let pool = &db.pool;
    const OP: &str = "complete many";
    if let [completion] = completions {
        // The single-row statement plans faster than the batch's join.
        return Ok(vec![complete(db, completion).await]);
    }
    let bound = batch_arguments(completions).done(OP)?;
    // One statement: atomic on its own, without a BEGIN and COMMIT round trip.
    let rows = sqlx::query_with(&COMPLETE_MANY_SQL, bound)
        .all(pool, OP)
        .await?;
    let moved = rows
        .iter()
        .map(|r| Ok((col(r, "tenant_id")?, col(r, "execution_id")?)))
        .collect::<Result<HashSet<(TenantId, ExecutionId)>>>()?;
    // The batch is written: from here on an error belongs to one completion.
    let mut results = Vec::with_capacity(completions.len());
    for c in completions {
        let lease = c.lease;
        results.push(if moved.contains(&(lease.tenant_id, lease.execution_id)) {
            Ok(())
        } else {
            replayed_or_rejected(pool, lease, AttemptState::Succeeded).await
        });
    }
    Ok(results)
}

/// The batch completion's arguments: a column array each.
fn batch_arguments(completions: &[Completion<'_>]) -> Args {
    let column = |field: fn(&LeaseHandle) -> uuid::Uuid| -> Vec<uuid::Uuid> {
        completions.iter().map(|c| field(c.lease)).collect()
    };
    Args::new()
        .push(column(|l| l.tenant_id.as_uuid()))
        .push(column(|l| l.execution_id.as_uuid()))
        .push(
            completions
                .iter()
                .map(|c| c.lease.attempt_index)
                .collect::<Vec<_>>(),
        )
        .push(column(|l| l.lease_id))
        .push(
            completions
                .iter()
                .map(|c| c.lease.lease_epoch)
                .collect::<Vec<_>>(),
        )
        .push(completions.iter().map(|c| c.result).collect::<Vec<_>>())
        .push(
            completions
                .iter()
                .map(|c| c.progress.map(|p| i16::from(p.percent)))
                .collect::<Vec<_>>(),
        )
        .push(
            completions
                .iter()
                .map(|c| c.progress.map(|p| p.message))
                .collect::<Vec<_>>(),
        )
}

#[tracing::instrument(skip_all, fields(execution = %lease.execution_id, attempt = lease.attempt_index, class = failure.class.as_str()))]
async fn fail(db: &PgBackend, lease: &LeaseHandle, failure: &Failure) -> Result<FailOutcome> {
    let pool = &db.pool;
    let applied = transaction(pool, "fail", async |tx| {
        let sql = format!("SELECT policy, retry_count FROM executions WHERE {FENCE} FOR UPDATE");
        let locked = sqlx::query_with(&sql, Args::fence(lease).done("fail")?)
            .optional(&mut *tx, "fail")
            .await?;
        let Some(row) = locked else {
            return Ok(None);
        };
        let policy: ExecutionPolicy = json(col(&row, "policy")?, "policy")?;
        let retry_count: i32 = col(&row, "retry_count")?;
        Ok(Some(
            fail_locked(tx, lease, failure, &policy, retry_count).await?,
        ))
    })
    .await?;
    if let Some(outcome) = applied {
        return Ok(outcome);
    }
    // The lease matched nothing: a replayed failure, or a stale lease.
    match explain_lease_miss(pool, lease, AttemptState::Failed).await? {
        LeaseMiss::Replayed {
            state,
            attempt_is_current,
        } if state == PublicState::Failed && attempt_is_current => Ok(FailOutcome::TerminalFailed),
        LeaseMiss::Replayed { .. } => Ok(FailOutcome::RetryScheduled { retry_at: None }),
        LeaseMiss::Rejected(e) => Err(e),
    }
}

#[tracing::instrument(skip_all, fields(execution = %lease.execution_id, attempt = lease.attempt_index))]
async fn cancel_by_worker(db: &PgBackend, lease: &LeaseHandle, reason: &str) -> Result<()> {
    let pool = &db.pool;
    let args = TransitionArgs {
        reason: Some(reason),
        ..Default::default()
    };
    simple_transition(pool, lease, &CANCEL, args).await
}

#[tracing::instrument(skip_all, fields(execution = %lease.execution_id, attempt = lease.attempt_index))]
async fn delay(db: &PgBackend, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()> {
    let pool = &db.pool;
    let args = TransitionArgs {
        eligible_at: Some(until),
        ..Default::default()
    };
    simple_transition(pool, lease, &DELAY, args).await
}

async fn revoke_lease(db: &PgBackend, tenant: TenantId, id: ExecutionId) -> Result<i32> {
    let pool = &db.pool;
    let failure = Failure::new(
        FailureClass::LeaseExpired,
        "the lease was revoked by an operator",
    );
    let revoked: Option<i32> = sqlx::query_scalar(REVOKE_SQL)
        .bind(tenant)
        .bind(id)
        .bind(serde_json::to_value(&failure).expect("failure serialises"))
        .optional(pool, "revoke lease")
        .await?;
    match revoked {
        Some(attempt) => Ok(attempt),
        None => Err(refusals::not_active(
            id,
            read_execution(pool, tenant, id).await?.state,
        )),
    }
}

pub(super) fn millis(d: Duration) -> i64 {
    stored_millis(d)
}

/// The lease a fenced write must still hold. It says nothing of the phase: a
/// lease exists only while the execution is `active` (a table constraint), and
/// naming the phase would let the planner pick the small partial
/// `executions_lease_expiry_idx` over the primary key whenever statistics are
/// thin, turning every fenced write into a scan of the tenant's running work.
pub(super) const FENCE: &str = "tenant_id = $1 AND execution_id = $2 AND attempt_index = $3 \
    AND lease_id = $4 AND lease_epoch = $5";

/// A fenced write matched nothing and is not a replay of `replay_as`: the error.
pub(super) async fn rejection(
    pool: &Connections,
    lease: &LeaseHandle,
    replay_as: Option<AttemptState>,
) -> Result<EngineError> {
    let replay_as = replay_as.unwrap_or(AttemptState::Running);
    Ok(match explain_lease_miss(pool, lease, replay_as).await? {
        LeaseMiss::Rejected(e) => e,
        LeaseMiss::Replayed { .. } => stale_lease(lease, NOT_HELD),
    })
}

/// One fenced move out of `active`: the execution row (fence + new state), the
/// attempt row, the completion outbox when it ends, and a wake-up when it is
/// immediately runnable again, all in one statement.
struct Transition {
    op: &'static str,
    /// `SET` assignments for the execution row. Parameters: `$6` result (bytea),
    /// `$7` reason (text), `$8` eligible at (timestamptz), `$9` failure (jsonb),
    /// `$11` delay in ms (bigint).
    set: &'static str,
    attempt_state: AttemptState,
}

#[derive(Default)]
struct TransitionArgs<'a> {
    result: Option<&'a [u8]>,
    /// Progress a completion carries (`$12`, `$13`).
    progress: Option<Progress<'a>>,
    reason: Option<&'a str>,
    eligible_at: Option<DateTime<Utc>>,
    failure: Option<&'a Failure>,
    delay_ms: Option<i64>,
}

/// What a transition left behind, when it matched.
struct Moved {
    phase: String,
    eligible_at: DateTime<Utc>,
}

async fn transition(
    conn: &mut PgConnection,
    lease: &LeaseHandle,
    t: &Transition,
    args: TransitionArgs<'_>,
) -> Result<Option<Moved>> {
    let sql = format!(
        r#"
WITH moved AS (
    UPDATE executions SET {set}, {LEASE_RELEASED}
    WHERE {FENCE}
    RETURNING tenant_id, execution_id, attempt_index, lifecycle_phase, terminal_outcome,
              eligibility_state, eligible_at, flow_id, parent_id
),
attempt AS (
    -- Keyed by parameters, not joined to `moved`: a join can plan as a scan of
    -- every attempt when statistics are thin.
    UPDATE attempts SET state = $10, failure = $9, ended_at = now()
    WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3
      AND EXISTS (SELECT 1 FROM moved)
),
{outbox},
wake AS (
    SELECT pg_notify('flowfabric_work', '') FROM moved WHERE eligibility_state = 'eligible_now'
)
SELECT m.lifecycle_phase, m.eligible_at,
       (SELECT count(*) FROM wake) + (SELECT count(*) FROM event_notify) AS notified
FROM moved m
"#,
        set = t.set,
        outbox = completion_outbox("moved", "terminal_outcome", "lifecycle_phase = 'terminal'"),
    );
    let failure = args
        .failure
        .map(|f| serde_json::to_value(f).expect("failure serialises"));
    let bound = Args::fence(lease)
        .push(args.result)
        .push(args.reason)
        .push(args.eligible_at)
        .push(failure)
        .push(attempt_state_str(t.attempt_state))
        .push(args.delay_ms)
        .push(args.progress.map(|p| i16::from(p.percent)))
        .push(args.progress.map(|p| p.message))
        .done(t.op)?;
    let row = sqlx::query_with(&sql, bound).optional(conn, t.op).await?;
    row.map(|r| {
        Ok(Moved {
            phase: col(&r, "lifecycle_phase")?,
            eligible_at: col(&r, "eligible_at")?,
        })
    })
    .transpose()
}

fn attempt_state_str(s: AttemptState) -> &'static str {
    match s {
        AttemptState::Running => "running",
        AttemptState::Suspended => "suspended",
        AttemptState::Succeeded => "succeeded",
        AttemptState::Failed => "failed",
        AttemptState::Cancelled => "cancelled",
        AttemptState::Delayed => "delayed",
        AttemptState::LeaseExpired => "lease_expired",
        AttemptState::Expired => "expired",
        AttemptState::Revoked => "revoked",
    }
}

/// Every move out of `active` drops the lease it held.
const LEASE_RELEASED: &str = "ownership_state = 'unowned', lease_id = NULL, \
    lease_expires_at = NULL, attempt_timeout_at = NULL, updated_at = now()";

/// The state a successful completion leaves, but for its result.
macro_rules! completed {
    () => {
        "lifecycle_phase = 'terminal', eligibility_state = 'not_applicable', \
         blocking_reason = NULL, terminal_outcome = 'success', \
         attempt_state = 'attempt_terminal', finished_at = now()"
    };
}

/// A completion's progress, when it carries one (`percent`, `message`: its
/// parameters), replaces what the row holds.
macro_rules! progress_carried {
    ($percent:literal, $message:literal) => {
        concat!(
            "progress_percent = coalesce(",
            $percent,
            "::int2, progress_percent), ",
            "progress_message = coalesce(",
            $message,
            "::text, progress_message)"
        )
    };
}

const COMPLETE: Transition = Transition {
    op: "complete",
    set: concat!(
        completed!(),
        ", result = $6, ",
        progress_carried!("$12", "$13")
    ),
    attempt_state: AttemptState::Succeeded,
};

const CANCEL: Transition = Transition {
    op: "cancel",
    set: "lifecycle_phase = 'terminal', eligibility_state = 'not_applicable', \
          blocking_reason = NULL, terminal_outcome = 'cancelled', attempt_state = 'attempt_terminal', \
          cancellation_reason = $7, finished_at = now()",
    attempt_state: AttemptState::Cancelled,
};

const DELAY: Transition = Transition {
    op: "delay",
    set: "lifecycle_phase = 'runnable', \
          eligibility_state = CASE WHEN $8 <= now() THEN 'eligible_now' ELSE 'not_eligible_until_time' END, \
          blocking_reason = CASE WHEN $8 <= now() THEN 'waiting_for_worker' ELSE 'waiting_for_delay' END, \
          attempt_state = 'pending_delayed_attempt', eligible_at = greatest($8, now())",
    attempt_state: AttemptState::Delayed,
};

/// `$11` is the backoff in ms, or NULL when the failure is terminal.
const FAIL: Transition = Transition {
    op: "fail",
    set: "lifecycle_phase = CASE WHEN $11::bigint IS NULL THEN 'terminal' ELSE 'runnable' END, \
          eligibility_state = CASE WHEN $11::bigint IS NULL THEN 'not_applicable' \
              WHEN $11 = 0 THEN 'eligible_now' ELSE 'not_eligible_until_time' END, \
          blocking_reason = CASE WHEN $11::bigint IS NULL THEN NULL \
              WHEN $11 = 0 THEN 'waiting_for_worker' ELSE 'waiting_for_retry_backoff' END, \
          terminal_outcome = CASE WHEN $11::bigint IS NULL THEN 'failed' END, \
          attempt_state = CASE WHEN $11::bigint IS NULL THEN 'attempt_terminal' \
              ELSE 'pending_retry_attempt' END, \
          retry_count = retry_count + CASE WHEN $11::bigint IS NULL THEN 0 ELSE 1 END, \
          eligible_at = CASE WHEN $11::bigint IS NULL THEN eligible_at \
              ELSE now() + $11 * interval '1 millisecond' END, \
          finished_at = CASE WHEN $11::bigint IS NULL THEN now() END, \
          last_failure = $9",
    attempt_state: AttemptState::Failed,
};

async fn simple_transition(
    pool: &Connections,
    lease: &LeaseHandle,
    t: &Transition,
    args: TransitionArgs<'_>,
) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(EngineError::storage(t.op))?;
    let moved = transition(&mut conn, lease, t, args).await;
    if conn.settle_on_ok(moved)?.is_some() {
        return Ok(());
    }
    drop(conn);
    replayed_or_rejected(pool, lease, t.attempt_state).await
}

/// A fenced write matched nothing: `Ok` if the same handle already made it
/// (a replay), otherwise why it was refused.
async fn replayed_or_rejected(
    pool: &Connections,
    lease: &LeaseHandle,
    replay_as: AttemptState,
) -> Result<()> {
    match explain_lease_miss(pool, lease, replay_as).await? {
        LeaseMiss::Replayed { .. } => Ok(()),
        LeaseMiss::Rejected(e) => Err(e),
    }
}

#[tracing::instrument(skip_all, fields(execution = %completion.lease.execution_id, attempt = completion.lease.attempt_index))]
pub(super) async fn complete(db: &PgBackend, completion: &Completion<'_>) -> Result<()> {
    let pool = &db.pool;
    let args = TransitionArgs {
        result: Some(completion.result),
        progress: completion.progress,
        ..Default::default()
    };
    simple_transition(pool, completion.lease, &COMPLETE, args).await
}

/// The batch completion (`$1`–`$8`: arrays of tenant, execution, attempt
/// index, lease id, lease epoch, result, and the progress each carries, or
/// NULL), built once.
static COMPLETE_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int4[], $4::uuid[], $5::int8[], $6::bytea[],
                         $7::int2[], $8::text[])
        AS i(tenant_id, execution_id, attempt_index, lease_id, lease_epoch, result,
             carried_percent, carried_message)
),
moved AS (
    UPDATE executions e SET {completed}, result = i.result, {LEASE_RELEASED},
        {progress}
    FROM input i
    WHERE e.tenant_id = i.tenant_id AND e.execution_id = i.execution_id
      AND e.attempt_index = i.attempt_index AND e.lease_id = i.lease_id
      AND e.lease_epoch = i.lease_epoch
    RETURNING e.tenant_id, e.execution_id, e.attempt_index, e.lifecycle_phase, e.terminal_outcome,
        e.flow_id, e.parent_id
),
attempt AS (
    UPDATE attempts a SET state = 'succeeded', ended_at = now()
    FROM moved m
    WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id
      AND a.attempt_index = m.attempt_index
),
{outbox}
SELECT m.tenant_id, m.execution_id, (SELECT count(*) FROM event_notify) AS notified
FROM moved m
"#,
        completed = completed!(),
        progress = progress_carried!("i.carried_percent", "i.carried_message"),
        outbox = completion_outbox("moved", "terminal_outcome", "true"),
    )
});

/// Apply a failure to an execution whose row the caller has locked under `lease`.
/// Shared by worker `fail` and the attempt-timeout scanner.
pub(super) async fn fail_locked(
    conn: &mut PgConnection,
    lease: &LeaseHandle,
    failure: &Failure,
    policy: &ExecutionPolicy,
    retry_count: i32,
) -> Result<FailOutcome> {
    let decision = policy.retry_decision(failure.class, u32::try_from(retry_count).unwrap_or(0));
    let delay_ms = match decision {
        RetryDecision::RetryAfter(d) => Some(millis(d)),
        RetryDecision::Terminal => None,
    };
    let args = TransitionArgs {
        failure: Some(failure),
        delay_ms,
        ..Default::default()
    };
    let moved = transition(conn, lease, &FAIL, args)
        .await?
        .ok_or_else(|| EngineError::Conflict("locked execution changed under its lock".into()))?;
    Ok(match moved.phase.as_str() {
        "terminal" => FailOutcome::TerminalFailed,
        _ => FailOutcome::RetryScheduled {
            retry_at: Some(moved.eligible_at),
        },
    })
}

/// Operator lease revoke: an active execution's attempt ends now (`revoked`)
/// and the execution is runnable again; the worker holding the lease is told
/// at once (`flowfabric_revoked`) and its later writes are fenced out.
const REVOKE_SQL: &str = r#"
WITH revoked AS (
    UPDATE executions SET lifecycle_phase = 'runnable', ownership_state = 'lease_revoked',
        eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
        attempt_state = 'attempt_interrupted', lease_id = NULL, lease_expires_at = NULL,
        attempt_timeout_at = NULL, eligible_at = now(), updated_at = now()
    WHERE tenant_id = $1 AND execution_id = $2 AND lifecycle_phase = 'active'
    RETURNING tenant_id, execution_id, attempt_index
),
attempt AS (
    UPDATE attempts a SET state = 'revoked', ended_at = now(), failure = $3
    FROM revoked r
    WHERE a.tenant_id = r.tenant_id AND a.execution_id = r.execution_id
      AND a.attempt_index = r.attempt_index
)
SELECT r.attempt_index FROM revoked r,
    LATERAL (SELECT pg_notify('flowfabric_revoked', r.execution_id::text),
                    pg_notify('flowfabric_work', '')) told
"#;
