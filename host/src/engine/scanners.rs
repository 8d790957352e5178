//! The scanner supervisor: one task per scanner pass, each on its own interval.
//!
//! A pass that fills its per-tenant limit runs again at once; otherwise it sleeps
//! for its interval. Errors are logged and retried on the next tick: a scanner
//! must outlive a database restart. Stopping is cooperative through a watch
//! channel, so `shutdown` returns once every pass has finished its current batch.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::backend::{Backend, Sweep};
use crate::model::TenantId;

/// How long an ended execution is kept unless the operator says otherwise.
const DEFAULT_EXECUTION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct ScannerConfig {
    pub lease_expiry: Duration,
    pub delayed: Duration,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
    pub suspension_timeout: Duration,
    pub sibling_cancel: Duration,
    pub wake_parents: Duration,
    pub budget_reset: Duration,
    pub event_prune: Duration,
    /// Due schedules are fired this often (the resolution of their timing).
    pub schedules: Duration,
    /// Executions a concurrency key held back are checked for room this
    /// often (start windows roll over; a freed slot's handoff is missed).
    pub held_keys: Duration,
    /// How long events stay in the event streams (completion, lease, signal).
    pub event_retention: Duration,
    /// Ended executions are looked for to delete this often.
    pub execution_prune: Duration,
    /// How long an ended execution is kept, with everything recorded of it
    /// (flows: once every member has ended; children: once their parent
    /// has); `None` keeps them for ever.
    pub execution_retention: Option<Duration>,
    /// Rows per tenant per pass.
    pub batch: u32,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        Self {
            lease_expiry: Duration::from_millis(1_000),
            delayed: Duration::from_millis(250),
            attempt_timeout: Duration::from_millis(1_000),
            deadline: Duration::from_millis(2_000),
            suspension_timeout: Duration::from_millis(500),
            sibling_cancel: Duration::from_millis(1_000),
            wake_parents: Duration::from_millis(250),
            budget_reset: Duration::from_millis(1_000),
            event_prune: Duration::from_secs(60),
            schedules: Duration::from_millis(250),
            held_keys: Duration::from_millis(500),
            event_retention: Duration::from_secs(7 * 24 * 3600),
            execution_prune: Duration::from_secs(60),
            execution_retention: Some(DEFAULT_EXECUTION_RETENTION),
            batch: 500,
        }
    }
}

/// The passes that go tenant by tenant (see [`sweep_tenants`]).
#[derive(Clone, Copy, Debug)]
enum Swept {
    LeaseExpiry,
    Delayed,
    AttemptTimeout,
    Deadline,
    SuspensionTimeout,
    SiblingCancel,
    WakeParents,
    BudgetReset,
    HeldKeys,
}

impl Swept {
    fn name(self) -> &'static str {
        match self {
            Swept::LeaseExpiry => "lease_expiry",
            Swept::Delayed => "delayed_promoter",
            Swept::AttemptTimeout => "attempt_timeout",
            Swept::Deadline => "execution_deadline",
            Swept::SuspensionTimeout => "suspension_timeout",
            Swept::SiblingCancel => "sibling_cancel",
            Swept::WakeParents => "wake_parents",
            Swept::BudgetReset => "budget_reset",
            Swept::HeldKeys => "held_keys",
        }
    }

    /// The backend's pass over `sweep`'s tenants.
    fn over(self, backend: &dyn Backend, sweep: Sweep) -> BoxFuture<'_, crate::error::Result<u64>> {
        match self {
            Swept::LeaseExpiry => backend.reclaim_expired_leases(sweep),
            Swept::Delayed => backend.promote_delayed(sweep),
            Swept::AttemptTimeout => backend.fail_timed_out_attempts(sweep),
            Swept::Deadline => backend.expire_past_deadline(sweep),
            Swept::SuspensionTimeout => backend.time_out_suspensions(sweep),
            Swept::SiblingCancel => backend.cancel_pending_siblings(sweep),
            Swept::WakeParents => backend.wake_waiting_parents(sweep),
            Swept::BudgetReset => backend.reset_due_budgets(sweep),
            Swept::HeldKeys => backend.release_held_keys(sweep),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Pass {
    Swept(Swept),
    EventPrune,
    ExecutionPrune,
    Schedules,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Swept(swept) => swept.name(),
            Pass::EventPrune => "event_prune",
            Pass::ExecutionPrune => "execution_prune",
            Pass::Schedules => "schedules",
        }
    }

    async fn run(
        self,
        backend: &dyn Backend,
        config: &ScannerConfig,
        retries: &mut TenantRetries,
    ) -> crate::error::Result<u64> {
        let batch = config.batch;
        match self {
            Pass::Swept(swept) => sweep(backend, batch, retries, |s| swept.over(backend, s)).await,
            Pass::EventPrune => backend.prune_events(config.event_retention, batch).await,
            Pass::ExecutionPrune => match config.execution_retention {
                Some(retention) => prune_ended(backend, retention, batch).await,
                None => Ok(0),
            },
            Pass::Schedules => backend.fire_due_schedules(batch).await,
        }
    }
}

