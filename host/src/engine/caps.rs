//! What one execution, attempt or flow may grow to, and what a tenant may
//! keep stored: the installation's limits, tightened by its tenant's.
//!
//! A guest's calls (frames, children, waitpoints) and its result are checked
//! against these. Each check needs the tenant's limits, and reading the tenant
//! row on every frame would double the cost of an append, so each process
//! keeps what it read for [`TTL`]: a changed tenant limit takes effect within
//! that long.
//!
//! The storage quota is checked the same way, against the tenant's stored
//! bytes as measured at most [`TTL`] ago (measuring reads every row of the
//! tenant, so only tenants with a quota are ever measured). A tenant can
//! therefore pass its quota only by what other processes write for it within
//! one [`TTL`] (this process counts its own writes until it measures again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{tighter, Engine};
use crate::error::{EngineError, Result};
use crate::model::{TenantId, TenantLimits, TenantUsage, STORED_RECORD_BYTES};

/// How long a tenant's limits, once read, are used without reading again.
const TTL: Duration = Duration::from_secs(5);

/// Tenants whose limits one process keeps at most; past it the cache starts
/// over (it only saves reads).
const MAX_TENANTS: usize = 10_000;

/// The caps that apply to one tenant's executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowthCaps {
    pub result_bytes: usize,
    pub frame_bytes_per_attempt: u64,
    pub children_per_execution: u32,
    pub flow_members: u32,
    pub waitpoints_per_execution: u32,
}

/// What was read of each tenant less than [`TTL`] ago.
pub(super) struct Recent<V> {
    entries: Mutex<HashMap<TenantId, (Instant, V)>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V: Copy> Recent<V> {
    fn get(&self, tenant: TenantId) -> Option<V> {
        let entries = self.entries.lock().expect("tenant cache lock");
        entries
            .get(&tenant)
            .filter(|(read, _)| read.elapsed() < TTL)
            .map(|(_, value)| *value)
    }

    pub(super) fn put(&self, tenant: TenantId, value: V) {
        let mut entries = self.entries.lock().expect("tenant cache lock");
        if entries.len() >= MAX_TENANTS {
            entries.clear();
        }
        entries.insert(tenant, (Instant::now(), value));
    }

    /// Change the tenant's value in place, if there is one (fresh or not).
    fn update(&self, tenant: TenantId, change: impl FnOnce(&mut V)) {
        let mut entries = self.entries.lock().expect("tenant cache lock");
        if let Some((_, value)) = entries.get_mut(&tenant) {
            change(value);
        }
    }
}

/// Each tenant's limits, as read recently.
pub(super) type LimitsCache = Recent<TenantLimits>;

/// Stored bytes per tenant, as measured recently, and a turn per tenant to
/// measure them.
#[derive(Default)]
pub(super) struct UsageCache {
    bytes: Recent<u64>,
    turns: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
}

impl UsageCache {
    /// The tenant's turn to measure.
    fn turn(&self, tenant: TenantId) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().expect("usage turns lock");
        if turns.len() >= MAX_TENANTS {
            turns.clear();
        }
        turns.entry(tenant).or_default().clone()
    }
}

impl Engine {
    /// The tenant's limits, read at most once per `TTL`.
    pub async fn tenant_limits(&self, tenant: TenantId) -> Result<TenantLimits> {
        if let Some(limits) = self.limits_cache.get(tenant) {
            return Ok(limits);
        }
        let limits = self.backend.get_tenant(tenant).await?.limits;
        self.limits_cache.put(tenant, limits);
        Ok(limits)
    }

    /// The caps on what the tenant's executions may grow to.
    pub async fn caps(&self, tenant: TenantId) -> Result<GrowthCaps> {
        let t = self.tenant_limits(tenant).await?;
        Ok(self.caps_under(&t))
    }

