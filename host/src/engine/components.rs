//! Components: the engine's checks before a version is stored, and one
//! upload under way per tenant. Reads (versions, bytes, the newest version)
//! go straight to the backend.
//!
//! Why one upload per tenant: an upload holds its body (up to the component
//! size limit) in memory and then compiles, which uses every core for up to
//! seconds. The runtime queues compiles first come, first served; with one
//! upload a tenant, a burst from one tenant waits behind nobody's but its
//! own, and holds one body in memory, not hundreds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{tighter, Engine};
use crate::backend::NewComponent;
use crate::error::{EngineError, Result};
use crate::model::{ComponentVersion, TenantId};

/// Tenants with an upload under way in this process.
#[derive(Debug, Default)]
pub(super) struct Uploads(Mutex<HashSet<TenantId>>);

/// A tenant's one upload under way (see [`Engine::begin_upload`]); the next
/// may begin once this is dropped.
#[derive(Debug)]
#[must_use = "the upload ends when this is dropped"]
pub struct UploadTurn {
    uploads: Arc<Uploads>,
    tenant: TenantId,
}

impl UploadTurn {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
}

impl Drop for UploadTurn {
    fn drop(&mut self) {
        self.uploads
            .0
            .lock()
            .expect("uploads lock")
            .remove(&self.tenant);
    }
}

impl Engine {
    /// Begin the tenant's one upload in this process, before its body is
    /// read; `quota_exceeded` (retryable) while another is under way.
    pub fn begin_upload(&self, tenant: TenantId) -> Result<UploadTurn> {
        if !self.uploads.0.lock().expect("uploads lock").insert(tenant) {
            return Err(EngineError::QuotaExceeded {
                what: "uploads under way",
                limit: 1,
            });
        }
        Ok(UploadTurn {
            uploads: self.uploads.clone(),
            tenant,
        })
    }

    /// Store validated component bytes as the next version of `kind`. Callers
    /// validate with the runtime first (see [`crate::components`]).
    pub async fn put_component(
        &self,
        tenant: TenantId,
        kind: &str,
        digest: &str,
        wasm: &[u8],
        imports: &[String],
    ) -> Result<(ComponentVersion, bool)> {
        self.check_name("kind", kind)?;
        let component = NewComponent {
            kind,
            digest,
            wasm,
            imports,
        };
        self.backend.put_component(tenant, component).await
    }

    /// Refuse a bad kind name, a component over the installation's or the
    /// tenant's size limit, or one its storage quota has no room for, before
    /// anything compiles it. (An upload is counted whole against the quota,
    /// even when its bytes are already stored.)
    pub async fn check_upload(&self, tenant: TenantId, kind: &str, size: usize) -> Result<()> {
        self.check_name("kind", kind)?;
        let tenant_limit = self
            .backend
            .get_tenant(tenant)
            .await?
            .limits
            .max_component_bytes;
        let limit = tighter(self.limits.max_component_bytes, tenant_limit);
        if size > limit {
            return Err(EngineError::PayloadTooLarge {
                field: "component",
                size,
                limit,
            });
        }
        self.check_storage(tenant, size).await
    }

    /// Remove a deprecated version (not its kind's newest) and, unless
    /// another version has them, its bytes: what a tenant does to make room
    /// under its storage quota.
    pub async fn purge_component(&self, tenant: TenantId, kind: &str, version: i32) -> Result<()> {
        self.backend.purge_component(tenant, kind, version).await
    }

    pub async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        self.backend
            .deprecate_component(tenant, kind, version)
            .await
    }
}
