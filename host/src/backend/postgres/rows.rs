//! Decoding rows into model types, and explaining why a fenced write matched no row.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::Connections;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use super::COMPLETION_CHANNEL;
use crate::backend::Fetch;
use crate::backend::{LeaseLookup, LeaseMiss};
use crate::error::{EngineError, Result};
use crate::model::{
    AttemptState, Execution, ExecutionPolicy, Failure, LeaseHandle, PublicState, Suspension,
};

/// Columns read by [`execution`], in a form ready for `SELECT … FROM executions`.
pub(super) const EXECUTION_COLUMNS: &str = "tenant_id, execution_id, kind, lane, priority, \
    required_capabilities, tags, policy, idempotency_key, concurrency_key, public_state, \
    blocking_reason, attempt_index, \
    lease_epoch, retry_count, reclaim_count, replay_count, eligible_at, deadline_at, created_at, \
    started_at, \
    finished_at, input, result, last_failure, cancellation_reason, progress_percent, \
    progress_message, flow_id, flow_key, parent_id, suspension, suspension_timeout_at";

pub(super) fn json<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    what: &str,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| EngineError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn parse<T: FromStr<Err = String>>(s: &str) -> Result<T> {
    s.parse().map_err(EngineError::Corrupt)
}

pub(super) fn execution(row: &PgRow) -> Result<Execution> {
    let tags: serde_json::Value = col(row, "tags")?;
    let policy: serde_json::Value = col(row, "policy")?;
    let failure: Option<serde_json::Value> = col(row, "last_failure")?;
    let state = parse::<PublicState>(&col::<String>(row, "public_state")?)?;
    Ok(Execution {
        tenant_id: col(row, "tenant_id")?,
        execution_id: col(row, "execution_id")?,
        kind: col(row, "kind")?,
        lane: col(row, "lane")?,
        priority: col(row, "priority")?,
        required_capabilities: col(row, "required_capabilities")?,
        tags: json::<BTreeMap<String, String>>(tags, "tags")?,
        policy: json::<ExecutionPolicy>(policy, "policy")?,
        idempotency_key: col(row, "idempotency_key")?,
        concurrency_key: col(row, "concurrency_key")?,
        state,
        blocking_reason: col(row, "blocking_reason")?,
        attempt_index: col(row, "attempt_index")?,
        lease_epoch: col(row, "lease_epoch")?,
        retry_count: col(row, "retry_count")?,
        reclaim_count: col(row, "reclaim_count")?,
        replay_count: col(row, "replay_count")?,
        eligible_at: col(row, "eligible_at")?,
        deadline_at: col(row, "deadline_at")?,
        created_at: col(row, "created_at")?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
        input: col(row, "input")?,
        result: col(row, "result")?,
        last_failure: failure
            .map(|f| json::<Failure>(f, "last_failure"))
            .transpose()?,
        cancellation_reason: col(row, "cancellation_reason")?,
        progress_percent: col(row, "progress_percent")?,
        progress_message: col(row, "progress_message")?,
        flow_id: col(row, "flow_id")?,
        flow_key: col(row, "flow_key")?,
        parent_id: col(row, "parent_id")?,
        suspension: if state == PublicState::Suspended {
            let suspension: Option<serde_json::Value> = col(row, "suspension")?;
            suspension
                .map(|s| json::<Suspension>(s, "suspension"))
                .transpose()?
        } else {
            None
        },
        suspension_timeout_at: if state == PublicState::Suspended {
            col(row, "suspension_timeout_at")?
        } else {
            None
        },
    })
}