    pub(super) fn caps_under(&self, t: &TenantLimits) -> GrowthCaps {
        let l = &self.limits;
        let narrow = |installation: u32, tenant: Option<u32>| {
            tenant.map_or(installation, |t| t.min(installation))
        };
        GrowthCaps {
            result_bytes: tighter(l.max_result_bytes, t.max_result_bytes),
            frame_bytes_per_attempt: t
                .max_frame_bytes_per_attempt
                .map_or(l.max_frame_bytes_per_attempt, |v| {
                    v.min(l.max_frame_bytes_per_attempt)
                }),
            children_per_execution: narrow(
                l.max_children_per_execution,
                t.max_children_per_execution,
            ),
            flow_members: narrow(l.max_flow_members, t.max_flow_members),
            waitpoints_per_execution: narrow(
                l.max_waitpoints_per_execution,
                t.max_waitpoints_per_execution,
            ),
        }
    }

    /// The tenant's storage quota (its own, or the installation's if lower).
    fn storage_quota(&self, t: &TenantLimits) -> Option<u64> {
        match (t.max_stored_bytes, self.limits.max_stored_bytes_per_tenant) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The tenant's stored bytes, measured at most [`TTL`] ago.
    ///
    /// One measurement of a tenant at a time: requests that find its figure
    /// stale together wait for the one measuring, instead of each reading
    /// every row of the tenant at once.
    async fn stored_bytes(&self, tenant: TenantId) -> Result<u64> {
        if let Some(bytes) = self.usage_cache.bytes.get(tenant) {
            return Ok(bytes);
        }
        let turn = self.usage_cache.turn(tenant);
        let _measuring = turn.lock().await;
        if let Some(bytes) = self.usage_cache.bytes.get(tenant) {
            return Ok(bytes);
        }
        let bytes = self.backend.stored_bytes(tenant).await?;
        metrics::counter!("flowfabric_storage_measurements_total").increment(1);
        metrics::gauge!("flowfabric_tenant_stored_bytes", "tenant" => tenant.to_string())
            .set(bytes as f64);
        self.usage_cache.bytes.put(tenant, bytes);
        Ok(bytes)
    }

    /// What the tenant keeps stored, against its quota.
    pub async fn usage(&self, tenant: TenantId) -> Result<TenantUsage> {
        let limits = self.tenant_limits(tenant).await?;
        Ok(TenantUsage {
            stored_bytes: self.stored_bytes(tenant).await?,
            max_stored_bytes: self.storage_quota(&limits),
        })
    }

    /// Refuse to store `adding` more bytes (see [`stored_size`]) for a
    /// tenant at its quota (`quota_exceeded`). Free for a tenant with none.
    pub async fn check_storage(&self, tenant: TenantId, adding: usize) -> Result<()> {
        let limits = self.tenant_limits(tenant).await?;
        let Some(quota) = self.storage_quota(&limits) else {
            return Ok(());
        };
        let stored = self.stored_bytes(tenant).await?;
        if stored.saturating_add(adding as u64) > quota {
            return Err(EngineError::QuotaExceeded {
                what: "stored bytes",
                limit: quota,
            });
        }
        // Counted until the next measurement, so that this process's own
        // writes within one TTL cannot pass the quota either.
        self.usage_cache
            .bytes
            .update(tenant, |bytes| *bytes = bytes.saturating_add(adding as u64));
        Ok(())
    }

    /// Refuse a result over the tenant's (or the installation's) limit.
    pub async fn check_tenant_result(&self, tenant: TenantId, result: &[u8]) -> Result<()> {
        self.check_result(result)?;
        self.check_storage(tenant, result.len()).await?;
        let limit = self.caps(tenant).await?.result_bytes;
        if result.len() > limit {
            return Err(EngineError::PayloadTooLarge {
                field: "result",
                size: result.len(),
                limit,
            });
        }
        Ok(())
    }
}

/// `payload` bytes in `records` new records, as the storage quota counts
/// them: each record counts [`STORED_RECORD_BYTES`] besides its payload.
pub(crate) fn stored_size(payload: usize, records: usize) -> usize {
    let per_record = usize::try_from(STORED_RECORD_BYTES).unwrap_or(usize::MAX);
    payload.saturating_add(records.saturating_mul(per_record))
}
