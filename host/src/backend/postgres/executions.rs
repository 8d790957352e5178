//! Execution creation, reads and operator operations.

use super::Connections;
use sqlx::PgConnection;

use super::rows::{col, execution, transaction, Args, EXECUTION_COLUMNS};
use super::PgBackend;
use crate::backend::refusals;
use crate::backend::stored_i64;
use crate::backend::{Fetch, Op, Run};
use crate::error::{EngineError, Result};
use crate::model::{
    Created, Execution, ExecutionFilter, ExecutionId, FlowId, NewExecution, PublicState, Replay,
    ReplayOutcome, TenantId, DEFAULT_DEDUP_WINDOW_MS, DEFAULT_MAX_REPLAYS,
};

crate::backend::traits::implement_executions!(PgBackend, pg);

async fn create_executions(
    db: &PgBackend,
    tenant: TenantId,
    executions: &[NewExecution],
    max_queued: Option<u32>,
) -> Result<Vec<Created>> {
    let mut conn = db
        .pool
        .acquire()
        .await
        .map_err(EngineError::storage("create executions"))?;
    let executions: Vec<&NewExecution> = executions.iter().collect();
    let created = insert_executions(&mut conn, tenant, &executions, max_queued, None).await;
    conn.settle_on_ok(created)
}

async fn get_execution(db: &PgBackend, tenant: TenantId, id: ExecutionId) -> Result<Execution> {
    read_execution(&db.pool, tenant, id).await
}

/// Keyset pagination over the time-ordered id: the primary key serves a
/// list of every state, `executions_state_idx` one state (it has no running
/// executions, migration 0041), `executions_lease_expiry_idx` the running ones.
async fn list_executions(
    db: &PgBackend,
    tenant: TenantId,
    filter: &ExecutionFilter,
) -> Result<Vec<Execution>> {
    let sql = list_sql(filter);
    let op = "list executions";
    let rows = sqlx::query_with(&sql, list_args(tenant, filter, op)?)
        .all(&db.pool, op)
        .await?;
    rows.iter().map(execution).collect()
}

/// The generic plan of the list statement for `filter` (nothing is read).
pub(super) async fn explain_list(pool: &Connections, filter: &ExecutionFilter) -> Result<String> {
    super::explain::generic_plan(pool, &list_sql(filter), 7).await
}

/// The list statement's arguments, `$1`-`$7`.
fn list_args(
    tenant: TenantId,
    filter: &ExecutionFilter,
    op: &'static str,
) -> Result<sqlx::postgres::PgArguments> {
    Args::new()
        .push(tenant)
        .push(filter.state.map(PublicState::as_str))
        .push(filter.kind.clone())
        .push(filter.lane.clone())
        .push(filter.after)
        .push(i64::from(filter.limit))
        .push(
            filter
                .tag
                .as_ref()
                .map(|(k, v)| serde_json::json!({ k: v })),
        )
        .done(op)
}

/// The list statement for `filter`: `$2` is the state, or NULL; the state
/// condition is spelt out for the index it means, so that a generic plan
/// can use it.
fn list_sql(filter: &ExecutionFilter) -> String {
    let (past, order) = crate::backend::list_order(filter);
    let state = match filter.state {
        None => "$2::text IS NULL",
        Some(PublicState::Active) => "public_state = $2 AND lifecycle_phase = 'active'",
        Some(_) => "public_state = $2 AND public_state <> 'active'",
    };
    format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions \
         WHERE tenant_id = $1 AND {state} \
           AND ($3::text IS NULL OR kind = $3) \
           AND ($4::text IS NULL OR lane = $4) \
           AND ($5::uuid IS NULL OR execution_id {past} $5) \
           AND ($7::jsonb IS NULL OR tags @> $7) \
         ORDER BY execution_id {order} LIMIT $6"
    )
}

/// Operator cancel: any non-terminal execution; a live lease is revoked by the same
/// statement (its attempt ends `cancelled`, so the worker's next write is fenced out).
async fn cancel(db: &PgBackend, tenant: TenantId, id: ExecutionId, reason: &str) -> Result<bool> {
    let pool = &db.pool;
    let cancelled: Option<i64> = sqlx::query_scalar(CANCEL_SQL)
        .bind(tenant)
        .bind(id)
        .bind(reason)
        .optional(pool, "cancel")
        .await?;
    if cancelled.is_some() {
        return Ok(true);
    }
    match read_execution(pool, tenant, id).await?.state {
        PublicState::Cancelled => Ok(false),
        state => Err(refusals::not_active(id, state)),
    }
}

