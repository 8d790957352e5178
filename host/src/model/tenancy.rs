//! Tenants, their API keys and their limits.

use super::ids::ApiKeyId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TenantId;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Largest result one execution may return; a larger one fails the
    /// attempt at once (`limit_exceeded`, never retried).
    pub max_result_bytes: Option<u32>,
    /// Payload bytes of the frames one attempt may append (captured output
    /// and logs included).
    pub max_frame_bytes_per_attempt: Option<u64>,
    /// Children one execution may spawn.
    pub max_children_per_execution: Option<u32>,
    /// Members one flow may hold (spawned children included).
    pub max_flow_members: Option<u32>,
    /// Waitpoints one execution may create.
    pub max_waitpoints_per_execution: Option<u32>,
    /// Bytes the tenant may keep stored: inputs, results, frames, signals,
    /// steps and component bytes, and [`STORED_RECORD_BYTES`] for each
    /// execution, flow, frame, signal and step. Writes that would pass it
    /// are refused (`quota_exceeded`).
    pub max_stored_bytes: Option<u64>,
}

/// What each stored record (an execution, a flow, a frame, a signal, a
/// step) counts toward a tenant's stored bytes besides its payload: its
/// keys, times and index entries take room whatever it holds, so records
/// with nothing in them are not free to keep.
pub const STORED_RECORD_BYTES: u64 = 100;

/// What a tenant uses of what it may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantUsage {
    /// Bytes the tenant keeps (see `max_stored_bytes` in its limits), as
    /// last measured (at most a few seconds ago).
    pub stored_bytes: u64,
    /// The quota that applies (the tenant's, or the installation's), if any.
    pub max_stored_bytes: Option<u64>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub key_id: ApiKeyId,
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