/// Classify a fenced write that matched no row. `replay_as` is the attempt state
/// the operation itself would have written, which makes a retry by the same
/// caller recognisable (the reference's replay reconciliation).
pub(super) async fn explain_lease_miss(
    pool: &Connections,
    lease: &LeaseHandle,
    replay_as: AttemptState,
) -> Result<LeaseMiss> {
    let row = sqlx::query(
        "SELECT e.public_state, e.attempt_index, e.lease_epoch, \
                a.lease_id AS attempt_lease_id, a.lease_epoch AS attempt_lease_epoch, \
                a.state AS attempt_state \
         FROM executions e \
         LEFT JOIN attempts a ON a.tenant_id = e.tenant_id AND a.execution_id = e.execution_id \
                              AND a.attempt_index = $3 \
         WHERE e.tenant_id = $1 AND e.execution_id = $2",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(lease.attempt_index)
    .optional(pool, "read lease state")
    .await?;
    let Some(row) = row else {
        return Ok(LeaseMiss::Rejected(EngineError::not_found(
            "execution",
            lease.execution_id,
        )));
    };
    let attempt_lease: Option<uuid::Uuid> = col(&row, "attempt_lease_id")?;
    let attempt_epoch: Option<i64> = col(&row, "attempt_lease_epoch")?;
    let attempt_state: Option<String> = col(&row, "attempt_state")?;
    let attempt = match (attempt_lease, attempt_epoch, attempt_state) {
        (Some(id), Some(epoch), Some(state)) => Some((id, epoch, parse::<AttemptState>(&state)?)),
        _ => None,
    };
    let lookup = LeaseLookup {
        state: parse::<PublicState>(&col::<String>(&row, "public_state")?)?,
        current_attempt: col(&row, "attempt_index")?,
        current_epoch: col(&row, "lease_epoch")?,
        attempt,
    };
    Ok(lookup.explain(lease, replay_as))
}

/// Run `body` in one transaction on a pooled connection
/// ([`crate::backend::pool::Connection::transaction`]): a failure is rolled
/// back before this returns, so the rows it locked are not left locked for
/// `SKIP LOCKED` claims to pass over.
pub(super) async fn transaction<T>(
    pool: &Connections,
    op: &'static str,
    body: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
) -> Result<T> {
    pool.transaction(op, None, body).await
}

/// One column of a row, with a storage error naming it on failure.
pub(super) fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(name)
        .map_err(|e| EngineError::Corrupt(format!("column {name}: {e}")))
}

/// CTEs `event` and `event_notify`: the completion events of the rows of
/// `source` matching `filter`, one outbox row of them per tenant (migration
/// 0040), then one NOTIFY carrying the newest event id. The statement's final
/// `SELECT` must read `event_notify`, or Postgres skips it. `outcome` is an
/// outcome's name.
///
/// `source` returns the execution's `flow_id` and `parent_id`: each event
/// records whether either is set (`linked`), so the outbox's trigger looks
/// up flows and parents only for executions that have them.
pub(super) fn completion_outbox(source: &str, outcome: &str, filter: &str) -> String {
    format!(
        "event AS (
    INSERT INTO completion_event_batches (tenant_id, execution_ids, attempt_indexes, outcomes, linked)
    SELECT tenant_id, array_agg(execution_id), array_agg(attempt_index),
        array_agg(flowfabric_outcome_code({outcome})),
        array_agg(flow_id IS NOT NULL OR parent_id IS NOT NULL)
    FROM (SELECT *, (row_number() OVER () - 1) / {EVENTS_PER_ROW} AS part
          FROM {source} WHERE {filter}) s
    GROUP BY tenant_id, part
    RETURNING event_id + cardinality(execution_ids) - 1 AS last_event_id
),
event_notify AS (
    SELECT pg_notify('{COMPLETION_CHANNEL}', max(last_event_id)::text) FROM event
    HAVING count(*) > 0
)"
    )
}

/// Most events an outbox row of a statement holds: below the 2^20 a row's
/// id range has.
const EVENTS_PER_ROW: u32 = 1_000_000;

/// Positional arguments built before the statement, so that the lease fence
/// (`$1`–`$5`, see `leases::FENCE`) and the claim's arguments are each bound in
/// one place. An encoding error is kept until `done`.
pub(super) struct Args(Result<sqlx::postgres::PgArguments, sqlx::error::BoxDynError>);

impl Args {
    pub(super) fn new() -> Self {
        Self(Ok(Default::default()))
    }

    /// `$1`–`$5`: tenant, execution, attempt index, lease id, lease epoch.
    pub(super) fn fence(lease: &LeaseHandle) -> Self {
        Self::new()
            .push(lease.tenant_id)
            .push(lease.execution_id)
            .push(lease.attempt_index)
            .push(lease.lease_id)
            .push(lease.lease_epoch)
    }

    pub(super) fn push<'q, T>(mut self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        if let Ok(args) = &mut self.0 {
            if let Err(e) = sqlx::Arguments::add(args, value) {
                self.0 = Err(e);
            }
        }
        self
    }

    /// The arguments, or the encoding error as a storage error of `op`.
    pub(super) fn done(self, op: &'static str) -> Result<sqlx::postgres::PgArguments> {
        self.0.map_err(|e| EngineError::Storage {
            op,
            cause: sqlx::Error::Encode(e),
        })
    }
}