/// Delete every tenant's executions ended more than `retention` ago, at most
/// `limit` executions and `limit` flows a tenant (what stays longer:
/// `backend::shared::retention`). Returns how many executions went.
///
/// Each tenant is pruned in a transaction of its own, and one that fails
/// (a lock it waited too long for, a row that breaks the delete) does not
/// keep the pass from the tenants after it: they are all tried, each
/// failure is logged with its tenant, and the first is returned once every
/// tenant has had its turn.
pub async fn prune_ended(
    backend: &dyn Backend,
    retention: Duration,
    limit: u32,
) -> crate::error::Result<u64> {
    let cutoff = chrono::Utc::now() - retention;
    each_tenant(backend, |tenant| {
        backend.prune_executions(tenant, cutoff, limit)
    })
    .await
}

/// Run a scanner pass over every tenant at once; if that fails, run it again
/// for each tenant on its own. One tenant's row that breaks the pass (data
/// it should not hold, a state a bug meets) then holds back only that
/// tenant's share, and every other tenant's due rows still move. The pass
/// over every tenant is the usual case and costs one statement or
/// transaction; the retry costs one a tenant, and only after a failure.
pub async fn sweep_tenants<F, Fut>(
    backend: &dyn Backend,
    limit: u32,
    pass: F,
) -> crate::error::Result<u64>
where
    F: Fn(Sweep) -> Fut,
    Fut: Future<Output = crate::error::Result<u64>>,
{
    sweep(backend, limit, &mut TenantRetries::default(), pass).await
}

/// How often a pass that keeps failing over every tenant is run again a
/// tenant at a time. Each such retry reads every tenant, so a row that
/// always breaks a pass costs the database one round of per-tenant
/// statements a period, not one a pass; meanwhile the other tenants' due
/// rows for that pass wait at most this long.
const TENANT_RETRY_PERIOD: Duration = Duration::from_secs(30);

/// When a scanner task last retried its pass a tenant at a time.
#[derive(Debug, Default)]
struct TenantRetries {
    last: Option<std::time::Instant>,
}

