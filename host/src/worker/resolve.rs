//! Which component version runs a kind: the newest non-deprecated one, looked up
//! at most once a second per (tenant, kind), not once per execution — that
//! lookup would otherwise be a Postgres round trip on every run. A new upload
//! therefore reaches this pool within a second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::Result;
use crate::model::{ComponentVersion, TenantId};

const FRESH_FOR: Duration = Duration::from_secs(1);

/// The answer for one (tenant, kind) and when it was looked up.
type Known = HashMap<(TenantId, String), (Option<ComponentVersion>, Instant)>;

#[derive(Default)]
pub(super) struct Resolver {
    known: Mutex<Known>,
}

impl Resolver {
    pub(super) async fn latest(
        &self,
        engine: &Engine,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<ComponentVersion>> {
        let key = (tenant, kind.to_owned());
        if let Some((version, at)) = self.known.lock().expect("resolver lock").get(&key) {
            if at.elapsed() < FRESH_FOR {
                return Ok(version.clone());
            }
        }
        let version = engine.backend().latest_component(tenant, kind).await?;
        self.known
            .lock()
            .expect("resolver lock")
            .insert(key, (version.clone(), Instant::now()));
        Ok(version)
    }
}
