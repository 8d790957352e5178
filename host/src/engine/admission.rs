//! Submitting executions: each new execution checked against the
//! installation's and the tenant's limits before storage sees any of them,
//! so a batch with one bad entry is refused whole, naming the entry
//! (`executions[3].priority`), and nothing is written.

use super::{at_index, caps, check_time_near_now, tighter, Engine};
use crate::error::{EngineError, Result};
use crate::model::{Created, NewExecution, TenantId};

impl Engine {
    pub async fn create(&self, tenant: TenantId, new: NewExecution) -> Result<Created> {
        let mut created = self
            .create_batch(tenant, std::slice::from_ref(&new))
            .await?;
        Ok(created.remove(0))
    }

    pub async fn create_batch(
        &self,
        tenant: TenantId,
        batch: &[NewExecution],
    ) -> Result<Vec<Created>> {
        if batch.is_empty() || batch.len() > self.limits.max_batch {
            return Err(EngineError::invalid(
                "batch",
                format!("must hold 1 to {} executions", self.limits.max_batch),
            ));
        }
        let refs: Vec<&NewExecution> = batch.iter().collect();
        let max_queued = self.admit(tenant, &refs, "executions").await?;
        self.backend
            .create_executions(tenant, batch, max_queued)
            .await
    }

    /// Validate new executions against the installation's and the tenant's
    /// limits (one read for the tenant's limits and the kinds it cannot run
    /// yet); returns the backlog limit the insert must respect. `field` names
    /// the list in errors (`executions[3].priority`).
    pub(super) async fn admit(
        &self,
        tenant: TenantId,
        batch: &[&NewExecution],
        field: &str,
    ) -> Result<Option<u32>> {
        let kinds: Vec<&str> = if self.limits.require_component {
            let distinct: std::collections::BTreeSet<&str> =
                batch.iter().map(|n| n.kind.as_str()).collect();
            distinct.into_iter().collect()
        } else {
            Vec::new()
        };
        let (limits, missing_kinds) = self.backend.admission(tenant, &kinds).await?;
        self.limits_cache.put(tenant, limits);
        let max_input = tighter(self.limits.max_input_bytes, limits.max_input_bytes);
        let mut keys = std::collections::HashSet::new();
        for (i, new) in batch.iter().enumerate() {
            self.check_new(new, max_input)
                .map_err(|e| at_index(e, field, i, batch.len()))?;
            if let Some(key) = &new.idempotency_key {
                if !keys.insert(key.as_str()) {
                    return Err(EngineError::invalid(
                        format!("{field}[{i}].idempotency_key"),
                        "appears twice in one batch",
                    ));
                }
            }
        }
        if let Some(kind) = missing_kinds.first() {
            return Err(EngineError::invalid(
                "kind",
                format!("`{kind}` has no component: upload one first"),
            ));
        }
        let input_bytes = batch.iter().map(|n| n.input.len()).sum();
        self.check_storage(tenant, caps::stored_size(input_bytes, batch.len()))
            .await?;
        Ok(match (limits.max_queued, self.limits.max_queued) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    fn check_new(&self, new: &NewExecution, max_input: usize) -> Result<()> {
        self.check_name("kind", &new.kind)?;
        self.check_name("lane", &new.lane)?;
        if new.input.len() > max_input {
            return Err(EngineError::PayloadTooLarge {
                field: "input",
                size: new.input.len(),
                limit: max_input,
            });
        }
        let (lo, hi) = self.limits.priority_range;
        if !(lo..=hi).contains(&new.priority) {
            return Err(EngineError::invalid(
                "priority",
                format!("must be between {lo} and {hi}"),
            ));
        }
        if new.tags.len() > self.limits.max_tags {
            return Err(EngineError::invalid(
                "tags",
                format!("at most {} tags", self.limits.max_tags),
            ));
        }
        for (k, v) in &new.tags {
            self.check_name("tag key", k)?;
            if v.len() > 1024 {
                return Err(EngineError::invalid(
                    format!("tags.{k}"),
                    "longer than 1024 bytes",
                ));
            }
        }
        for cap in &new.required_capabilities {
            self.check_name("required capability", cap)?;
        }
        if let Some(key) = &new.idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(EngineError::invalid(
                    "idempotency_key",
                    "must be 1 to 256 bytes",
                ));
            }
        }
        if let Some(key) = &new.concurrency_key {
            crate::model::check_concurrency_key(key)?;
        }
        if let Some(at) = new.delay_until {
            check_time_near_now("delay_until", at)?;
        }
        new.policy.validate()
    }
}
