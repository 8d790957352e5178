//! Scanner passes: lease expiry, delayed promotion, attempt timeouts, deadlines.
//!
//! Each pass visits every tenant through a `LATERAL` probe of a tenant-first
//! partial index, taking at most `limit` rows per tenant with `SKIP LOCKED`, so
//! several hosts can run the same pass at once without waiting on each other, and
//! a tenant with a huge backlog does not delay the others.

use std::sync::LazyLock;

use super::budgets::reset_due_budgets;
use super::children::wake_waiting_parents;
use super::flow_cancel::cancel_pending_siblings;
use super::leases::fail_locked;
use super::outbox::prune;
use super::retention::prune_executions;
use super::rows::{col, completion_outbox, json, transaction};
use super::suspension_timeouts::time_out_suspensions;
use super::{Connections, PgBackend};
use crate::backend::shared::events::{CompletionRow, LeaseRow, SignalRow};
use crate::backend::{Fetch, Sweep};
use crate::error::Result;
use crate::model::{ExecutionId, TenantId};
use crate::model::{ExecutionPolicy, Failure, FailureClass, LeaseHandle};
use std::time::Duration;

crate::backend::background::implement_scanners!(PgBackend, pg);

/// Each tenant's expired leases, off `executions_lease_expiry_idx`
/// (tenant, lease expiry; active executions only).
async fn reclaim_expired_leases(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    let pool = &db.pool;
    let spent = Failure::new(
        FailureClass::LeaseExpired,
        "the lease expired more often than max_reclaim_count allows",
    );
    let expired = Failure::new(
        FailureClass::LeaseExpired,
        "the lease expired before the attempt ended",
    );
    let n: i64 = sqlx::query_scalar(&RECLAIM_SQL)
        .bind(i64::from(sweep.limit))
        .bind(serde_json::to_value(&spent).expect("failure serialises"))
        .bind(serde_json::to_value(&expired).expect("failure serialises"))
        .bind(sweep.tenant)
        .one(pool, "reclaim expired leases")
        .await?;
    Ok(n as u64)
}

/// Each tenant's due delayed executions, off `executions_delayed_idx`
/// (tenant, eligible_at; runnable and not yet eligible only).
async fn promote_delayed(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    count_pass(&db.pool, &PROMOTE_SQL, sweep, "promote delayed").await
}

static PROMOTE_SQL: LazyLock<String> = LazyLock::new(|| {
    let due = DuePerTenant {
        also: "",
        due: "e.lifecycle_phase = 'runnable' \
              AND e.eligibility_state = 'not_eligible_until_time' AND e.eligible_at <= now()",
        order: "eligible_at",
        tenant: "$2",
        locked: true,
    };
    format!(
        r#"
WITH due AS ({due}),
moved AS (
    UPDATE executions e SET eligibility_state = 'eligible_now',
        blocking_reason = 'waiting_for_worker', updated_at = now()
    FROM due d
    WHERE e.tenant_id = d.tenant_id AND e.execution_id = d.execution_id
    RETURNING 1
),
wake AS (SELECT pg_notify('flowfabric_work', '') WHERE EXISTS (SELECT 1 FROM moved))
SELECT (SELECT count(*) FROM moved) + 0 * (SELECT count(*) FROM wake)
"#,
        due = due.sql()
    )
});

/// Run a pass whose statement takes the sweep's limit as `$1` and its
/// tenant (or NULL for every tenant) as `$2`, and returns how many rows it
/// changed.
pub(super) async fn count_pass(
    pool: &Connections,
    sql: &str,
    sweep: Sweep,
    op: &'static str,
) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(sql)
        .bind(i64::from(sweep.limit))
        .bind(sweep.tenant)
        .one(pool, op)
        .await?;
    Ok(n.max(0) as u64)
}

/// Attempts past their timeout fail with class `timeout`, through the same code
/// path as a worker's `fail`, so the retry policy decides what follows.
/// Candidates come off `executions_attempt_timeout_idx`.
async fn fail_timed_out_attempts(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    let pool = &db.pool;
    ATTEMPTS_PAST_TIMEOUT
        .handle(pool, sweep, |tenant, id| fail_timed_out(pool, tenant, id))
        .await
}

/// Non-terminal executions past their deadline end `expired`; a live lease is
/// revoked with them. Candidates come off `executions_deadline_idx`.
async fn expire_past_deadline(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    count_pass(&db.pool, &DEADLINE_SQL, sweep, "expire past deadline").await
}

