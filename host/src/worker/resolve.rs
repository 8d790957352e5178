//! What a kind runs as, looked up at most once a second per (tenant, kind),
//! not once per execution — each lookup would otherwise be a database round
//! trip on every run: the newest non-deprecated component version, and the
//! capabilities its grant gives (with the config values it may read). A new
//! upload, grant or config value therefore reaches this pool within a
//! second.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::Result;
use crate::model::{AttemptCapabilities, ComponentVersion, TenantId};

const FRESH_FOR: Duration = Duration::from_secs(1);

/// Answers per (tenant, kind) and when each was looked up.
struct Fresh<V>(Mutex<HashMap<(TenantId, String), (V, Instant)>>);

impl<V> Default for Fresh<V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<V: Clone> Fresh<V> {
    async fn get<F, Fut>(&self, tenant: TenantId, kind: &str, look_up: F) -> Result<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let key = (tenant, kind.to_owned());
        if let Some((value, at)) = self.0.lock().expect("resolver lock").get(&key) {
            if at.elapsed() < FRESH_FOR {
                return Ok(value.clone());
            }
        }
        let value = look_up().await?;
        self.0
            .lock()
            .expect("resolver lock")
            .insert(key, (value.clone(), Instant::now()));
        Ok(value)
    }
}

#[derive(Default)]
pub(super) struct Resolver {
    /// Shared, not copied: every run of the kind reads the same answer (its
    /// digest), and a version carries strings and its import list.
    versions: Fresh<Option<Arc<ComponentVersion>>>,
    capabilities: Fresh<Arc<AttemptCapabilities>>,
}

impl Resolver {
    pub(super) async fn latest(
        &self,
        engine: &Engine,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<Arc<ComponentVersion>>> {
        self.versions
            .get(tenant, kind, async || {
                Ok(engine
                    .backend()
                    .latest_component(tenant, kind)
                    .await?
                    .map(Arc::new))
            })
            .await
    }

    pub(super) async fn capabilities(
        &self,
        engine: &Engine,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Arc<AttemptCapabilities>> {
        self.capabilities
            .get(tenant, kind, async || {
                Ok(Arc::new(engine.attempt_capabilities(tenant, kind).await?))
            })
            .await
    }
}
