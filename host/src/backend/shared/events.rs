//! The three event streams' rows, read the same way on both drivers.
//!
//! `completion_events`, `lease_events` and `signal_events` have the same
//! columns in both schemas, so each stream's row type ([`Stream`]) and the
//! event it becomes are written once here. What differs is where a read may
//! stop: Postgres orders events by `(txid, event_id)` and withholds those of
//! transactions still running (its `outbox` module), while SQLite has one
//! writer and its `event_id` alone orders them. Each backend supplies that
//! read as `read_stream::<Row>` and its own `execution_origins`; the
//! [`Events`](crate::backend::Events) impl is written once, in
//! [`implement!`].

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::FromRow;
use uuid::Uuid;

use super::stamp::Stamp;
use crate::model::{
    CompletionEvent, EventCursor, ExecutionId, ExecutionOrigin, LeaseEvent, SignalEvent,
    WaitpointId,
};

/// One event stream: its table, the columns its row reads (`event_id`
/// among them) and the event a row becomes at its cursor.
pub(crate) trait Stream:
    Send + Unpin + for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow>
{
    type Event: Send;
    const TABLE: &'static str;
    const COLUMNS: &'static str;
    /// The operation a failed read names.
    const OP: &'static str;
    fn event_id(&self) -> i64;
    fn event(self, cursor: EventCursor) -> Self::Event;
}

#[derive(sqlx::FromRow)]
pub(crate) struct CompletionRow {
    event_id: i64,
    execution_id: ExecutionId,
    attempt_index: i32,
    outcome: String,
    created_at: Stamp,
}

impl Stream for CompletionRow {
    type Event = CompletionEvent;
    const TABLE: &'static str = "completion_events";
    const COLUMNS: &'static str = "event_id, execution_id, attempt_index, outcome, created_at";
    const OP: &'static str = "read completion events";

    fn event_id(&self) -> i64 {
        self.event_id
    }

    fn event(self, cursor: EventCursor) -> CompletionEvent {
        CompletionEvent {
            cursor,
            event_id: self.event_id,
            execution_id: self.execution_id,
            attempt_index: self.attempt_index,
            outcome: self.outcome,
            created_at: self.created_at.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LeaseRow {
    event_id: i64,
    execution_id: ExecutionId,
    attempt_index: i32,
    lease_epoch: i64,
    kind: String,
    lease_expires_at: Option<Stamp>,
    phase: String,
    created_at: Stamp,
}

impl Stream for LeaseRow {
    type Event = LeaseEvent;
    const TABLE: &'static str = "lease_events";
    const COLUMNS: &'static str = "event_id, execution_id, attempt_index, lease_epoch, kind, \
                                   lease_expires_at, phase, created_at";
    const OP: &'static str = "read lease events";

    fn event_id(&self) -> i64 {
        self.event_id
    }

    fn event(self, cursor: EventCursor) -> LeaseEvent {
        LeaseEvent {
            cursor,
            event_id: self.event_id,
            execution_id: self.execution_id,
            attempt_index: self.attempt_index,
            lease_epoch: self.lease_epoch,
            kind: self.kind,
            lease_expires_at: self.lease_expires_at.map(Into::into),
            phase: self.phase,
            created_at: self.created_at.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SignalRow {
    event_id: i64,
    execution_id: ExecutionId,
    waitpoint_id: WaitpointId,
    signal_id: Uuid,
    name: String,
    effect: String,
    created_at: Stamp,
}

impl Stream for SignalRow {
    type Event = SignalEvent;
    const TABLE: &'static str = "signal_events";
    const COLUMNS: &'static str =
        "event_id, execution_id, waitpoint_id, signal_id, name, effect, created_at";
    const OP: &'static str = "read signal events";

    fn event_id(&self) -> i64 {
        self.event_id
    }

    fn event(self, cursor: EventCursor) -> SignalEvent {
        SignalEvent {
            cursor,
            event_id: self.event_id,
            execution_id: self.execution_id,
            waitpoint_id: self.waitpoint_id,
            signal_id: self.signal_id,
            name: self.name,
            effect: self.effect,
            created_at: self.created_at.into(),
        }
    }
}

/// Executions' kinds and lanes, as `SELECT execution_id, kind, lane` reads
/// them.
pub(crate) fn origins(rows: Vec<(ExecutionId, String, String)>) -> Vec<ExecutionOrigin> {
    rows.into_iter()
        .map(|(execution_id, kind, lane)| ExecutionOrigin {
            execution_id,
            kind,
            lane,
        })
        .collect()
}

/// [`Events`](crate::backend::Events) for a backend whose module (where
/// this is invoked) has `read_stream::<R: Stream>(db, tenant, page)` and
/// `execution_origins(db, tenant, ids)`.
macro_rules! implement {
    ($backend:ty) => {
        $crate::backend::shared::events::implement!(@streams $backend,
            completion_events: CompletionRow => CompletionEvent,
            lease_events: LeaseRow => LeaseEvent,
            signal_events: SignalRow => SignalEvent);
    };
    // Each stream is the same read of its own rows.
    (@streams $backend:ty, $($stream:ident: $row:ident => $event:ident),*) => {
        const _: () = {
            use $crate::backend::shared::events::{CompletionRow, LeaseRow, SignalRow};
            use $crate::error::Result;
            use $crate::model::{
                CompletionEvent, EventBatch, EventCursor, ExecutionId, ExecutionOrigin, LeaseEvent,
                Page, SignalEvent, TenantId,
            };

            #[async_trait::async_trait]
            impl $crate::backend::Events for $backend {
                $(
                    async fn $stream(
                        &self,
                        tenant: TenantId,
                        page: Page<EventCursor>,
                    ) -> Result<EventBatch<$event>> {
                        read_stream::<$row>(self, tenant, page).await
                    }
                )*

                async fn execution_origins(
                    &self,
                    tenant: TenantId,
                    ids: &[ExecutionId],
                ) -> Result<Vec<ExecutionOrigin>> {
                    execution_origins(self, tenant, ids).await
                }
            }
        };
    };
}
pub(crate) use implement;
