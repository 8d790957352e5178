//! What the live (Server-Sent Events) routes share: a task that feeds events
//! through a channel to the response, and sleeping between reads until a
//! wake-up addressed to what the task follows arrives (its tenant's event
//! streams, or its execution), or a slow poll passes (a notification lost
//! with a connection is not replayed). A waiting task holds no database
//! connection.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use super::turns::Turn;

/// How often a live task re-reads without a wake-up.
const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// A response streaming what `feed` sends; `feed` runs as its own task and
/// sees its sender closed once the client goes away. The task holds the
/// stream's `turn` (one of its tenant's open streams) until it ends.
pub fn sse<F, Fut>(turn: Turn, feed: F) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let feeding = feed(tx);
    tokio::spawn(async move {
        let _open = turn;
        feeding.await
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Sleep until a wake-up arrives or the poll interval passes (`true`: read
/// again), or the client is gone (`false`: stop).
pub async fn wait(wakeups: &mut broadcast::Receiver<()>, tx: &mpsc::Sender<Event>) -> bool {
    tokio::select! {
        _ = tx.closed() => false,
        _ = next_wakeup(wakeups) => true,
        _ = tokio::time::sleep(FALLBACK_POLL) => true,
    }
}

async fn next_wakeup(wakeups: &mut broadcast::Receiver<()>) {
    match wakeups.recv().await {
        // Some were dropped (all of them ours): read again all the same.
        Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {}
        // No more wake-ups: polling alone from now on.
        Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
    }
}
