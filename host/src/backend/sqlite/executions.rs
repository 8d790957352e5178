//! Creating and reading executions, and the operator operations on them.

use sqlx::types::Json;
use sqlx::SqliteConnection;

use super::record::{not_found, Exec};
use super::tenancy::read_tenant;
use super::time::{after_ms, millis_of, now, Millis};
use super::writes::Writes;
use super::{Effects, SqliteBackend};
use crate::backend::refusals;
use crate::backend::{Fetch, Run};
use crate::error::{EngineError, Result};
use crate::model::Eligibility;
use crate::model::TerminalOutcome;
use crate::model::{AttemptPhase, LifecyclePhase, Ownership};
use crate::model::{
    Created, Execution, ExecutionFilter, ExecutionId, Failure, FlowId, NewExecution, PublicState,
    Replay, ReplayOutcome, TenantId, DEFAULT_DEDUP_WINDOW_MS, DEFAULT_MAX_REPLAYS,
};

crate::backend::traits::implement_executions!(SqliteBackend, sqlite);

async fn create_executions(
    db: &SqliteBackend,
    tenant: TenantId,
    executions: &[NewExecution],
    max_queued: Option<u32>,
) -> Result<Vec<Created>> {
    db.write("create executions", async |conn, effects| {
        read_tenant(conn, tenant).await?;
        if let Some(limit) = max_queued {
            admit(conn, tenant, executions.len(), limit).await?;
        }
        let mut created = Vec::with_capacity(executions.len());
        for new in executions {
            created.push(create_one(conn, tenant, new, None, effects).await?);
        }
        Ok(created)
    })
    .await
}

async fn get_execution(db: &SqliteBackend, tenant: TenantId, id: ExecutionId) -> Result<Execution> {
    db.read("get execution", async |conn| {
        Exec::peek(conn, tenant, id)
            .await?
            .ok_or_else(|| not_found(id))?
            .to_execution()
    })
    .await
}

/// Keyset pages in id order (ids are time-ordered v7, stored big-endian, so
/// byte order is creation order); `executions_state_idx` serves the state filter.
async fn list_executions(
    db: &SqliteBackend,
    tenant: TenantId,
    filter: &ExecutionFilter,
) -> Result<Vec<Execution>> {
    let (tag_key, tag_value) = filter
        .tag
        .as_ref()
        .map(|(k, v)| (Some(k.as_str()), Some(v.as_str())))
        .unwrap_or_default();
    let (past, order) = crate::backend::list_order(filter);
    let sql = Exec::select_sql(&format!(
        "tenant_id = ?1 \
           AND (?2 IS NULL OR public_state = ?2) \
           AND (?3 IS NULL OR kind = ?3) \
           AND (?4 IS NULL OR lane = ?4) \
           AND (?5 IS NULL OR execution_id {past} ?5) \
           AND (?6 IS NULL OR EXISTS (SELECT 1 FROM json_each(tags) WHERE key = ?6 AND value = ?7)) \
         ORDER BY execution_id {order} LIMIT ?8",
    ));
    let rows: Vec<Exec> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(filter.state.map(PublicState::as_str))
        .bind(filter.kind.as_deref())
        .bind(filter.lane.as_deref())
        .bind(filter.after)
        .bind(tag_key)
        .bind(tag_value)
        .bind(i64::from(filter.limit))
        .all(db.reader(), "list executions")
        .await?;
    rows.iter().map(Exec::to_execution).collect()
}

/// End a non-terminal execution as `cancelled`, revoking any live lease.
/// `Ok(false)` if it was cancelled already.
async fn cancel(
    db: &SqliteBackend,
    tenant: TenantId,
    id: ExecutionId,
    reason: &str,
) -> Result<bool> {
    db.write_row("cancel", tenant, id, async |conn, mut row, effects| {
        if row.is_terminal() {
            return match row.derived_public_state() {
                PublicState::Cancelled => Ok(false),
                state => Err(refusals::not_active(id, state)),
            };
        }
        cancel_row(conn, &mut row, reason, effects).await?;
        Ok(true)
    })
    .await
}

