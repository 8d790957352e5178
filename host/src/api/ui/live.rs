//! `/ui/live/changes`: a Server-Sent Events stream that says "something of
//! yours changed" (an execution was created, claimed or ended), so the
//! executions page re-reads its rows. It carries no data: the page fetches
//! its rows through the normal, tenant-scoped route. Wake-ups are coalesced
//! to one per [`COALESCE`], however busy the tenant.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::IntoResponse;
use tokio::sync::broadcast::error::RecvError;

use super::session::TenantSession;
use super::UiResult;
use crate::api::{live, AppState};

/// The least time between two `changed` events of one stream.
const COALESCE: Duration = Duration::from_millis(750);

pub async fn changes(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
) -> UiResult<impl IntoResponse> {
    let tenant = session.tenant;
    let open = state.streams.take_now(tenant)?;
    let mut events = state.engine.event_wakeups().await?;
    let mut work = state.engine.work_signal().await?;
    Ok(live::sse(open, move |tx| async move {
        loop {
            let changed = tokio::select! {
                _ = tx.closed() => return,
                got = events.recv() => match got {
                    Ok(t) => t == tenant,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                // New work (of any tenant): cheap to over-report, the page
                // re-reads one page of its own rows.
                got = work.changed() => match got {
                    Ok(()) => true,
                    Err(_) => return,
                },
            };
            if changed {
                if tx
                    .send(Event::default().event("changed").data("1"))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(COALESCE).await;
                // What arrived meanwhile is covered by the next read.
                while events.try_recv().is_ok() {}
                work.borrow_and_update();
            }
        }
    }))
}