impl TenantRetries {
    /// Whether a retry may run at `now` (and, if so, it counts as the last).
    fn take(&mut self, now: std::time::Instant) -> bool {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < TENANT_RETRY_PERIOD)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// [`sweep_tenants`], retrying a tenant at a time only when `retries`
/// allows it.
async fn sweep<F, Fut>(
    backend: &dyn Backend,
    limit: u32,
    retries: &mut TenantRetries,
    pass: F,
) -> crate::error::Result<u64>
where
    F: Fn(Sweep) -> Fut,
    Fut: Future<Output = crate::error::Result<u64>>,
{
    let failed = match pass(Sweep::every_tenant(limit)).await {
        Ok(changed) => return Ok(changed),
        Err(e) => e,
    };
    if !retries.take(std::time::Instant::now()) {
        return Err(failed);
    }
    tracing::warn!(error = %failed, "a scanner pass over every tenant failed; running it a tenant at a time");
    each_tenant(backend, |tenant| {
        pass(Sweep {
            limit,
            tenant: Some(tenant),
        })
    })
    .await
}

/// `run` for every tenant, in turn, whatever the others' outcome: each
/// failure is logged with its tenant, and the first is returned once every
/// tenant has had its turn; otherwise the sum of what each changed.
async fn each_tenant<F, Fut>(backend: &dyn Backend, run: F) -> crate::error::Result<u64>
where
    F: Fn(TenantId) -> Fut,
    Fut: Future<Output = crate::error::Result<u64>>,
{
    let mut changed = 0;
    let mut first_failure = None;
    for tenant in backend.list_tenants().await? {
        match run(tenant.tenant_id).await {
            Ok(n) => changed += n,
            Err(e) => {
                tracing::warn!(tenant = %tenant.tenant_id, error = %e, "a scanner pass failed for a tenant");
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        None => Ok(changed),
        Some(e) => Err(e),
    }
}

pub struct Scanners {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Scanners {
    pub fn start(backend: Arc<dyn Backend>, config: ScannerConfig) -> Self {
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for (pass, interval) in [
            (Pass::Swept(Swept::LeaseExpiry), config.lease_expiry),
            (Pass::Swept(Swept::Delayed), config.delayed),
            (Pass::Swept(Swept::AttemptTimeout), config.attempt_timeout),
            (Pass::Swept(Swept::Deadline), config.deadline),
            (
                Pass::Swept(Swept::SuspensionTimeout),
                config.suspension_timeout,
            ),
            (Pass::Swept(Swept::SiblingCancel), config.sibling_cancel),
            (Pass::Swept(Swept::WakeParents), config.wake_parents),
            (Pass::Swept(Swept::BudgetReset), config.budget_reset),
            (Pass::EventPrune, config.event_prune),
            (Pass::ExecutionPrune, config.execution_prune),
            (Pass::Schedules, config.schedules),
            (Pass::Swept(Swept::HeldKeys), config.held_keys),
        ] {
            if matches!(pass, Pass::ExecutionPrune) && config.execution_retention.is_none() {
                continue; // Kept forever: nothing to look for.
            }
            let backend = backend.clone();
            let mut stopped = stop.subscribe();
            let config = config.clone();
            tasks.spawn(async move {
                let mut retries = TenantRetries::default();
                loop {
                    let span = tracing::debug_span!("scan", pass = pass.name());
                    let ran = pass
                        .run(backend.as_ref(), &config, &mut retries)
                        .instrument(span)
                        .await;
                    let again = match ran {
                        Ok(n) => {
                            if n > 0 {
                                tracing::debug!(pass = pass.name(), changed = n, "scanner pass");
                                metrics::counter!("flowfabric_scanner_rows_total", "pass" => pass.name())
                                    .increment(n);
                            }
                            n >= u64::from(config.batch)
                        }
                        Err(e) => {
                            tracing::warn!(pass = pass.name(), error = %e, "scanner pass failed");
                            metrics::counter!("flowfabric_scanner_failures_total", "pass" => pass.name())
                                .increment(1);
                            false
                        }
                    };
                    if *stopped.borrow() {
                        return;
                    }
                    if again {
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stopped.changed() => return,
                    }
                }
            });
        }
        Self { stop, tasks }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_pass_is_retried_a_tenant_at_a_time_once_a_period() {
        let start = std::time::Instant::now();
        let mut retries = TenantRetries::default();
        assert!(retries.take(start), "the first failure is retried at once");
        assert!(!retries.take(start), "not again within the period");
        let almost = start + TENANT_RETRY_PERIOD - Duration::from_millis(1);
        assert!(!retries.take(almost));
        assert!(
            retries.take(start + TENANT_RETRY_PERIOD),
            "once the period has passed"
        );
    }
}