/// Operator replay: an ended execution runs again as a `replay` attempt,
/// with its result, failure and counters cleared; refused past `max_replays`.
async fn replay(
    db: &SqliteBackend,
    tenant: TenantId,
    id: ExecutionId,
    replay: Replay,
) -> Result<ReplayOutcome> {
    db.write_row("replay", tenant, id, async |conn, mut row, effects| {
        if replay.revive_dependents {
            super::flow_revive::check_revivable(conn, &row).await?;
        }
        let state = row.derived_public_state();
        let max = row.policy.max_replays.unwrap_or(DEFAULT_MAX_REPLAYS);
        let spent = u32::try_from(row.replay_count).unwrap_or(u32::MAX) >= max;
        if !state.is_terminal() || spent {
            return Err(refusals::not_replayable(id, state, row.replay_count));
        }
        let now = now();
        let before = row.lease_before();
        row.make_runnable(now, AttemptPhase::PendingReplayAttempt, now);
        row.reopen(now);
        row.replay_count += 1;
        row.retry_count = 0;
        row.reclaim_count = 0;
        row.result = None;
        row.last_failure = None;
        row.save(conn, Some(before), effects).await?;
        if !replay.keep_steps {
            sqlx::query("DELETE FROM steps WHERE tenant_id = ? AND execution_id = ?")
                .bind(tenant)
                .bind(id)
                .run(&mut *conn, "replay")
                .await?;
        }
        let revived = if replay.revive_dependents {
            super::flow_revive::revive_dependents(conn, tenant, id, effects).await?
        } else {
            Vec::new()
        };
        Ok(ReplayOutcome {
            replay_count: row.replay_count,
            revived,
        })
    })
    .await
}

async fn change_priority(
    db: &SqliteBackend,
    tenant: TenantId,
    id: ExecutionId,
    priority: i32,
) -> Result<()> {
    let op = "change priority";
    db.write_row(op, tenant, id, async |conn, mut row, effects| {
        row.require(LifecyclePhase::Runnable, refusals::not_runnable)?;
        row.priority = priority;
        row.updated_at = now();
        let before = row.lease_before();
        row.save(conn, Some(before), effects).await
    })
    .await
}

/// States that count towards a tenant's `max_queued` backlog.
const BACKLOG: &str = "('waiting', 'delayed', 'rate_limited', 'waiting_children', 'suspended')";

/// Refuse the whole batch if it would take the backlog over `limit`.
pub(super) async fn admit(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    adding: usize,
    limit: u32,
) -> Result<()> {
    let backlog: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM (SELECT 1 FROM executions \
         WHERE tenant_id = ? AND public_state IN {BACKLOG} LIMIT ?)"
    ))
    .bind(tenant)
    .bind(i64::from(limit))
    .one(conn, "count backlog")
    .await?;
    if backlog.saturating_add(adding as i64) > i64::from(limit) {
        return Err(EngineError::QuotaExceeded {
            what: "queued executions",
            limit: limit.into(),
        });
    }
    Ok(())
}

/// Where a new execution sits in a flow: its flow, its key there, whether
/// it waits on dependencies, and the execution that spawned it.
pub(super) struct Placement<'a> {
    pub flow_id: FlowId,
    pub key: &'a str,
    pub blocked: bool,
    pub parent: Option<ExecutionId>,
}

