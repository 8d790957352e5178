//! Registering components: the runtime checks the bytes, the engine stores them.
//!
//! Kept apart from both so that neither the runtime learns about storage nor the
//! engine about wasm: this is the one place that needs both.

use std::sync::Arc;

use crate::engine::{Engine, UploadTurn};
use crate::error::{EngineError, Result};
use crate::model::{ComponentImport, ComponentVersion, EffectiveGrant, TenantId};
use crate::runtime::{ComponentError, Runtime};

/// Validate `wasm` as a `flowfabric:task` component (compiling and caching it)
/// and store it as the next version of `kind`. Returns the version and whether
/// it is new (re-uploading the newest version's bytes is a no-op).
pub async fn register(
    engine: &Engine,
    runtime: &Runtime,
    tenant: TenantId,
    kind: &str,
    wasm: &[u8],
) -> Result<(ComponentVersion, bool)> {
    engine.check_upload(tenant, kind, wasm.len()).await?;
    let digest = runtime.register(wasm).await.map_err(|e| match e {
        ComponentError::Internal(m) => EngineError::Runtime(m),
        ComponentError::TooLarge { size, limit } => EngineError::PayloadTooLarge {
            field: "component",
            size,
            limit,
        },
        invalid => EngineError::InvalidComponent(invalid.to_string()),
    })?;
    let imports = runtime.imports(&digest).unwrap_or_default();
    engine
        .put_component(tenant, kind, &digest, wasm, &imports)
        .await
}

/// [`register`] for a caller that may go away half-way (an HTTP request):
/// it runs to its end on a task of its own and holds the tenant's upload
/// turn until then, so dropped requests cannot leave compiles behind them
/// that no turn accounts for.
pub async fn register_to_end(
    engine: &Engine,
    runtime: &Arc<Runtime>,
    turn: UploadTurn,
    kind: &str,
    wasm: bytes::Bytes,
) -> Result<(ComponentVersion, bool)> {
    let (engine, runtime, kind) = (engine.clone(), runtime.clone(), kind.to_owned());
    tokio::spawn(async move {
        let tenant = turn.tenant();
        let registered = register(&engine, &runtime, tenant, &kind, &wasm).await;
        drop(turn);
        registered
    })
    .await
    .map_err(|e| EngineError::Runtime(format!("registering the component: {e}")))?
}

/// What the component stored under `digest` imports, each with whether the
/// current grant of `kind` covers it: what `component upload` shows, so an
/// import that will be refused at run time is visible before the first run.
pub async fn imports(
    engine: &Engine,
    runtime: &Runtime,
    tenant: TenantId,
    kind: &str,
    digest: &str,
) -> Result<Vec<ComponentImport>> {
    let Some(names) = runtime.imports(digest) else {
        return Ok(Vec::new());
    };
    let grant = effective_grant(engine, tenant, kind).await?;
    Ok(imports_of(&names, &grant))
}

/// What `kind`'s grant, cut to its tenant's ceiling, lets through.
pub async fn effective_grant(
    engine: &Engine,
    tenant: TenantId,
    kind: &str,
) -> Result<EffectiveGrant> {
    let (ceiling, grant) = engine.backend().capabilities(tenant, kind).await?;
    Ok(EffectiveGrant::resolve(tenant, &ceiling, &grant))
}

/// Each imported interface, and whether `grant` covers it.
pub fn imports_of(names: &[String], grant: &EffectiveGrant) -> Vec<ComponentImport> {
    names
        .iter()
        .map(|n| ComponentImport::of(n, grant))
        .collect()
}
