//! Accepting connections: how many the API holds open, and how long a
//! client may take to send a request's headers.
//!
//! Why not `axum::serve`: it gives hyper no timer, so hyper's header
//! timeout never runs, and it accepts every connection it is offered. A
//! client that opens connections and sends nothing, or a header a byte at a
//! time, would then hold a task and a file descriptor each for as long as it
//! liked, before any request (and so any tenant, or any turn) is known. Here
//! a connection that has not sent a whole request head within
//! [`ServeLimits::header_read_timeout`] is closed (that includes an idle
//! keep-alive connection waiting for its next request), and past
//! [`ServeLimits::max_connections`] the listener stops accepting until one
//! closes: the rest wait in the kernel's backlog.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one `serve` allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Longest a connection may take to send a request's head, counted from
    /// when the server starts reading it (for a kept-alive connection, from
    /// the end of its last response).
    pub header_read_timeout: Duration,
    /// Connections held open at once.
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop
/// accepting and wait for the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let room = tokio::select! {
            room = open.clone().acquire_owned() => room.expect("never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(room);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// After a failed accept: a connection the client gave up on is nothing;
/// anything else (out of file descriptors, say) would fail again at once,
/// so wait a moment before the next.
async fn pause_after(e: &std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