pub(super) async fn create_one(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    new: &NewExecution,
    placement: Option<Placement<'_>>,
    effects: &mut Effects,
) -> Result<Created> {
    let now = now();
    let id = ExecutionId::new();
    if let Some(key) = &new.idempotency_key {
        let existing: Option<ExecutionId> = sqlx::query_scalar(
            "SELECT execution_id FROM idempotency_keys \
             WHERE tenant_id = ? AND key = ? AND expires_at > ?",
        )
        .bind(tenant)
        .bind(key)
        .bind(now)
        .optional(&mut *conn, "read idempotency key")
        .await?;
        if let Some(existing) = existing {
            return Ok(Created {
                execution_id: existing,
                created: false,
            });
        }
        let window = new
            .policy
            .dedup_window_ms
            .unwrap_or(DEFAULT_DEDUP_WINDOW_MS);
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, execution_id, expires_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, key) DO UPDATE \
             SET execution_id = excluded.execution_id, expires_at = excluded.expires_at",
        )
        .bind(tenant)
        .bind(key)
        .bind(id)
        .bind(after_ms(now, window))
        .run(&mut *conn, "write idempotency key")
        .await?;
    }
    let eligible_at = new.delay_until.map_or(now, millis_of).max(now);
    let mut row = Exec {
        tenant_id: tenant,
        execution_id: id,
        kind: new.kind.clone(),
        lane: new.lane.clone(),
        priority: new.priority,
        required_capabilities: Json(new.required_capabilities.clone()),
        tags: Json(new.tags.clone()),
        input: new.input.clone(),
        policy: super::stored_policy::StoredPolicy(new.policy.clone()),
        idempotency_key: new.idempotency_key.clone(),
        lifecycle_phase: LifecyclePhase::Runnable,
        ownership_state: Ownership::Unowned,
        eligibility_state: if placement.as_ref().is_some_and(|p| p.blocked) {
            Eligibility::BlockedByDependencies
        } else if eligible_at > now {
            Eligibility::NotEligibleUntilTime
        } else {
            Eligibility::EligibleNow
        },
        blocking_reason: None,
        terminal_outcome: None,
        attempt_state: AttemptPhase::PendingFirstAttempt,
        attempt_index: 0,
        lease_epoch: 0,
        lease_id: None,
        lease_expires_at: None,
        attempt_timeout_at: None,
        retry_count: 0,
        reclaim_count: 0,
        replay_count: 0,
        eligible_at,
        deadline_at: new
            .policy
            .timeouts
            .execution_deadline_ms
            .map(|ms| after_ms(now, ms)),
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        result: None,
        last_failure: None,
        cancellation_reason: None,
        progress_percent: None,
        progress_message: None,
        frame_seq: 0,
        frame_bytes: 0,
        flow_id: placement.as_ref().map(|p| p.flow_id),
        flow_key: placement.as_ref().map(|p| p.key.to_owned()),
        parent_id: placement.as_ref().and_then(|p| p.parent),
        suspension_seq: 0,
        suspension: None,
        suspension_timeout_at: None,
        concurrency_key: new.concurrency_key.clone(),
        concurrency_held: None,
        stored: None,
    };
    row.save(conn, None, effects).await?;
    Ok(Created {
        execution_id: id,
        created: true,
    })
}

/// Cancel a row the caller has read in this transaction.
pub(super) async fn cancel_row(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    reason: &str,
    effects: &mut Effects,
) -> Result<()> {
    end_unfinished(
        conn,
        row,
        TerminalOutcome::Cancelled,
        Some(reason),
        now(),
        effects,
    )
    .await
}

/// End an unfinished row the caller has read in this transaction with
/// `outcome`, as a cancel or a passed deadline does: terminal, its running or
/// suspended attempt ended alike, the completion recorded, and a worker still
/// holding its lease told to stop. `reason` is kept as the cancellation's.
pub(super) async fn end_unfinished(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    outcome: TerminalOutcome,
    reason: Option<&str>,
    now: Millis,
    effects: &mut Effects,
) -> Result<()> {
    let before = row.lease_before();
    let had_lease = row.lease_id.is_some();
    row.make_terminal(outcome, now);
    row.cancellation_reason = reason.map(str::to_owned);
    row.save(conn, Some(before), effects).await?;
    end_attempt(
        conn,
        row,
        outcome.as_str(),
        None,
        &["running", "suspended"],
        now,
    )
    .await?;
    row.record_completion(conn, effects).await?;
    if had_lease {
        effects.revoked.push(row.execution_id);
    }
    Ok(())
}

/// Close the row's current attempt as `state`, if it is in one of `from`.
pub(super) async fn end_attempt(
    conn: &mut SqliteConnection,
    row: &Exec,
    state: &'static str,
    failure: Option<&Failure>,
    from: &[&str],
    now: Millis,
) -> Result<()> {
    let mut writes = Writes::default();
    write_end_attempt(&mut writes, row, state, failure, from, now);
    writes.run(conn, "end attempt").await
}

/// [`end_attempt`], as one of a transition's writes.
pub(super) fn write_end_attempt(
    w: &mut Writes<'_>,
    row: &Exec,
    state: &'static str,
    failure: Option<&Failure>,
    from: &[&str],
    now: Millis,
) {
    w.statement(
        "UPDATE attempts SET state = ?, failure = ?, ended_at = ? \
         WHERE tenant_id = ? AND execution_id = ? AND attempt_index = ? \
           AND state IN (SELECT value FROM json_each(?))",
    )
    .bind(state)
    .bind(failure.cloned().map(Json))
    .bind(now)
    .bind(row.tenant_id)
    .bind(row.execution_id)
    .bind(row.attempt_index)
    .bind(serde_json::to_string(from).expect("strings serialise"));
}
