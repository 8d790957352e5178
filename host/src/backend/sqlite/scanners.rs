//! The scanner passes: expired leases, due delays, attempt timeouts,
//! execution deadlines and event retention. Each is one write transaction
//! over at most `limit` rows per tenant, oldest due first.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::SqliteConnection;

use super::budgets::reset_due_budgets;
use super::executions::{end_attempt, end_unfinished};
use super::leases::fail_row;
use super::record::Exec;
use super::retention::prune_executions;
use super::suspension_timeouts::time_out_suspensions;
use super::time::{now, Millis};
use super::tx::Tx;
use super::SqliteBackend;
use crate::backend::{stored_i32, stored_millis};
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::Eligibility;
use crate::model::{AttemptPhase, TerminalOutcome};
use crate::model::{Failure, FailureClass};

crate::backend::background::implement_scanners!(SqliteBackend, sqlite);

const EXPIRED_LEASES: Due = Due {
    op: "reclaim expired leases",
    state: "lifecycle_phase = 'active'",
    column: "lease_expires_at",
};

const DUE_DELAYS: Due = Due {
    op: "promote delayed",
    state: "lifecycle_phase = 'runnable' AND eligibility_state = 'not_eligible_until_time'",
    column: "eligible_at",
};

const TIMED_OUT_ATTEMPTS: Due = Due {
    op: "attempt timeout",
    state: "lifecycle_phase = 'active'",
    column: "attempt_timeout_at",
};

const PAST_DEADLINE: Due = Due {
    op: "expire past deadline",
    state: "lifecycle_phase <> 'terminal'",
    column: "deadline_at",
};

/// Expired leases: the attempt ends `lease_expired` and the execution runs
/// again (a reclaim), unless it has been reclaimed `max_reclaim_count` times.
async fn reclaim_expired_leases(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    let expired = Failure::new(
        FailureClass::LeaseExpired,
        "the lease expired before the attempt ended",
    );
    db.write(EXPIRED_LEASES.op, async |conn, effects| {
        let (now, mut rows) = EXPIRED_LEASES.take(conn, sweep, 0).await?;
        for row in &mut rows {
            let before = row.lease_before();
            let spent = row.reclaim_count + 1 > stored_i32(row.policy.timeouts.max_reclaim_count);
            row.reclaim_count += 1;
            row.release_lease(now);
            if spent {
                row.make_terminal(TerminalOutcome::Failed, now);
                row.last_failure = Some(Json(Failure::new(
                    FailureClass::LeaseExpired,
                    "the lease expired more often than max_reclaim_count allows",
                )));
            } else {
                row.make_runnable(now, AttemptPhase::AttemptInterrupted, now);
            }
            row.save(conn, Some(before), effects).await?;
            end_attempt(
                conn,
                row,
                "lease_expired",
                Some(&expired),
                &["running"],
                now,
            )
            .await?;
            if spent {
                row.record_completion(conn, effects).await?;
            }
        }
        Ok(rows.len() as u64)
    })
    .await
}

/// Delays that have passed: the execution becomes eligible now.
async fn promote_delayed(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    db.write(DUE_DELAYS.op, async |conn, effects| {
        let (now, mut rows) = DUE_DELAYS.take(conn, sweep, 1).await?;
        for row in &mut rows {
            let before = row.lease_before();
            row.eligibility_state = Eligibility::EligibleNow;
            row.updated_at = now;
            row.save(conn, Some(before), effects).await?;
        }
        Ok(rows.len() as u64)
    })
    .await
}

/// Attempts past their timeout fail with class `timeout`; the retry policy
/// decides what follows, as for a worker's own failure.
async fn fail_timed_out_attempts(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    db.write(TIMED_OUT_ATTEMPTS.op, async |conn, effects| {
        let (_, mut rows) = TIMED_OUT_ATTEMPTS.take(conn, sweep, 0).await?;
        for row in &mut rows {
            let limit_ms = row.policy.timeouts.attempt_timeout_ms.unwrap_or_default();
            let failure = Failure::new(
                FailureClass::Timeout,
                format!("the attempt ran past its timeout of {limit_ms} ms"),
            );
            fail_row(&mut Tx::Sqlx(conn), row, &failure, effects).await?;
        }
        Ok(rows.len() as u64)
    })
    .await
}

