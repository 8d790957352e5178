//! `/ui/live/changes`: a Server-Sent Events stream that says "something of
//! yours changed" (an execution was created, claimed or ended), so the
//! executions page re-reads its rows. It carries no data: the page fetches
//! its rows through the normal, tenant-scoped route. Wake-ups are coalesced
//! to one per [`COALESCE`], however busy the tenant.
//!
//! What wakes it: the tenant's own events (claims, ends, signals), and new
//! work. New work names no tenant (one wake-up serves every worker), so on
//! it the stream looks at the tenant's newest execution and tells the page
//! only when that changed: the timing of other tenants' work is theirs.
//! What changes while a stream waits out its [`COALESCE`] came after the
//! page's read, so the page is told again at the end of the wait.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::Event;
use axum::response::IntoResponse;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::session::TenantSession;
use super::UiResult;
use crate::api::{live, AppState};
use crate::model::{ExecutionFilter, ExecutionId, TenantId};

/// The least time between two `changed` events of one stream.
const COALESCE: Duration = Duration::from_millis(750);

pub async fn changes(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
) -> UiResult<impl IntoResponse> {
    let tenant = session.tenant;
    let open = state.streams.take_now(tenant)?;
    let mut events = state.engine.event_wakeups(tenant).await?;
    let mut work = state.engine.work_signal().await?;
    let mut newest = newest_execution(&state, tenant).await;
    Ok(live::sse(open, move |tx| async move {
        // Something changed while the stream slept after telling the page:
        // after the page's read, so it is told again at once.
        let mut missed = false;
        loop {
            let changed = missed
                || tokio::select! {
                    _ = tx.closed() => return,
                    got = events.recv() => match got {
                        // Only this tenant's: a lag is its own events too.
                        Ok(()) | Err(RecvError::Lagged(_)) => true,
                        Err(RecvError::Closed) => return,
                    },
                    got = work.changed() => match got {
                        Ok(()) => newest_changed(&state, tenant, &mut newest).await,
                        Err(_) => return,
                    },
                };
            missed = false;
            if changed {
                if tx
                    .send(Event::default().event("changed").data("1"))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(COALESCE).await;
                while let Ok(()) | Err(TryRecvError::Lagged(_)) = events.try_recv() {
                    missed = true;
                }
                if work.has_changed().unwrap_or(false) {
                    work.borrow_and_update();
                    missed |= newest_changed(&state, tenant, &mut newest).await;
                }
            }
        }
    }))
}

/// Whether the tenant's newest execution is another than `newest`, which
/// becomes it.
async fn newest_changed(
    state: &AppState,
    tenant: TenantId,
    newest: &mut Option<ExecutionId>,
) -> bool {
    let now = newest_execution(state, tenant).await;
    std::mem::replace(newest, now) != now
}

/// The tenant's newest execution (`None` if it has none, or the read
/// failed: the next one that succeeds then counts as a change).
async fn newest_execution(state: &AppState, tenant: TenantId) -> Option<ExecutionId> {
    let newest = ExecutionFilter {
        limit: 1,
        newest_first: true,
        ..ExecutionFilter::default()
    };
    let page = state.engine.list(tenant, newest).await.ok()?;
    page.first().map(|e| e.execution_id)
}
