//! The scanner pass for suspensions past their timeout: each ends as its
//! suspension's `on_timeout` says (fail, cancel, resume with a timeout
//! signal), in its own transaction.

use super::Connections;
use super::PgBackend;
use sqlx::PgConnection;
use uuid::Uuid;

use super::rows::{col, json, transaction};
use super::scanners::SUSPENSIONS_PAST_TIMEOUT;
use super::suspension::{resume_execution, SignalEventRow};
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::WaitpointId;
use crate::model::{
    ExecutionId, ResumeCondition, Suspension, TenantId, TimeoutBehavior, TIMEOUT_SIGNAL,
};

/// Scanner: suspensions past their timeout, up to `sweep.limit` per tenant,
/// each in its own transaction (the behaviours differ and each locks one row).
pub(super) async fn time_out_suspensions(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    let pool = &db.pool;
    SUSPENSIONS_PAST_TIMEOUT
        .handle(pool, sweep, |tenant, id| time_out_one(pool, tenant, id))
        .await
}

async fn time_out_one(pool: &Connections, tenant: TenantId, id: ExecutionId) -> Result<bool> {
    let op = "time out suspension";
    transaction(pool, op, async |tx| {
        let row = sqlx::query(
            "SELECT suspension, suspension_seq FROM executions \
             WHERE tenant_id = $1 AND execution_id = $2 AND lifecycle_phase = 'suspended' \
               AND suspension_timeout_at < now() FOR UPDATE SKIP LOCKED",
        )
        .bind(tenant)
        .bind(id)
        .optional(&mut *tx, op)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let suspension: Suspension = json(col(&row, "suspension")?, "suspension")?;
        let seq: i32 = col(&row, "suspension_seq")?;
        match suspension.on_timeout {
            // A durable sleep wakes with no signal: its step says why.
            TimeoutBehavior::AutoResume if suspension.condition == ResumeCondition::Timer => {
                resume_execution(tx, tenant, id, seq).await?;
            }
            TimeoutBehavior::AutoResume => {
                let signal_id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO signals (tenant_id, execution_id, signal_id, waitpoint_id, \
                         waitpoint_key, name, payload, consumed_in) \
                     VALUES ($1, $2, $3, $4, '', $5, '', $6)",
                )
                .bind(tenant)
                .bind(id)
                .bind(signal_id)
                .bind(Uuid::nil())
                .bind(TIMEOUT_SIGNAL)
                .bind(seq)
                .run(&mut *tx, op)
                .await?;
                resume_execution(tx, tenant, id, seq).await?;
                SignalEventRow::new(tenant, id, WaitpointId::nil(), signal_id, TIMEOUT_SIGNAL)
                    .record(tx, "resumed")
                    .await?;
            }
            behaviour => end_suspended(tx, tenant, id, behaviour).await?,
        }
        Ok(true)
    })
    .await
}

/// A timed-out suspension ends the execution: failed, cancelled or expired.
async fn end_suspended(
    tx: &mut PgConnection,
    tenant: TenantId,
    id: ExecutionId,
    behaviour: TimeoutBehavior,
) -> Result<()> {
    let (outcome, attempt_state, failure) = match behaviour {
        TimeoutBehavior::Fail => (
            "failed",
            "failed",
            Some(serde_json::json!({ "class": "timeout", "message": "the suspension timed out" })),
        ),
        TimeoutBehavior::Cancel => ("cancelled", "cancelled", None),
        _ => ("expired", "expired", None),
    };
    sqlx::query(&format!(
        "WITH moved AS ( \
             UPDATE executions SET lifecycle_phase = 'terminal', eligibility_state = 'not_applicable', \
                 blocking_reason = NULL, terminal_outcome = $3, attempt_state = 'attempt_terminal', \
                 last_failure = coalesce($4, last_failure), \
                 cancellation_reason = CASE WHEN $3 = 'cancelled' \
                     THEN 'the suspension timed out' END, \
                 suspension = NULL, suspension_timeout_at = NULL, finished_at = now(), \
                 updated_at = now() \
             WHERE tenant_id = $1 AND execution_id = $2 RETURNING tenant_id, execution_id, \
                 attempt_index, flow_id, parent_id), \
         attempt AS ( \
             UPDATE attempts a SET state = $5, failure = $4, ended_at = now() FROM moved m \
             WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id \
               AND a.attempt_index = m.attempt_index), \
         {} \
         SELECT (SELECT count(*) FROM event_notify)",
        super::rows::completion_outbox("moved", "$3", "true")
    ))
    .bind(tenant)
    .bind(id)
    .bind(outcome)
    .bind(failure)
    .bind(attempt_state)
    .run(&mut *tx, "end timed-out suspension")
    .await?;
    Ok(())
}
