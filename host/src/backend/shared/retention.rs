//! Retention: which ended executions and flows are old enough to delete.
//!
//! An execution is kept until it has been ended for the retention period,
//! then deleted with everything recorded of it (attempts, frames, steps,
//! waitpoints, signals, its idempotency key, budgets scoped to it). What another record still
//! needs is kept: a flow's members go only with the whole flow, once every
//! member has ended and the last one ended before the cutoff; a child goes
//! only once its parent has ended too (or is gone).
//!
//! The search runs per tenant off `executions_state_idx` (tenant, public
//! state, id) and the `flows` primary key, bounded by id: ids are
//! time-ordered (v7), so an execution or flow created at or after the
//! cutoff has an id at or past [`ids_from`], and none of those can have
//! been ended for the whole period. No index is added for it, so a claim
//! or a completion writes nothing more than before. The price: each pass
//! reads again what is old but must stay (members of a flow still running,
//! executions made long ago that ended lately) before it reaches what can
//! go; a flow's members are few next to a tenant's history.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::stamp::Stamp;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{ExecutionId, FlowId, TenantId};

/// The smallest v7 id made at `cutoff` or later: its 48-bit millisecond
/// timestamp, then zeros.
pub(crate) fn ids_from(cutoff: DateTime<Utc>) -> Uuid {
    let millis = u64::try_from(cutoff.timestamp_millis()).unwrap_or(0);
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// What retention may delete of a tenant now.
#[derive(Debug, Default)]
pub(crate) struct Prunable {
    /// Executions outside any flow, ended before the cutoff, whose parent
    /// (if any) has ended or is gone.
    pub executions: Vec<ExecutionId>,
    /// Flows created before the cutoff whose members have all ended, the
    /// last before the cutoff.
    pub flows: Vec<FlowId>,
}

for_both_drivers! {
    /// Up to `limit` each of the tenant's executions and flows that
    /// retention may delete (see [`Prunable`]), in one statement: the
    /// executions off `executions_state_idx`, the flows off their primary
    /// key, their members off `executions_flow_key_idx`.
    async fn prunable(conn, tenant: TenantId, cutoff: DateTime<Utc>, limit: u32) -> Result<Prunable> {
        let rows: Vec<(bool, Uuid)> = sqlx::query_as(
            "SELECT * FROM (SELECT false AS flow, x.execution_id AS id FROM executions x \
                 WHERE x.tenant_id = $1 \
                   AND x.public_state IN ('completed', 'failed', 'cancelled', 'expired', 'skipped') \
                   AND x.execution_id < $2 \
                   AND coalesce(x.finished_at, x.updated_at) < $3 \
                   AND x.flow_id IS NULL \
                   AND NOT EXISTS (SELECT 1 FROM executions p \
                       WHERE p.tenant_id = x.tenant_id AND p.execution_id = x.parent_id \
                         AND p.lifecycle_phase <> 'terminal') \
                 LIMIT $4) e \
             UNION ALL \
             SELECT * FROM (SELECT true AS flow, f.flow_id AS id FROM flows f \
                 WHERE f.tenant_id = $1 AND f.flow_id < $2 \
                   AND NOT EXISTS (SELECT 1 FROM executions m \
                       WHERE m.tenant_id = f.tenant_id AND m.flow_id = f.flow_id \
                         AND (m.lifecycle_phase <> 'terminal' \
                              OR coalesce(m.finished_at, m.updated_at) >= $3)) \
                 LIMIT $4) f",
        )
        .bind(tenant)
        .bind(ids_from(cutoff))
        .bind(Stamp(cutoff))
        .bind(i64::from(limit))
        .all(&mut *conn, "find what to prune")
        .await?;
        let mut found = Prunable::default();
        for (flow, id) in rows {
            match flow {
                true => found.flows.push(FlowId::from(id)),
                false => found.executions.push(ExecutionId::from(id)),
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_before_the_cutoff_sort_below_the_bound() {
        let cutoff = DateTime::from_timestamp_millis(1_764_000_000_123).unwrap();
        let bound = ids_from(cutoff);
        let at = |ms: i64| {
            let t = DateTime::from_timestamp_millis(ms).unwrap();
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                t.timestamp() as u64,
                t.timestamp_subsec_nanos(),
            );
            Uuid::new_v7(ts)
        };
        assert!(at(1_764_000_000_122) < bound);
        assert!(at(1_764_000_000_123) >= bound);
        assert!(at(1_764_000_000_124) > bound);
    }
}
