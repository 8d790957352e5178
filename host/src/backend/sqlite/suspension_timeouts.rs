//! The scanner pass for suspensions past their timeout: each ends as its
//! suspension's `on_timeout` says (fail, cancel, resume with a timeout
//! signal).

use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::executions::end_attempt;
use super::record::Exec;
use super::scanners::Due;
use super::suspension::{resume_row, SignalEventRow};
use super::time::now;
use super::{Effects, SqliteBackend};
use crate::backend::{Run, Sweep};
use crate::error::Result;
use crate::model::TerminalOutcome;
use crate::model::WaitpointId;
use crate::model::{Failure, FailureClass, ResumeCondition, TimeoutBehavior, TIMEOUT_SIGNAL};

const TIMED_OUT_SUSPENSIONS: Due = Due {
    op: "time out suspensions",
    state: "lifecycle_phase = 'suspended'",
    column: "suspension_timeout_at",
};

/// Scanner: suspensions past their timeout resume with a `timeout` signal or
/// end the execution, as their `on_timeout` says.
pub(super) async fn time_out_suspensions(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    db.write(TIMED_OUT_SUSPENSIONS.op, async |conn, effects| {
        let (now, mut rows) = TIMED_OUT_SUSPENSIONS.take(conn, sweep, 0).await?;
        for row in &mut rows {
            let Some(suspension) = row.suspension.clone() else {
                continue;
            };
            match suspension.on_timeout {
                // A durable sleep wakes with no signal: its step says why.
                TimeoutBehavior::AutoResume if suspension.condition == ResumeCondition::Timer => {
                    resume_row(conn, row, effects).await?;
                }
                TimeoutBehavior::AutoResume => {
                    let signal_id = Uuid::now_v7();
                    sqlx::query(
                        "INSERT INTO signals (tenant_id, execution_id, signal_id, waitpoint_id, \
                         waitpoint_key, name, payload, consumed_in, created_at) \
                         VALUES (?, ?, ?, ?, '', ?, x'', ?, ?)",
                    )
                    .bind(row.tenant_id)
                    .bind(row.execution_id)
                    .bind(signal_id)
                    .bind(Uuid::nil())
                    .bind(TIMEOUT_SIGNAL)
                    .bind(row.suspension_seq)
                    .bind(now)
                    .run(&mut *conn, "time out suspension")
                    .await?;
                    resume_row(conn, row, effects).await?;
                    SignalEventRow {
                        tenant: row.tenant_id,
                        execution: row.execution_id,
                        waitpoint: WaitpointId::nil(),
                        signal: signal_id,
                        name: TIMEOUT_SIGNAL,
                    }
                    .record(conn, "resumed", effects)
                    .await?;
                }
                behaviour => end_suspended(conn, row, behaviour, effects).await?,
            }
        }
        Ok(rows.len() as u64)
    })
    .await
}

/// A timed-out suspension ends the execution: failed, cancelled or expired.
async fn end_suspended(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    behaviour: TimeoutBehavior,
    effects: &mut Effects,
) -> Result<()> {
    let (outcome, failure) = match behaviour {
        TimeoutBehavior::Fail => (
            TerminalOutcome::Failed,
            Some(Failure::new(
                FailureClass::Timeout,
                "the suspension timed out",
            )),
        ),
        TimeoutBehavior::Cancel => (TerminalOutcome::Cancelled, None),
        _ => (TerminalOutcome::Expired, None),
    };
    let now = now();
    let before = row.lease_before();
    row.make_terminal(outcome, now);
    if let Some(failure) = &failure {
        row.last_failure = Some(Json(failure.clone()));
    }
    if outcome == TerminalOutcome::Cancelled {
        row.cancellation_reason = Some("the suspension timed out".into());
    }
    row.save(conn, Some(before), effects).await?;
    end_attempt(
        conn,
        row,
        outcome.as_str(),
        failure.as_ref(),
        &["suspended"],
        now,
    )
    .await?;
    row.record_completion(conn, effects).await
}
