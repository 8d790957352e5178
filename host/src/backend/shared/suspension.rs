//! Waitpoint and signal rows, and the reads of them that are the same on
//! both drivers.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::caps::{Counted, Rows};
use super::stamp::Stamp;
use crate::backend::{refusals, Fetch, Run};
use crate::error::Result;
use crate::model::{
    ExecutionId, NewSignal, Page, Signal, TenantId, Waitpoint, WaitpointId, WaitpointRef,
};

/// The columns of a waitpoint, as [`WaitpointRow`] reads them.
pub(crate) const WAITPOINT_COLUMNS: &str =
    "waitpoint_id, waitpoint_key, state, expires_at, created_at";

/// The columns of a signal, as [`SignalRow`] reads them.
pub(crate) const SIGNAL_COLUMNS: &str = "signal_id, waitpoint_key, name, payload, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct WaitpointRow {
    pub(crate) waitpoint_id: WaitpointId,
    pub(crate) waitpoint_key: String,
    pub(crate) state: String,
    expires_at: Option<Stamp>,
    created_at: Stamp,
}

impl WaitpointRow {
    /// Whether it has an expiry at or before `now`.
    pub(crate) fn expired_by(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at.0 <= now)
    }
}

impl From<WaitpointRow> for Waitpoint {
    fn from(r: WaitpointRow) -> Self {
        Waitpoint {
            waitpoint_id: r.waitpoint_id,
            key: r.waitpoint_key,
            state: r.state,
            expires_at: r.expires_at.map(Into::into),
            created_at: r.created_at.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SignalRow {
    signal_id: Uuid,
    waitpoint_key: String,
    name: String,
    payload: Vec<u8>,
    created_at: Stamp,
}

impl From<SignalRow> for Signal {
    fn from(r: SignalRow) -> Self {
        Signal {
            signal_id: r.signal_id,
            waitpoint_key: r.waitpoint_key,
            name: r.name,
            payload: r.payload,
            created_at: r.created_at.into(),
        }
    }
}

for_both_drivers! {
    /// Refuse another signal once the execution keeps `max_signals`
    /// (counted off `signals_pkey` by its execution prefix; the execution's
    /// row is locked, so no other delivery counts at the same time).
    async fn check_signal_room(conn, tenant: TenantId, id: ExecutionId, max_signals: u32)
        -> Result<()>
    {
        let rows = Rows {
            table: "signals",
            within: Some(("execution_id", id.as_uuid())),
        };
        if !caps::within_cap(conn, tenant, rows, max_signals, Counted::BeforeWrite, "count signals")
            .await?
        {
            return Err(refusals::signals_exceeded(max_signals));
        }
        Ok(())
    }

    /// Store a signal delivered to the waitpoint `to` (whose key is `key`),
    /// unconsumed; returns its new id.
    async fn insert_signal(conn, tenant: TenantId, to: WaitpointRef, key: &str, signal: &NewSignal)
        -> Result<Uuid>
    {
        let signal_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO signals (tenant_id, execution_id, signal_id, waitpoint_id, \
                 waitpoint_key, name, payload, idempotency_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(to.execution)
        .bind(signal_id)
        .bind(to.waitpoint)
        .bind(key)
        .bind(&signal.name)
        .bind(&signal.payload)
        .bind(&signal.idempotency_key)
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, "deliver signal")
        .await?;
        Ok(signal_id)
    }

    /// Unconsumed signals on the execution's active waitpoints, in the order
    /// they arrived.
    async fn buffered_signals(conn, tenant: TenantId, id: ExecutionId) -> Result<Vec<Signal>> {
        sqlx::query_as::<_, SignalRow>(&format!(
            "SELECT {SIGNAL_COLUMNS} FROM signals s \
             WHERE s.tenant_id = $1 AND s.execution_id = $2 AND s.consumed_in IS NULL \
               AND s.waitpoint_id IN (SELECT waitpoint_id FROM waitpoints \
                   WHERE tenant_id = $1 AND execution_id = $2 AND state = 'active') \
             ORDER BY s.created_at, s.signal_id"
        ))
        .bind(tenant)
        .bind(id)
        .all_mapped(&mut *conn, "read buffered signals", Signal::from)
        .await
    }

    /// The signals the execution's resume numbered `seq` consumed, in the
    /// order they arrived.
    async fn resume_signals(conn, tenant: TenantId, id: ExecutionId, seq: i32)
        -> Result<Vec<Signal>>
    {
        sqlx::query_as::<_, SignalRow>(&format!(
            "SELECT {SIGNAL_COLUMNS} FROM signals \
             WHERE tenant_id = $1 AND execution_id = $2 AND consumed_in = $3 \
             ORDER BY created_at, signal_id"
        ))
        .bind(tenant)
        .bind(id)
        .bind(seq)
        .all_mapped(&mut *conn, "read resume signals", Signal::from)
        .await
    }

    /// A page of the execution's waitpoints in id order (the primary key's:
    /// tenant, execution, waitpoint id).
    async fn list_waitpoints(
        conn,
        tenant: TenantId,
        id: ExecutionId,
        page: Page<Option<WaitpointId>>,
    ) -> Result<Vec<Waitpoint>> {
        sqlx::query_as::<_, WaitpointRow>(&format!(
            "SELECT {WAITPOINT_COLUMNS} FROM waitpoints \
             WHERE tenant_id = $1 AND execution_id = $2 AND waitpoint_id > $3 \
             ORDER BY waitpoint_id LIMIT $4"
        ))
        .bind(tenant)
        .bind(id)
        .bind(page.after.unwrap_or(WaitpointId::nil()))
        .bind(i64::from(page.limit))
        .all_mapped(&mut *conn, "list waitpoints", Waitpoint::from)
        .await
    }
}
