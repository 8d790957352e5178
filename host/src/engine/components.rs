//! Components: the engine's checks before a version is stored. Reads
//! (versions, bytes, the newest version) go straight to the backend.

use super::{tighter, Engine};
use crate::backend::NewComponent;
use crate::error::{EngineError, Result};
use crate::model::{ComponentVersion, TenantId};

impl Engine {
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

    /// Refuse a bad kind name, or a component over the installation's or the
    /// tenant's size limit, before anything compiles it.
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
        Ok(())
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
