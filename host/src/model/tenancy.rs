//! Tenants, their API keys and their limits.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::TenantId;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub limits: TenantLimits,
}

/// Per-tenant ceilings. `None` means the installation's default applies; a
/// tenant's limit can only tighten the installation's, never loosen it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Executions of this tenant running at once, across all workers.
    pub max_running: Option<u32>,
    /// Executions waiting to run (waiting, delayed, suspended…); creating more is
    /// refused with `quota_exceeded`.
    pub max_queued: Option<u32>,
    pub max_input_bytes: Option<u32>,
    pub max_component_bytes: Option<u32>,
    /// Longest one run of a guest may take.
    pub max_task_timeout_ms: Option<u64>,
    /// Linear memory cap of one guest.
    pub max_memory_mib: Option<u32>,
    /// Start-rate quota: at most this many attempts may start within any
    /// `start_window_ms` (default one second); claims past it wait.
    pub max_starts_per_window: Option<u32>,
    pub start_window_ms: Option<u64>,
}

/// The start-rate window when a tenant sets `max_starts_per_window` alone.
pub const DEFAULT_START_WINDOW_MS: u64 = 1_000;

/// The sandbox ceilings a claimed execution carries from its tenant's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCeilings {
    pub timeout: Option<Duration>,
    pub memory_bytes: Option<usize>,
}

impl From<&TenantLimits> for TaskCeilings {
    fn from(limits: &TenantLimits) -> Self {
        Self {
            timeout: limits.max_task_timeout_ms.map(Duration::from_millis),
            memory_bytes: limits.max_memory_mib.map(|mib| (mib as usize) << 20),
        }
    }
}

/// An API key as listed; its secret is never stored or shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub key_id: Uuid,
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What storage holds to check a presented key.
#[derive(Debug, Clone)]
pub struct StoredApiKey {
    pub key: ApiKey,
    pub secret_sha256: Vec<u8>,
}