async fn replay(
    db: &PgBackend,
    tenant: TenantId,
    id: ExecutionId,
    replay: Replay,
) -> Result<ReplayOutcome> {
    let pool = &db.pool;
    transaction(pool, "replay", async |tx| {
        if replay.revive_dependents {
            super::flow_revive::check_revivable(tx, tenant, id).await?;
        }
        let replayed: Option<i32> = sqlx::query_scalar(REPLAY_SQL)
            .bind(tenant)
            .bind(id)
            .bind(DEFAULT_MAX_REPLAYS as i32)
            .bind(replay.keep_steps)
            .optional(&mut *tx, "replay")
            .await?;
        let Some(replay_count) = replayed else {
            let execution = read_execution(pool, tenant, id).await?;
            return Err(refusals::not_replayable(
                id,
                execution.state,
                execution.replay_count,
            ));
        };
        let revived = if replay.revive_dependents {
            super::flow_revive::revive_dependents(tx, tenant, id).await?
        } else {
            Vec::new()
        };
        Ok(ReplayOutcome {
            replay_count,
            revived,
        })
    })
    .await
}

async fn change_priority(
    db: &PgBackend,
    tenant: TenantId,
    id: ExecutionId,
    priority: i32,
) -> Result<()> {
    let pool = &db.pool;
    let changed = sqlx::query(
        "UPDATE executions SET priority = $3, updated_at = now() \
         WHERE tenant_id = $1 AND execution_id = $2 AND lifecycle_phase = 'runnable'",
    )
    .bind(tenant)
    .bind(id)
    .bind(priority)
    .run(pool, "change priority")
    .await?
    .rows_affected();
    if changed == 1 {
        return Ok(());
    }
    let state = read_execution(pool, tenant, id).await?.state;
    Err(refusals::not_runnable(id, state))
}

/// All rows go in through `unnest`, so a batch of 100 is one statement. A key
/// already mapped inside its dedup window is left alone (`ON CONFLICT … WHERE`
/// expired) and its execution is reported instead of a new one.
const CREATE_SQL: &str = r#"
WITH input AS (
    SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bytea[], $6::int4[],
                         $7::jsonb[], $8::jsonb[], $9::jsonb[], $10::text[],
                         $11::timestamptz[], $12::int8[], $13::int8[], $15::text[], $16::bool[],
                         $19::text[])
        WITH ORDINALITY AS i(execution_id, kind, lane, input, priority, caps, tags, policy,
                             idem_key, delay_until, deadline_ms, dedup_ms, flow_key, blocked,
                             concurrency_key, ord)
),
-- `max_queued` ($14): the backlog is counted off executions_state_idx, and never
-- past the limit itself, so the check costs at most `limit` index entries.
admission AS (
    SELECT $14::int8 IS NULL OR (
        SELECT count(*) FROM (
            SELECT 1 FROM executions
            WHERE tenant_id = $1 AND public_state IN
                ('waiting', 'delayed', 'rate_limited', 'waiting_children', 'suspended')
            LIMIT $14) backlog
    ) + cardinality($2::uuid[]) <= $14 AS admitted
),
keyed AS (
    INSERT INTO idempotency_keys (tenant_id, key, execution_id, expires_at)
    SELECT $1, idem_key, execution_id, now() + dedup_ms * interval '1 millisecond'
    FROM input WHERE idem_key IS NOT NULL AND (SELECT admitted FROM admission)
    ON CONFLICT (tenant_id, key) DO UPDATE
        SET execution_id = EXCLUDED.execution_id, expires_at = EXCLUDED.expires_at
        WHERE idempotency_keys.expires_at <= now()
    RETURNING execution_id
),
inserted AS (
    INSERT INTO executions (tenant_id, execution_id, kind, lane, priority, required_capabilities,
        tags, policy, idempotency_key, input, lifecycle_phase, ownership_state,
        eligibility_state, blocking_reason, attempt_state, eligible_at, deadline_at,
        flow_id, flow_key, parent_id, concurrency_key)
    SELECT $1, i.execution_id, i.kind, i.lane, i.priority,
        ARRAY(SELECT jsonb_array_elements_text(i.caps)), i.tags, i.policy, i.idem_key, i.input,
        'runnable', 'unowned',
        CASE WHEN i.blocked THEN 'blocked_by_dependencies'
             WHEN i.delay_until > now() THEN 'not_eligible_until_time' ELSE 'eligible_now' END,
        CASE WHEN i.blocked THEN 'waiting_for_dependencies'
             WHEN i.delay_until > now() THEN 'waiting_for_delay' ELSE 'waiting_for_worker' END,
        'pending_first_attempt',
        greatest(coalesce(i.delay_until, now()), now()),
        now() + i.deadline_ms * interval '1 millisecond',
        $17::uuid, i.flow_key, $18::uuid, i.concurrency_key
    FROM input i
    WHERE (SELECT admitted FROM admission)
      AND (i.idem_key IS NULL OR i.execution_id IN (SELECT execution_id FROM keyed))
    RETURNING execution_id, eligibility_state, kind, lane, concurrency_key
),
-- The slots a key may use, made now so the first claim of a new key can lock
-- them (a claim that finds one missing makes it and takes the key next time).
slots AS (
    INSERT INTO concurrency_slots (tenant_id, scope, name, key)
    SELECT DISTINCT $1::uuid, s.scope, s.name, ins.concurrency_key
    FROM inserted ins
    CROSS JOIN LATERAL (VALUES ('kind', ins.kind), ('lane', ins.lane)) AS s(scope, name)
    WHERE ins.concurrency_key IS NOT NULL
    ON CONFLICT DO NOTHING
),
wake AS (
    SELECT pg_notify('flowfabric_work', '')
    WHERE EXISTS (SELECT 1 FROM inserted WHERE eligibility_state = 'eligible_now')
)
SELECT i.ord, i.idem_key, ins.execution_id AS inserted_id, k.execution_id AS existing_id,
       (SELECT count(*) FROM wake) AS woke, (SELECT admitted FROM admission) AS admitted
