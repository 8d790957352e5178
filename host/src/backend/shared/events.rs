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

use chrono::{DateTime, Utc};
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

/// A stored value as the model holds it: most as they are, times through
/// [`Stamp`].
trait Model<T> {
    fn model(self) -> T;
}

impl<T> Model<T> for T {
    fn model(self) -> T {
        self
    }
}

impl Model<DateTime<Utc>> for Stamp {
    fn model(self) -> DateTime<Utc> {
        self.into()
    }
}

impl Model<Option<DateTime<Utc>>> for Option<Stamp> {
    fn model(self) -> Option<DateTime<Utc>> {
        self.map(Into::into)
    }
}

/// A stream's row and its [`Stream`] impl from one list of fields: the row
/// reads `event_id` and the columns of the fields' names, and each field
/// passes into the event's field of the same name, so the columns, the row
/// and the event cannot drift apart.
macro_rules! stream_row {
    ($row:ident => $event:ident in $table:literal, $op:literal { $($field:ident: $ty:ty,)* }) => {
        #[derive(sqlx::FromRow)]
        pub(crate) struct $row {
            event_id: i64,
            $($field: $ty,)*
        }

        impl Stream for $row {
            type Event = $event;
            const TABLE: &'static str = $table;
            const COLUMNS: &'static str = concat!("event_id" $(, ", ", stringify!($field))*);
            const OP: &'static str = $op;

            fn event_id(&self) -> i64 {
                self.event_id
            }

            fn event(self, cursor: EventCursor) -> $event {
                $event {
                    cursor,
                    event_id: self.event_id,
                    $($field: Model::model(self.$field),)*
                }
            }
        }
    };
}

stream_row!(CompletionRow => CompletionEvent in "completion_events", "read completion events" {
    execution_id: ExecutionId,
    attempt_index: i32,
    outcome: String,
    created_at: Stamp,
});

stream_row!(LeaseRow => LeaseEvent in "lease_events", "read lease events" {
    execution_id: ExecutionId,
    attempt_index: i32,
    lease_epoch: i64,
    kind: String,
    lease_expires_at: Option<Stamp>,
    phase: String,
    created_at: Stamp,
});

stream_row!(SignalRow => SignalEvent in "signal_events", "read signal events" {
    execution_id: ExecutionId,
    waitpoint_id: WaitpointId,
    signal_id: Uuid,
    name: String,
    effect: String,
    created_at: Stamp,
});

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