async fn prune_events(db: &PgBackend, retention: Duration, limit: u32) -> Result<u64> {
    let ms = super::leases::millis(retention);
    let pool = &db.pool;
    Ok(prune::<CompletionRow>(pool, ms, limit).await?
        + prune::<LeaseRow>(pool, ms, limit).await?
        + prune::<SignalRow>(pool, ms, limit).await?)
}

/// Each tenant's due executions, the rule every pass here reads them by:
/// through a `LATERAL` probe per tenant (so a tenant with a huge backlog
/// takes no more of a pass than `$1` rows), those `due` (a condition on
/// `e`) earliest by `order` first, of every tenant or only the one `tenant`
/// (a parameter, NULL for every tenant) names. `locked`: taken with
/// `FOR UPDATE SKIP LOCKED`, so hosts running the same pass take different
/// rows. Selects `tenant_id`, `execution_id` and `also` (extra columns of
/// `e`, each with a leading comma).
struct DuePerTenant<'a> {
    also: &'a str,
    due: &'a str,
    order: &'a str,
    tenant: &'a str,
    locked: bool,
}

impl DuePerTenant<'_> {
    fn sql(&self) -> String {
        let DuePerTenant {
            also,
            due,
            order,
            tenant,
            locked,
        } = self;
        let lock = if *locked {
            "FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        format!(
            "SELECT c.* FROM tenants t CROSS JOIN LATERAL ( \
                 SELECT e.tenant_id, e.execution_id{also} FROM executions e \
                 WHERE e.tenant_id = t.tenant_id AND {due} \
                 ORDER BY e.{order} LIMIT $1 {lock}) c \
             WHERE {tenant}::uuid IS NULL OR t.tenant_id = {tenant}"
        )
    }
}

/// Executions past a deadline of their phase, each handled in a
/// transaction of its own by the scanner that owns them.
pub(super) struct PastDue {
    /// The phase they are in.
    phase: &'static str,
    /// The column that holds the deadline; a partial index on
    /// `(tenant_id, column)` for the phase serves the search.
    column: &'static str,
    /// What the search is called in errors.
    op: &'static str,
}

/// Off `executions_attempt_timeout_idx`.
const ATTEMPTS_PAST_TIMEOUT: PastDue = PastDue {
    phase: "active",
    column: "attempt_timeout_at",
    op: "find timed out attempts",
};

/// Off `executions_suspension_timeout_idx`.
pub(super) const SUSPENSIONS_PAST_TIMEOUT: PastDue = PastDue {
    phase: "suspended",
    column: "suspension_timeout_at",
    op: "find timed-out suspensions",
};

impl PastDue {
    /// Up to `sweep.limit` of each tenant's (or only `sweep.tenant`'s),
    /// earliest first, each given to `one`,
    /// which says whether it changed it (another scanner may have got there
    /// first); how many were changed.
    pub(super) async fn handle<F>(
        &self,
        pool: &Connections,
        sweep: Sweep,
        one: impl Fn(TenantId, ExecutionId) -> F,
    ) -> Result<u64>
    where
        F: std::future::Future<Output = Result<bool>>,
    {
        let due = format!(
            "e.lifecycle_phase = '{phase}' AND e.{column} IS NOT NULL AND e.{column} < now()",
            phase = self.phase,
            column = self.column,
        );
        let search = DuePerTenant {
            also: "",
            due: &due,
            order: self.column,
            tenant: "$2",
            locked: false,
        };
        let due: Vec<(TenantId, ExecutionId)> = sqlx::query_as(&search.sql())
            .bind(i64::from(sweep.limit))
            .bind(sweep.tenant)
            .all(pool, self.op)
            .await?;
        // Each row in a transaction of its own: one that fails is logged
        // and the rest still run, so a row that always fails does not hold
        // back the rows after it; the first failure is returned at the end.
        let mut changed = 0;
        let mut first_failure = None;
        for (tenant, id) in due {
            match one(tenant, id).await {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%tenant, execution = %id, error = %e, op = self.op, "a scanner pass failed on one row");
                    first_failure.get_or_insert(e);
                }
            }
        }
        match first_failure {
            None => Ok(changed),
            Some(e) => Err(e),
        }
    }
}

