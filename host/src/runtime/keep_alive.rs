//! Outbound connections kept open between requests, per tenant and origin.
//!
//! Why: a new connection costs a TCP handshake and, for `https`, a TLS
//! handshake, one to three round trips before the request leaves; a guest
//! that calls one API ten times, or a kind whose every attempt calls it,
//! pays that each time. Servers keep HTTP/1.1 connections open for the next
//! request, and so does every client library people use outside a sandbox.
//!
//! Why it stays as narrow as a new connection:
//! * a connection is kept for its tenant and origin (scheme, host, port)
//!   only, so it never carries another tenant's request, nor a request to
//!   another host over a TLS session verified for this one;
//! * a request that would reuse one has passed every check a new one does
//!   (the origin against the grant and the ceiling, the metering) and the
//!   kept connection's address is checked against this attempt's grant again,
//!   so a narrowed operator range binds at once;
//! * an idle connection keeps holding one of its tenant's connection permits
//!   (the cap counts open sockets), and a tenant that needs a permit with
//!   none free closes its own oldest idle connection first
//!   ([`KeepAlive::close_oldest`]);
//! * idle connections close after the idle timeout, and at most
//!   [`MAX_IDLE_PER_ORIGIN`] wait per tenant and origin;
//! * a kept connection the server closed meanwhile hands the request back
//!   unsent (hyper's `try_send_request`) and it goes out on a new one; a
//!   request that was sent is never sent again.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// Idle connections kept per tenant and origin; more are closed.
pub(super) const MAX_IDLE_PER_ORIGIN: usize = 8;

/// The default idle timeout: under what most servers allow an idle
/// connection (nginx 75 s, load balancers 60 s), so that a kept one is
/// rarely closed under a request, and long enough to span a run's calls
/// and the next attempts of a busy kind.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a kept connection may be used again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    pub(super) tenant: uuid::Uuid,
    pub(super) scheme: &'static str,
    pub(super) host: String,
    pub(super) port: u16,
}

/// A connection between requests: the half that sends (the half that reads
/// runs on a task of its own, holding the tenant's permit, and ends when
/// this half is dropped or the server closes).
pub(super) struct Kept {
    pub(super) sender: SendRequest<WasiBody>,
    /// The address it was opened to, checked then.
    pub(super) peer: SocketAddr,
}

/// What became of a request on a connection that did not fail it.
pub(super) enum Sent {
    /// The response head arrived.
    Answered(http::Response<hyper::body::Incoming>),
    /// The connection closed before the request went out (while idle); it
    /// is handed back to go out on another.
    Unsent(http::Request<WasiBody>),
}

impl Kept {
    /// Send on this connection once it is ready, waiting up to
    /// `first_byte` for the response head.
    pub(super) async fn send(
        &mut self,
        request: http::Request<WasiBody>,
        ready_within: Duration,
        first_byte: Duration,
    ) -> Result<Sent, HttpError> {
        match tokio::time::timeout(ready_within, self.sender.ready()).await {
            Ok(Ok(())) => {}
            _ => return Ok(Sent::Unsent(request)),
        }
        let sent = tokio::time::timeout(first_byte, self.sender.try_send_request(request))
            .await
            .map_err(|_| HttpError::ConnectionReadTimeout)?;
        match sent {
            Ok(response) => Ok(Sent::Answered(response)),
            Err(mut failed) => match failed.take_message() {
                Some(unsent) => Ok(Sent::Unsent(unsent)),
                None => Err(HttpError::from(failed.into_error())),
            },
        }
    }
}

struct Idle {
    kept: Kept,
    since: Instant,
}

/// The idle connections of every tenant.
pub(super) struct KeepAlive {
    idle_timeout: Duration,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    sweeping: std::sync::atomic::AtomicBool,
}

impl KeepAlive {
    /// `idle_timeout` zero keeps nothing: a connection per request.
    pub(super) fn new(idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle_timeout,
            idle: Mutex::default(),
            sweeping: Default::default(),
        })
    }

    /// The most recently used idle connection to `origin` that is still
    /// open and whose address `allowed` accepts; the others it passes are
    /// closed.
    pub(super) fn take(&self, origin: &Origin, allowed: impl Fn(IpAddr) -> bool) -> Option<Kept> {
        let mut idle = self.idle.lock().expect("kept connections");
        let list = idle.get_mut(origin)?;
        let found = loop {
            let Some(candidate) = list.pop() else {
                break None;
            };
            if self.fresh(&candidate) && allowed(candidate.kept.peer.ip()) {
                break Some(candidate.kept);
            }
        };
        if list.is_empty() {
            idle.remove(origin);
        }
        found
    }

    /// Keep a connection whose response was read to its end.
    pub(super) fn put(self: &Arc<Self>, origin: Origin, kept: Kept) {
        if self.idle_timeout.is_zero() || kept.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("kept connections");
        let list = idle.entry(origin).or_default();
        if list.len() >= MAX_IDLE_PER_ORIGIN {
            list.remove(0);
        }
        list.push(Idle {
            kept,
            since: Instant::now(),
        });
        drop(idle);
        self.start_sweeping();
    }

    /// Close the tenant's longest idle connection, so that its permit comes
    /// free; whether there was one.
    pub(super) fn close_oldest(&self, tenant: uuid::Uuid) -> bool {
        let mut idle = self.idle.lock().expect("kept connections");
        let oldest = idle
            .iter()
            .filter(|(origin, _)| origin.tenant == tenant)
            .filter_map(|(origin, list)| list.first().map(|i| (i.since, origin.clone())))
            .min_by_key(|(since, _)| *since);
        let Some((_, origin)) = oldest else {
            return false;
        };
        if let Some(list) = idle.get_mut(&origin) {
            list.remove(0);
            if list.is_empty() {
                idle.remove(&origin);
            }
        }
        true
    }

    /// Idle connections, all tenants.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("kept connections")
            .values()
            .map(Vec::len)
            .sum()
    }

    fn fresh(&self, idle: &Idle) -> bool {
        idle.since.elapsed() < self.idle_timeout && !idle.kept.sender.is_closed()
    }

    /// Close what outlived the idle timeout, or what the server closed.
    fn sweep(&self) {
        let mut idle = self.idle.lock().expect("kept connections");
        idle.retain(|_, list| {
            list.retain(|i| self.fresh(i));
            !list.is_empty()
        });
    }

    /// One task per pool closes idle connections as they expire, whether or
    /// not another request comes; it ends with the pool.
    fn start_sweeping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        // Bodies are read on the runtime's threads; should one ever be read
        // elsewhere, idle connections still expire when next looked at.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let sweeper = Sweeper(Arc::downgrade(self));
        let every = (self.idle_timeout / 4).max(Duration::from_millis(50));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = sweeper.0.upgrade() else {
                    return;
                };
                pool.sweep();
            }
        });
    }
}

