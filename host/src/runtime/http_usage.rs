//! A guest's outbound HTTP as usage: `http_requests`, `http_bytes_out` and
//! `http_bytes_in`, the dimensions budgets may limit.
//!
//! Why requests are not all reported as they go: a report is a fenced write
//! (the execution's row locked, the attempt's usage and every covering
//! budget updated), about a millisecond on a local Postgres, ten times what
//! a request costs over a kept connection, and a transaction a request for
//! the database. It is needed only where a budget may refuse the request.
//! So [`HttpUsage::count_request`] asks whether any budget of the tenant
//! limits `http_requests` (at the attempt's first request, then at most
//! every [`RECHECK_EVERY`]):
//! * while one does, each request is reported before it is sent, with any
//!   counted before it, so a hard limit refuses it as it always did;
//! * while none does, requests are counted here.
//!
//! What is counted here (requests while no budget limited them, and bytes,
//! which are known only once sent and read) is reported in one write when
//! the attempt ends ([`HttpUsage::take`]), or before a call that lets go of
//! the lease (suspend, sleep, delay, cancel, wait for children:
//! [`HttpUsage::settle`]), since a report needs the lease.
//!
//! Either way a request of an attempt whose lease is lost is refused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime_wasi_http::Error as HttpError;

use super::imports::TaskImports;
use super::UsageResult;

const REQUESTS: &str = "http_requests";

/// How long an answer to "does a budget limit requests?" is trusted: a
/// budget created while an attempt runs binds its requests within this.
pub(super) const RECHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) struct HttpUsage {
    imports: Arc<dyn TaskImports>,
    /// Counted and not yet reported.
    requests: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    /// Whether a budget limits requests, and when that was asked.
    limited: Mutex<Option<(Instant, bool)>>,
}

impl HttpUsage {
    pub(super) fn new(imports: Arc<dyn TaskImports>) -> Self {
        Self {
            imports,
            requests: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            limited: Mutex::new(None),
        }
    }

    /// Count one request before it is sent; an error refuses it.
    pub(super) async fn count_request(&self) -> Result<(), HttpError> {
        if !self.imports.lease_healthy() {
            return Err(not_metered("the lease is lost"));
        }
        if !self.limited().await? {
            self.requests.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let earlier = self.requests.swap(0, Ordering::Relaxed);
        let reported = self
            .imports
            .report_usage(REQUESTS.to_owned(), earlier + 1, None)
            .await;
        let refusal = match reported {
            Ok(UsageResult::HardBreach(b)) => HttpError::InternalError(Some(format!(
                "budget exceeded: {} is at {} of {}",
                b.dimension, b.current, b.limit
            ))),
            Ok(_) => return Ok(()),
            Err(e) => not_metered(&format!("{e:?}")),
        };
        // Nothing of a refused report was applied.
        self.requests.fetch_add(earlier, Ordering::Relaxed);
        Err(refusal)
    }

    /// Bytes one exchange sent and read.
    pub(super) fn count_bytes(&self, out: u64, into: u64) {
        self.bytes_out.fetch_add(out, Ordering::Relaxed);
        self.bytes_in.fetch_add(into, Ordering::Relaxed);
    }

    /// What is counted and not reported, by dimension (none at zero), now
    /// taken to be reported.
    pub(super) fn take(&self) -> Vec<(String, u64)> {
        [
            ("http_bytes_in", &self.bytes_in),
            ("http_bytes_out", &self.bytes_out),
            (REQUESTS, &self.requests),
        ]
        .into_iter()
        .map(|(dimension, count)| (dimension, count.swap(0, Ordering::Relaxed)))
        .filter(|(_, amount)| *amount > 0)
        .map(|(dimension, amount)| (dimension.to_owned(), amount))
        .collect()
    }

    /// Report what is counted now, while the lease is held: before a call
    /// that may let go of it. Best effort: a failed report is logged (the
    /// call that follows meets the same failure).
    pub(super) async fn settle(&self) {
        let usage = self.take();
        if usage.is_empty() {
            return;
        }
        if let Err(e) = self.imports.report_usage_many(usage, None).await {
            tracing::debug!(error = ?e, "http usage not reported");
        }
    }

    async fn limited(&self) -> Result<bool, HttpError> {
        let known = *self.limited.lock().expect("http usage");
        if let Some((asked, limited)) = known {
            if asked.elapsed() < RECHECK_EVERY {
                return Ok(limited);
            }
        }
        let limited = self
            .imports
            .usage_limited(REQUESTS)
            .await
            .map_err(|e| not_metered(&format!("{e:?}")))?;
        *self.limited.lock().expect("http usage") = Some((Instant::now(), limited));
        Ok(limited)
    }
}

fn not_metered(why: &str) -> HttpError {
    HttpError::InternalError(Some(format!("the request could not be metered: {why}")))
}
