//! Capability ceilings, component grants and tenant config values at the
//! engine level: every document is validated (and every value sealed)
//! before storage sees it, and what one attempt may use is read here, in
//! one place, for the worker.

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{
    check_config_name, AttemptCapabilities, CapabilityCeiling, ComponentGrant, ConfigEntry,
    EffectiveGrant, GrantError, StoredGrant, TenantId, MAX_CONFIG_VALUES_PER_TENANT,
    MAX_CONFIG_VALUE_BYTES,
};

impl From<GrantError> for EngineError {
    fn from(e: GrantError) -> Self {
        EngineError::invalid(e.field, e.reason)
    }
}

/// Rows re-sealed per round trip by [`Engine::reseal_config`].
const RESEAL_BATCH: u32 = 100;

impl Engine {
    /// Replace a tenant's capability ceiling (an operator action). Grants
    /// already set are not rewritten: each use is checked against the
    /// ceiling as it is then, so a lowered ceiling applies at once.
    pub async fn set_ceiling(&self, tenant: TenantId, ceiling: &CapabilityCeiling) -> Result<()> {
        ceiling.validate()?;
        self.backend.set_ceiling(tenant, ceiling).await
    }

    /// Create or replace the grant of `kind`; it must fit under the
    /// tenant's ceiling.
    pub async fn put_grant(
        &self,
        tenant: TenantId,
        kind: &str,
        grant: &ComponentGrant,
    ) -> Result<StoredGrant> {
        self.check_name("kind", kind)?;
        let ceiling = self.backend.ceiling(tenant).await?;
        grant.validate(&ceiling)?;
        self.backend.put_grant(tenant, kind, grant).await
    }

    /// Set a config value or secret, sealed under the operator's key.
    pub async fn put_config(
        &self,
        tenant: TenantId,
        name: &str,
        value: &str,
        secret: bool,
    ) -> Result<ConfigEntry> {
        check_config_name(name).map_err(|reason| EngineError::invalid("name", reason))?;
        if value.len() > MAX_CONFIG_VALUE_BYTES {
            return Err(EngineError::PayloadTooLarge {
                field: "value",
                size: value.len(),
                limit: MAX_CONFIG_VALUE_BYTES,
            });
        }
        let sealed = self.sealing_keys.seal(tenant, name, secret, value);
        self.backend
            .put_config(tenant, &sealed, MAX_CONFIG_VALUES_PER_TENANT)
            .await?;
        Ok(ConfigEntry {
            name: name.to_owned(),
            secret,
            value: (!secret).then(|| value.to_owned()),
            updated_at: sealed.updated_at,
        })
    }

    /// The tenant's values by name: plain values with their value, secrets
    /// without.
    pub async fn list_config(&self, tenant: TenantId) -> Result<Vec<ConfigEntry>> {
        let sealed = self.backend.list_config(tenant).await?;
        Ok(sealed
            .into_iter()
            .map(|s| {
                let value = if s.secret {
                    None
                } else {
                    self.sealing_keys
                        .open(tenant, &s)
                        .inspect_err(|e| tracing::warn!(error = %e, "config value unreadable"))
                        .ok()
                };
                ConfigEntry {
                    name: s.name,
                    secret: s.secret,
                    value,
                    updated_at: s.updated_at,
                }
            })
            .collect())
    }

    pub async fn delete_config(&self, tenant: TenantId, name: &str) -> Result<()> {
        check_config_name(name).map_err(|reason| EngineError::invalid("name", reason))?;
        if self.backend.delete_config(tenant, name).await? {
            Ok(())
        } else {
            Err(EngineError::not_found("config value", name))
        }
    }

    /// What an attempt of `kind` may use: its grant cut to the ceiling, and
    /// the values of the config names it grants (names not set are absent,
    /// as they are to the guest).
    pub async fn attempt_capabilities(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<AttemptCapabilities> {
        let (ceiling, grant) = self.backend.capabilities(tenant, kind).await?;
        let grant = EffectiveGrant::resolve(tenant, &ceiling, &grant);
        // Most grants name no config: no read for them.
        let sealed = if grant.config.is_empty() {
            Vec::new()
        } else {
            self.backend.config_values(tenant, &grant.config).await?
        };
        let config = sealed
            .iter()
            .map(|s| Ok((s.name.clone(), self.sealing_keys.open(tenant, s)?)))
            .collect::<Result<_>>()?;
        Ok(AttemptCapabilities { grant, config })
    }

    /// Re-seal every value sealed under an older key with the current one.
    /// Returns how many were re-sealed; values this process cannot open
    /// are reported and left as they are.
    pub async fn reseal_config(&self) -> Result<u64> {
        let current = self.sealing_keys.current_id().to_owned();
        let mut resealed = 0;
        let mut skipped = std::collections::HashSet::new();
        loop {
            let batch = self
                .backend
                .config_sealed_by_other_keys(&current, RESEAL_BATCH + skipped.len() as u32)
                .await?;
            let todo: Vec<_> = batch
                .into_iter()
                .filter(|(t, s)| !skipped.contains(&(*t, s.name.clone())))
                .collect();
            if todo.is_empty() {
                return Ok(resealed);
            }
            for (tenant, old) in todo {
                match self.sealing_keys.open(tenant, &old) {
                    Ok(value) => {
                        let new = self
                            .sealing_keys
                            .seal(tenant, &old.name, old.secret, &value);
                        if self
                            .backend
                            .reseal_config(tenant, &old.key_id, &new)
                            .await?
                        {
                            resealed += 1;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%tenant, error = %e, "config value left as it is");
                        skipped.insert((tenant, old.name));
                    }
                }
            }
        }
    }
}