/// The sweeping task's hold on its pool; if the task ends with its runtime
/// while the pool lives on, the next connection kept starts another.
struct Sweeper(Weak<KeepAlive>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sweeping
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi_http::io::TokioIo;

    fn origin(tenant: u128, port: u16) -> Origin {
        Origin {
            tenant: uuid::Uuid::from_u128(tenant),
            scheme: "http",
            host: "127.0.0.1".into(),
            port,
        }
    }

    async fn loopback() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// A real connection to a loopback listener that accepts and holds it.
    async fn connection(listener: &tokio::net::TcpListener) -> (Kept, tokio::net::TcpStream) {
        let addr = listener.local_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        (Kept { sender, peer: addr }, server_side)
    }

    #[tokio::test]
    async fn a_connection_is_kept_only_for_its_tenant_and_origin() {
        let (listener, port) = loopback().await;
        let pool = KeepAlive::new(Duration::from_secs(30));
        let (kept, _server) = connection(&listener).await;
        pool.put(origin(1, port), kept);

        assert!(
            pool.take(&origin(2, port), |_| true).is_none(),
            "another tenant"
        );
        assert!(
            pool.take(&origin(1, port + 1), |_| true).is_none(),
            "another port"
        );
        assert!(
            pool.take(&origin(1, port), |_| false).is_none(),
            "an address the grant no longer allows"
        );
        assert_eq!(
            pool.idle_count(),
            0,
            "a refused address's connection is closed"
        );

        let (kept, _server) = connection(&listener).await;
        pool.put(origin(1, port), kept);
        assert!(pool.take(&origin(1, port), |_| true).is_some());
        assert!(
            pool.take(&origin(1, port), |_| true).is_none(),
            "taken once"
        );
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_capped_per_origin() {
        let (listener, port) = loopback().await;
        let pool = KeepAlive::new(Duration::from_millis(200));
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE_PER_ORIGIN + 2 {
            let (kept, server) = connection(&listener).await;
            servers.push(server);
            pool.put(origin(1, port), kept);
        }
        assert_eq!(pool.idle_count(), MAX_IDLE_PER_ORIGIN);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pool.idle_count(), 0, "swept once past the idle timeout");
        assert!(pool.take(&origin(1, port), |_| true).is_none());
    }

    #[tokio::test]
    async fn nothing_is_kept_with_a_zero_timeout_or_once_the_server_closed() {
        let (listener, port) = loopback().await;
        let off = KeepAlive::new(Duration::ZERO);
        let (kept, _server) = connection(&listener).await;
        off.put(origin(1, port), kept);
        assert_eq!(off.idle_count(), 0);

        let pool = KeepAlive::new(Duration::from_secs(30));
        let (kept, server) = connection(&listener).await;
        pool.put(origin(1, port), kept);
        drop(server);
        // The reading half sees the close and the sending half reports it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.take(&origin(1, port), |_| true).is_none());
    }

    #[test]
    fn a_sweeper_whose_runtime_ended_is_started_again() {
        use std::sync::atomic::Ordering;
        let pool = KeepAlive::new(Duration::from_secs(30));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        first.block_on(async { pool.start_sweeping() });
        assert!(pool.sweeping.load(Ordering::Acquire));
        drop(first);
        assert!(!pool.sweeping.load(Ordering::Acquire), "its task ended");
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        second.block_on(async { pool.start_sweeping() });
        assert!(pool.sweeping.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn closing_the_oldest_frees_only_that_tenants_connection() {
        let (listener, port) = loopback().await;
        let pool = KeepAlive::new(Duration::from_secs(30));
        let (a, _sa) = connection(&listener).await;
        pool.put(origin(1, port), a);
        let (b, _sb) = connection(&listener).await;
        pool.put(origin(2, port), b);

        assert!(pool.close_oldest(uuid::Uuid::from_u128(1)));
        assert!(!pool.close_oldest(uuid::Uuid::from_u128(1)), "none left");
        assert!(pool.take(&origin(2, port), |_| true).is_some());
    }
}