/// Fail one attempt past its timeout, if it still is (and no one else holds
/// it), as a worker's `fail` would.
async fn fail_timed_out(
    pool: &Connections,
    tenant: TenantId,
    execution: ExecutionId,
) -> Result<bool> {
    transaction(pool, "attempt timeout", async |tx| {
        let locked = sqlx::query(
            "SELECT attempt_index, lease_id, lease_epoch, policy, retry_count FROM executions \
             WHERE tenant_id = $1 AND execution_id = $2 AND lifecycle_phase = 'active' \
               AND attempt_timeout_at < now() FOR UPDATE SKIP LOCKED",
        )
        .bind(tenant)
        .bind(execution)
        .optional(&mut *tx, "attempt timeout")
        .await?;
        let Some(row) = locked else {
            return Ok(false);
        };
        let lease = LeaseHandle {
            tenant_id: tenant,
            execution_id: execution,
            attempt_index: col(&row, "attempt_index")?,
            lease_id: col(&row, "lease_id")?,
            lease_epoch: col(&row, "lease_epoch")?,
        };
        let policy: ExecutionPolicy = json(col(&row, "policy")?, "policy")?;
        let limit_ms = policy.timeouts.attempt_timeout_ms.unwrap_or_default();
        let failure = Failure::new(
            FailureClass::Timeout,
            format!("the attempt ran past its timeout of {limit_ms} ms"),
        );
        let retry_count = col(&row, "retry_count")?;
        fail_locked(tx, &lease, &failure, &policy, retry_count).await?;
        Ok(true)
    })
    .await
}

/// Expired leases become a new attempt (`attempt_interrupted` → type `reclaim`), or
/// terminal failure once the reclaim cap of the frozen policy is spent.
static RECLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"
WITH expired AS ({expired}),
moved AS (
    UPDATE executions e SET
        reclaim_count = e.reclaim_count + 1,
        lifecycle_phase = CASE WHEN x.spent THEN 'terminal' ELSE 'runnable' END,
        eligibility_state = CASE WHEN x.spent THEN 'not_applicable' ELSE 'eligible_now' END,
        blocking_reason = CASE WHEN x.spent THEN NULL ELSE 'waiting_for_worker' END,
        terminal_outcome = CASE WHEN x.spent THEN 'failed' END,
        attempt_state = CASE WHEN x.spent THEN 'attempt_terminal' ELSE 'attempt_interrupted' END,
        finished_at = CASE WHEN x.spent THEN now() END,
        last_failure = CASE WHEN x.spent THEN $2::jsonb ELSE e.last_failure END,
        eligible_at = CASE WHEN x.spent THEN e.eligible_at ELSE now() END,
        ownership_state = 'unowned', lease_id = NULL, lease_expires_at = NULL,
        attempt_timeout_at = NULL, updated_at = now()
    FROM expired x
    WHERE e.tenant_id = x.tenant_id AND e.execution_id = x.execution_id
    RETURNING e.tenant_id, e.execution_id, e.attempt_index, e.lifecycle_phase, e.flow_id,
        e.parent_id
),
attempt AS (
    UPDATE attempts a SET state = 'lease_expired', ended_at = now(), failure = $3::jsonb
    FROM moved m
    WHERE a.tenant_id = m.tenant_id AND a.execution_id = m.execution_id
      AND a.attempt_index = m.attempt_index
),
{outbox},
wake AS (
    SELECT pg_notify('flowfabric_work', '')
    WHERE EXISTS (SELECT 1 FROM moved WHERE lifecycle_phase = 'runnable')
)
SELECT (SELECT count(*) FROM moved)
    + 0 * ((SELECT count(*) FROM wake) + (SELECT count(*) FROM event_notify))
"#,
        outbox = completion_outbox("moved", "'failed'", "lifecycle_phase = 'terminal'"),
        expired = DuePerTenant {
            also: ", e.reclaim_count + 1 > coalesce(least(\
                   (e.policy -> 'timeouts' ->> 'max_reclaim_count')::numeric, 1000)::int, 100) \
                   AS spent",
            due: "e.lifecycle_phase = 'active' AND e.lease_expires_at < now()",
            order: "lease_expires_at",
            tenant: "$4",
            locked: true,
        }
        .sql(),
    )
});

/// Due executions, at most `$1` a tenant, ended `expired` by the transition
/// a cancel makes too (`flowfabric_end_unfinished`, migration 0032). One
/// aggregate builds both arrays, so each tenant stays paired with its id.
static DEADLINE_SQL: LazyLock<String> = LazyLock::new(|| {
    let due = DuePerTenant {
        also: "",
        due: "e.lifecycle_phase <> 'terminal' AND e.deadline_at IS NOT NULL \
              AND e.deadline_at < now()",
        order: "deadline_at",
        tenant: "$2",
        locked: true,
    };
    format!(
        r#"
WITH due AS ({due}),
batch AS (
    SELECT array_agg(tenant_id) AS tenants, array_agg(execution_id) AS ids FROM due
)
SELECT count(ended.*)
FROM batch b
CROSS JOIN LATERAL flowfabric_end_unfinished(b.tenants, b.ids, 'expired', NULL) ended
"#,
        due = due.sql()
    )
});