FROM input i
LEFT JOIN inserted ins ON ins.execution_id = i.execution_id
LEFT JOIN idempotency_keys k ON k.tenant_id = $1 AND k.key = i.idem_key
ORDER BY i.ord
"#;

/// Where new executions go in a flow: each one's key, whether it starts
/// blocked on dependencies (it has incoming edges), and the execution that
/// spawned them, if one did.
pub(super) struct FlowPlacement<'a> {
    pub flow_id: FlowId,
    pub keys: Vec<&'a str>,
    pub blocked: Vec<bool>,
    pub parent: Option<ExecutionId>,
}

pub(super) async fn insert_executions(
    conn: &mut PgConnection,
    tenant: TenantId,
    new: &[&NewExecution],
    max_queued: Option<u32>,
    placement: Option<&FlowPlacement<'_>>,
) -> Result<Vec<Created>> {
    let ids: Vec<ExecutionId> = new.iter().map(|_| ExecutionId::new()).collect();
    let to_json = |v: serde_json::Result<serde_json::Value>| v.expect("model serialises to JSON");
    let rows = sqlx::query(CREATE_SQL)
        .bind(tenant)
        .bind(&ids)
        .bind(new.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.lane.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.input.as_slice()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.priority).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|n| to_json(serde_json::to_value(&n.required_capabilities)))
                .collect::<Vec<_>>(),
        )
        .bind(
            new.iter()
                .map(|n| to_json(serde_json::to_value(&n.tags)))
                .collect::<Vec<_>>(),
        )
        .bind(new.iter().map(|n| n.policy.stored()).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|n| n.idempotency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(new.iter().map(|n| n.delay_until).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|n| n.policy.timeouts.execution_deadline_ms.map(stored_i64))
                .collect::<Vec<_>>(),
        )
        .bind(
            new.iter()
                .map(|n| stored_i64(n.policy.dedup_window_ms.unwrap_or(DEFAULT_DEDUP_WINDOW_MS)))
                .collect::<Vec<_>>(),
        )
        .bind(max_queued.map(i64::from))
        .bind(placement.map(|p| p.keys.clone()).unwrap_or_default())
        .bind(placement.map(|p| p.blocked.clone()).unwrap_or_default())
        .bind(placement.map(|p| p.flow_id))
        .bind(placement.and_then(|p| p.parent))
        .bind(
            new.iter()
                .map(|n| n.concurrency_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .all(&mut *conn, Op::for_tenant("create executions", tenant))
        .await?;
    if let (Some(limit), Some(row)) = (max_queued, rows.first()) {
        if !col::<bool>(row, "admitted")? {
            return Err(EngineError::QuotaExceeded {
                what: "queued executions",
                limit: limit.into(),
            });
        }
    }

    let mut created = Vec::with_capacity(rows.len());
    for row in rows {
        let inserted: Option<ExecutionId> = col(&row, "inserted_id")?;
        let existing: Option<ExecutionId> = col(&row, "existing_id")?;
        let key: Option<String> = col(&row, "idem_key")?;
        created.push(match (inserted, existing, key) {
            (Some(id), _, _) => Created {
                execution_id: id,
                created: true,
            },
            (None, Some(id), _) => Created {
                execution_id: id,
                created: false,
            },
            // The key was mapped by a transaction that committed after this
            // statement's snapshot was taken: read it now.
            (None, None, Some(key)) => Created {
                execution_id: existing_for_key(conn, tenant, &key).await?,
                created: false,
            },
            (None, None, None) => {
                return Err(EngineError::Corrupt(
                    "an execution without a key was not inserted".into(),
                ))
            }
        });
    }
    Ok(created)
}

async fn existing_for_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &str,
) -> Result<ExecutionId> {
    sqlx::query_scalar(
        "SELECT execution_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
    )
    .bind(tenant)
    .bind(key)
    .one(conn, "read idempotency key")
    .await
}

