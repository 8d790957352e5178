//! Where each tenant's pass over its held keys goes on from.
//!
//! The pass that releases work a concurrency key held back looks at so many
//! held groups (key, kind, lane) a tenant, in key order, so that one tenant
//! with many cannot make the pass slow for the others. Started from the
//! first group every time, it would look at the same groups every time: a
//! tenant whose first groups have no room (their keys run as much as the
//! limit allows) would keep a later key held after that key's window rolled
//! over, for as long as the first ones stay full. So each process remembers,
//! per tenant, the last group a pass took, and the next pass starts after
//! it; a pass that takes fewer than its limit has reached the end, and the
//! next one starts over. Every held group is looked at within
//! `groups / limit + 1` passes.
//!
//! The cursors are only a place to start, kept in memory: a restart, or
//! another process's pass, at worst looks at some groups twice.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::TenantId;

use super::Sweep;

/// A held group, in the order the pass walks them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct HeldGroup {
    pub concurrency_key: String,
    pub kind: String,
    pub lane: String,
}

/// The last group a tenant's pass took, and how many it took.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct PassEnd {
    pub tenant_id: TenantId,
    #[sqlx(flatten)]
    pub last: HeldGroup,
    pub taken: i64,
}

/// Per tenant, the group after which its next pass starts.
#[derive(Debug, Default)]
pub(crate) struct HeldCursors(Mutex<HashMap<TenantId, HeldGroup>>);

impl HeldCursors {
    /// Where `sweep`'s tenants start: those with a cursor, and the group
    /// after which each starts.
    pub(crate) fn starts(&self, sweep: Sweep) -> Vec<(TenantId, HeldGroup)> {
        let cursors = self.0.lock().expect("held cursors");
        cursors
            .iter()
            .filter(|(tenant, _)| sweep.tenant.is_none_or(|only| only == **tenant))
            .map(|(tenant, group)| (*tenant, group.clone()))
            .collect()
    }

    /// After a pass over `sweep`: a tenant that took its whole limit goes on
    /// after its last group; every other tenant the sweep covered starts
    /// over.
    pub(crate) fn advance(&self, sweep: Sweep, ends: Vec<PassEnd>) {
        let mut cursors = self.0.lock().expect("held cursors");
        cursors.retain(|tenant, _| sweep.tenant.is_some_and(|only| only != *tenant));
        for end in ends {
            if end.taken >= i64::from(sweep.limit) {
                cursors.insert(end.tenant_id, end.last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(key: &str) -> HeldGroup {
        HeldGroup {
            concurrency_key: key.into(),
            kind: "k".into(),
            lane: "default".into(),
        }
    }

    fn end(tenant: TenantId, key: &str, taken: i64) -> PassEnd {
        PassEnd {
            tenant_id: tenant,
            last: group(key),
            taken,
        }
    }

    const EVERY: Sweep = Sweep {
        limit: 3,
        tenant: None,
    };

    /// Cursors after a pass over every tenant that ended as `ends` say.
    fn after(ends: Vec<PassEnd>) -> HeldCursors {
        let cursors = HeldCursors::default();
        cursors.advance(EVERY, ends);
        cursors
    }

    #[test]
    fn a_full_pass_goes_on_and_a_short_one_starts_over() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let cursors = after(vec![end(a, "k2", 3), end(b, "x0", 1)]);
        assert_eq!(cursors.starts(EVERY), vec![(a, group("k2"))]);
        // A's pass reached its end; B had nothing held.
        cursors.advance(EVERY, vec![end(a, "w", 2)]);
        assert!(cursors.starts(EVERY).is_empty());
    }

    #[test]
    fn a_pass_for_one_tenant_moves_only_its_cursor() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let cursors = after(vec![end(a, "k2", 3), end(b, "x2", 3)]);
        let only_a = Sweep {
            limit: 3,
            tenant: Some(a),
        };
        assert_eq!(cursors.starts(only_a), vec![(a, group("k2"))]);
        cursors.advance(only_a, vec![]);
        assert_eq!(cursors.starts(EVERY), vec![(b, group("x2"))]);
    }
}