/// Executions past their deadline end `expired`, whatever phase they are in.
async fn expire_past_deadline(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    db.write(PAST_DEADLINE.op, async |conn, effects| {
        let (now, mut rows) = PAST_DEADLINE.take(conn, sweep, 0).await?;
        for row in &mut rows {
            end_unfinished(conn, row, TerminalOutcome::Expired, None, now, effects).await?;
        }
        Ok(rows.len() as u64)
    })
    .await
}

/// Nothing to do: the single writer never finds a sibling's row locked, so
/// the transaction that satisfies a `cancel_remaining` join cancels them all
/// (`settle`).
async fn cancel_pending_siblings(_db: &SqliteBackend, _sweep: Sweep) -> Result<u64> {
    Ok(0)
}

/// Nothing to do: the transaction that ends a parent's last child resumes
/// the parent (`settle`); no row is ever locked against it.
async fn wake_waiting_parents(_db: &SqliteBackend, _sweep: Sweep) -> Result<u64> {
    Ok(0)
}

/// Delete events older than `retention`, at most `limit` per stream.
async fn prune_events(db: &SqliteBackend, retention: Duration, limit: u32) -> Result<u64> {
    let cutoff = now() - stored_millis(retention);
    db.write("prune events", async |conn, _| {
        let mut pruned = 0;
        for table in ["completion_events", "lease_events", "signal_events"] {
            pruned += sqlx::query(&format!(
                "DELETE FROM {table} WHERE event_id IN ( \
                     SELECT event_id FROM {table} WHERE created_at < ? ORDER BY event_id LIMIT ?)"
            ))
            .bind(cutoff)
            .bind(i64::from(limit))
            .run(&mut *conn, "prune events")
            .await?
            .rows_affected();
        }
        Ok(pruned)
    })
    .await
}

/// Which executions a scanner pass takes: those in `state` whose `column`
/// (an instant) has passed. Each pass's `state` and `column` match a
/// partial index on that column: `executions_active_idx` (lease expiry),
/// `executions_delayed_idx`, `executions_attempt_timeout_idx`,
/// `executions_deadline_idx` and `executions_suspension_timeout_idx`.
pub(super) struct Due {
    /// The pass, as its transaction and errors name it.
    pub op: &'static str,
    pub state: &'static str,
    pub column: &'static str,
}

impl Due {
    /// The pass's clock and its due rows, at most `sweep.limit` per tenant
    /// (of every tenant, or only `sweep.tenant`), oldest first. `slack`
    /// counts a row due that many milliseconds early.
    pub(super) async fn take(
        &self,
        conn: &mut SqliteConnection,
        sweep: Sweep,
        slack: Millis,
    ) -> Result<(Millis, Vec<Exec>)> {
        let now = now();
        Ok((now, self.rows(conn, sweep, now + slack).await?))
    }

    async fn rows(
        &self,
        conn: &mut SqliteConnection,
        sweep: Sweep,
        now: Millis,
    ) -> Result<Vec<Exec>> {
        let Due { state, column, .. } = self;
        let sql = Exec::select_sql(&format!(
            "{state} AND {column} IS NOT NULL AND {column} < ?1 AND execution_id IN ( \
                 SELECT execution_id FROM ( \
                     SELECT execution_id, row_number() OVER ( \
                         PARTITION BY tenant_id ORDER BY {column}) AS n \
                     FROM executions \
                     WHERE {state} AND {column} IS NOT NULL AND {column} < ?1 \
                       AND (?3 IS NULL OR tenant_id = ?3)) \
                 WHERE n <= ?2)"
        ));
        sqlx::query_as(&sql)
            .bind(now)
            .bind(i64::from(sweep.limit))
            .bind(sweep.tenant)
            .all(conn, self.op)
            .await
    }
}