pub(super) async fn read_execution(
    pool: &Connections,
    tenant: TenantId,
    id: ExecutionId,
) -> Result<Execution> {
    let sql = format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE tenant_id = $1 AND execution_id = $2"
    );
    let row = sqlx::query(&sql)
        .bind(tenant)
        .bind(id)
        .optional(pool, "get execution")
        .await?
        .ok_or_else(|| not_found(id))?;
    execution(&row)
}

fn not_found(id: ExecutionId) -> EngineError {
    EngineError::not_found("execution", id)
}

/// The shared cancel (`flowfabric_cancel`: `flowfabric_end_unfinished` with
/// the outcome `cancelled`, migration 0032) for one execution.
pub(super) const CANCEL_SQL: &str = "SELECT count(*) FROM flowfabric_cancel(ARRAY[$1]::uuid[], \
    ARRAY[$2]::uuid[], $3) HAVING count(*) > 0";

/// Operator replay: a terminal execution becomes runnable again, due now, with
/// its result, failure and counters cleared, and its next claim is a `replay`
/// attempt. Refused past the policy's `max_replays`. Unless `$4` (keep the
/// journal), its steps are deleted and the journal's counters start over.
const REPLAY_SQL: &str = r#"
WITH replayed AS (
    UPDATE executions SET lifecycle_phase = 'runnable', ownership_state = 'unowned',
        eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
        terminal_outcome = NULL, attempt_state = 'pending_replay_attempt',
        replay_count = replay_count + 1, retry_count = 0, reclaim_count = 0,
        result = NULL, last_failure = NULL, cancellation_reason = NULL, finished_at = NULL,
        eligible_at = now(),
        deadline_at = now()
            + least((policy -> 'timeouts' ->> 'execution_deadline_ms')::numeric, 31622400000)::bigint
                * interval '1 millisecond',
        updated_at = now()
    WHERE tenant_id = $1 AND execution_id = $2 AND lifecycle_phase = 'terminal'
      AND replay_count < coalesce((policy ->> 'max_replays')::int, $3)
    RETURNING replay_count
),
wake AS (SELECT pg_notify('flowfabric_work', '') FROM replayed),
fresh_journal AS (
    DELETE FROM steps WHERE tenant_id = $1 AND execution_id = $2 AND NOT $4
      AND EXISTS (SELECT 1 FROM replayed)
),
fresh_counts AS (
    UPDATE execution_counters SET step_count = 0, step_bytes = 0
    WHERE tenant_id = $1 AND execution_id = $2 AND NOT $4
      AND EXISTS (SELECT 1 FROM replayed)
)
SELECT replay_count, (SELECT count(*) FROM wake) AS woke FROM replayed
"#;
