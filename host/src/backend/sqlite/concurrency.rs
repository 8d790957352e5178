//! Concurrency limits per key on the embedded backend.
//!
//! One writer at a time, so the claim counts a key's running executions
//! directly (off `executions_concurrency_running_idx`, once a key a claim,
//! its own leases counted in memory: [`ClaimKeys`]) and keeps only each
//! key's start window in a slot row. Otherwise the rules are Postgres's:
//! the limit is the kind's, else the lane's; a full key's candidates and the
//! rest of its queue are blocked; a slot holder that stops running hands its
//! slot to the key's next blocked execution ([`hand_on`], called by
//! `Exec::save` whenever a lease is dropped, as the Postgres trigger does).

use std::collections::HashMap;
use std::sync::LazyLock;

use sqlx::SqliteConnection;

use super::record::Exec;
use super::time::{now, Millis};
use super::tx::Tx;
use super::writes::Writes;
use super::{Effects, SqliteBackend};
use crate::backend::held_keys::{HeldGroup, PassEnd};
use crate::backend::shared::concurrency::{
    sqlite as shared, LIMIT_CHANGE_FREES, LIMIT_CHANGE_LOOKS_AT,
};
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::{ConcurrencyLimit, ConcurrencyScope, Eligibility, TenantId};

/// The most of a full key's queue one claim blocks.
const BLOCK_BATCH: i64 = 1_000;

/// The most of a key's held executions (in claim order) a run's end looks
/// through for one its limit holds. A key may hold back a great many of
/// another kind or lane ahead of them; past this bound, the held-keys pass
/// (which steps from group to group) frees what the end did not. Postgres's
/// release trigger has the same bound (migration 0034).
const HAND_ON_LOOKS_AT: i64 = 1_000;

/// The limit that applies to an execution, as stored.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    scope: String,
    name: String,
    max_running: i64,
    max_starts: Option<i64>,
    window_ms: i64,
}

/// What the claim does with a candidate.
pub(super) enum KeyVerdict {
    /// Lease it; it holds a slot of this scope (`None`: no limit applies).
    Admit(Option<String>),
    /// Its key is full under this limit.
    Block(Rule),
}

/// The kind's limit, else the lane's, for a keyed execution.
async fn rule_for(tx: &mut Tx<'_>, row: &Exec) -> Result<Option<Rule>> {
    if row.concurrency_key.is_none() {
        return Ok(None);
    }
    let found: Option<(String, String, i64, Option<i64>, i64)> = tx
        .optional(
            "read concurrency limit",
            "SELECT scope, name, max_running, max_starts, coalesce(window_ms, 1000) \
             FROM concurrency_limits WHERE tenant_id = ? \
               AND ((scope = 'kind' AND name = ?) OR (scope = 'lane' AND name = ?)) \
             ORDER BY scope LIMIT 1",
            |w| {
                w.bind(row.tenant_id)
                    .bind(row.kind.as_str())
                    .bind(row.lane.as_str());
            },
        )
        .await?;
    Ok(
        found.map(|(scope, name, max_running, max_starts, window_ms)| Rule {
            scope,
            name,
            max_running,
            max_starts,
            window_ms,
        }),
    )
}

/// A key's running executions under its rule (off
/// `executions_concurrency_running_idx`).
const KEY_RUNNING: &str = "SELECT count(*) FROM executions WHERE tenant_id = ?1 \
      AND concurrency_key = ?2 AND concurrency_held = ?3 AND lifecycle_phase = 'active' \
      AND ?4 = CASE ?3 WHEN 'kind' THEN kind ELSE lane END";

/// A key's start window under its rule, if its slot has one.
const KEY_WINDOW: &str = "SELECT window_started_at, window_starts FROM concurrency_slots \
    WHERE tenant_id = ?1 AND key = ?2 AND scope = ?3 AND name = ?4";

/// Bind a key's tenant, key, and its rule's scope and name, as `KEY_RUNNING`
/// and `KEY_WINDOW` number them.
fn bind_key<'q>(w: &mut Writes<'q>, row: &'q Exec, rule: &'q Rule) {
    w.bind(row.tenant_id)
        .bind(row.concurrency_key.as_deref())
        .bind(rule.scope.as_str())
        .bind(rule.name.as_str());
}

async fn key_running(tx: &mut Tx<'_>, row: &Exec, rule: &Rule) -> Result<i64> {
    let (running,): (i64,) = tx
        .one("count concurrency key", KEY_RUNNING, |w| {
            bind_key(w, row, rule)
        })
        .await?;
    Ok(running)
}

/// How many more of the row's key the rule lets start now, `running` of
/// them running.
async fn room_with(
    tx: &mut Tx<'_>,
    row: &Exec,
    rule: &Rule,
    running: i64,
    now: Millis,
) -> Result<i64> {
    let mut room = rule.max_running - running;
    if let Some(max_starts) = rule.max_starts {
        let window: Option<(Option<Millis>, Option<i64>)> = tx
            .optional("read concurrency window", KEY_WINDOW, |w| {
                bind_key(w, row, rule)
            })
            .await?;
        let (started_at, starts) = window.unwrap_or_default();
        let current = started_at.is_some_and(|t| t > now - rule.window_ms);
        room = room.min(max_starts - if current { starts.unwrap_or(0) } else { 0 });
    }
    Ok(room.max(0))
}

/// How many more of the row's key the rule lets start now.
async fn room(tx: &mut Tx<'_>, row: &Exec, rule: &Rule, now: Millis) -> Result<i64> {
    let running = key_running(tx, row, rule).await?;
    room_with(tx, row, rule, running, now).await
}

/// What a claim has learnt of its candidates' keys: each limit (by tenant,
/// kind and lane) and each key's running count, the claim's own leases
/// included. The claim's transaction is the only writer, so nothing else
/// changes them under it; and the leases it has yet to save are counted
/// here, not read back, so a keyed candidate does not make it save the rows
/// before it one by one.
#[derive(Default)]
pub(super) struct ClaimKeys {
    rules: HashMap<(TenantId, String, String), Option<Rule>>,
    running: HashMap<(TenantId, String, String, String), i64>,
}

impl ClaimKeys {
    /// Judge a claim candidate under its key's limit; an admitted one is
    /// counted as running, and its start in its key's window.
    pub(super) async fn judge(
        &mut self,
        tx: &mut Tx<'_>,
        row: &Exec,
        now: Millis,
    ) -> Result<KeyVerdict> {
        let Some(key) = row.concurrency_key.as_deref() else {
            return Ok(KeyVerdict::Admit(None));
        };
        let of_row = (row.tenant_id, row.kind.clone(), row.lane.clone());
        let rule = match self.rules.get(&of_row) {
            Some(rule) => rule.clone(),
            None => {
                let rule = rule_for(tx, row).await?;
                self.rules.insert(of_row, rule.clone());
                rule
            }
        };
        let Some(rule) = rule else {
            return Ok(KeyVerdict::Admit(None));
        };
        let slot = (
            row.tenant_id,
            rule.scope.clone(),
            rule.name.clone(),
            key.to_owned(),
        );
        let running = match self.running.get(&slot) {
            Some(&running) => running,
            None => key_running(tx, row, &rule).await?,
        };
        if room_with(tx, row, &rule, running, now).await? == 0 {
            self.running.insert(slot, running);
            return Ok(KeyVerdict::Block(rule));
        }
        self.running.insert(slot, running + 1);
        if rule.max_starts.is_some() {
            count_start(tx, row, &rule, now).await?;
        }
        Ok(KeyVerdict::Admit(Some(rule.scope)))
    }
}

/// Count an admitted execution's start in its key's window.
async fn count_start(tx: &mut Tx<'_>, row: &Exec, rule: &Rule, now: Millis) -> Result<()> {
    let mut start = Writes::default();
    start
        .statement(
            "INSERT INTO concurrency_slots (tenant_id, scope, name, key, \
                 window_started_at, window_starts) VALUES (?1, ?2, ?3, ?4, ?5, 1) \
             ON CONFLICT (tenant_id, scope, name, key) DO UPDATE SET \
                 window_starts = CASE WHEN window_started_at > ?5 - ?6 \
                     THEN window_starts + 1 ELSE 1 END, \
                 window_started_at = CASE WHEN window_started_at > ?5 - ?6 \
                     THEN window_started_at ELSE ?5 END",
        )
        .bind(row.tenant_id)
        .bind(rule.scope.as_str())
        .bind(rule.name.as_str())
        .bind(row.concurrency_key.as_deref())
        .bind(now)
        .bind(rule.window_ms);
    tx.run(start, "count concurrency start").await
}

/// Block a candidate whose key is full, and the rest of the key's queue
/// under the same limit, so the next claims look past them.
pub(super) async fn block(
    tx: &mut Tx<'_>,
    row: &mut Exec,
    rule: &Rule,
    effects: &mut Effects,
) -> Result<()> {
    let before = row.lease_before();
    row.eligibility_state = Eligibility::BlockedByConcurrencyKey;
    row.updated_at = now();
    row.save_in(tx, Some(before), effects, |_, _, _| {}).await?;
    let mut rest = Writes::default();
    rest.statement(
        "UPDATE executions SET eligibility_state = 'blocked_by_concurrency_key', \
             blocking_reason = 'blocked_by_concurrency_key', updated_at = ?1 \
         WHERE rowid IN (SELECT rowid FROM executions x \
             WHERE x.tenant_id = ?2 AND x.concurrency_key = ?3 \
               AND x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now' \
               AND ?5 = CASE ?4 WHEN 'kind' THEN x.kind ELSE x.lane END \
               AND (?4 = 'kind' OR NOT EXISTS (SELECT 1 FROM concurrency_limits k \
                   WHERE k.tenant_id = x.tenant_id AND k.scope = 'kind' AND k.name = x.kind)) \
             ORDER BY x.priority DESC, x.eligible_at, x.execution_id LIMIT ?6)",
    )
    .bind(row.updated_at)
    .bind(row.tenant_id)
    .bind(row.concurrency_key.as_deref())
    .bind(rule.scope.as_str())
    .bind(rule.name.as_str())
    .bind(BLOCK_BATCH);
    tx.run(rest, "block concurrency key").await
}

/// A slot holder stopped running: make the next execution its limit holds
/// back claimable.
pub(super) async fn hand_on(tx: &mut Tx<'_>, row: &Exec, effects: &mut Effects) -> Result<()> {
    let (Some(key), Some(scope)) = (&row.concurrency_key, &row.concurrency_held) else {
        return Ok(());
    };
    let name = if scope == "kind" {
        &row.kind
    } else {
        &row.lane
    };
    let freed = unblock(tx, row.tenant_id, key, Pick::Limited { scope, name }, 1).await?;
    effects.work |= freed > 0;
    Ok(())
}

/// Which of a key's held-back executions [`unblock`] hands on.
enum Pick<'a> {
    /// Those a limit holds: of the kind or lane its scope names, among the
    /// key's first [`HAND_ON_LOOKS_AT`] held executions (off
    /// `executions_concurrency_blocked_idx`).
    Limited { scope: &'a str, name: &'a str },
    /// Those of one held group, one kind and lane (off
    /// `executions_concurrency_held_groups_idx`, in claim order).
    Group { kind: &'a str, lane: &'a str },
}

/// Make up to `limit` of a key's held-back executions claimable, in claim
/// order: those `pick` picks.
async fn unblock(
    tx: &mut Tx<'_>,
    tenant: TenantId,
    key: &str,
    pick: Pick<'_>,
    limit: i64,
) -> Result<u64> {
    let (sql, first, second) = unblock_sql(&pick);
    let freed: Vec<(i64,)> = tx
        .fetch("release held executions", sql, |w| {
            w.bind(now())
                .bind(tenant)
                .bind(key)
                .bind(first)
                .bind(second)
                .bind(limit);
        })
        .await?;
    Ok(freed.len() as u64)
}

/// The statement of [`unblock`] for `pick`, with its `?4` and `?5`. Each
/// text is built once: a hand-on runs at the end of every keyed run.
fn unblock_sql<'a>(pick: &Pick<'a>) -> (&'static str, &'a str, &'a str) {
    // Up to `?6` of `held`, in the order they come; a row for each freed,
    // so that [`unblock`] counts them on whichever connection it runs.
    fn freeing_up_to_limit(held: &str) -> String {
        freeing(&format!("SELECT rowid FROM {held} LIMIT ?6")) + " RETURNING 1"
    }
    // The key's first held executions, whatever holds them, then those of
    // the limit: off the key's index, read no further than the bound. The
    // outer query scans the subquery's rows as they come, in claim order,
    // and stops at the limit (a second ORDER BY here would sort all of the
    // bound's rows first).
    static LIMITED: LazyLock<String> = LazyLock::new(|| {
        freeing_up_to_limit(&format!(
            "(SELECT rowid, kind, lane FROM executions \
              WHERE tenant_id = ?2 AND concurrency_key = ?3 \
                AND eligibility_state = 'blocked_by_concurrency_key' \
              ORDER BY priority DESC, eligible_at, execution_id \
              LIMIT {HAND_ON_LOOKS_AT}) \
             WHERE ?5 = CASE ?4 WHEN 'kind' THEN kind ELSE lane END"
        ))
    });
    static GROUP: LazyLock<String> = LazyLock::new(|| {
        freeing_up_to_limit(
            "executions WHERE tenant_id = ?2 AND concurrency_key = ?3 \
               AND eligibility_state = 'blocked_by_concurrency_key' \
               AND kind = ?4 AND lane = ?5 \
             ORDER BY priority DESC, eligible_at, execution_id",
        )
    });
    match *pick {
        Pick::Limited { scope, name } => (LIMITED.as_str(), scope, name),
        Pick::Group { kind, lane } => (GROUP.as_str(), kind, lane),
    }
}

/// The statement that makes the rows `picked` (a query of `rowid`s)
/// claimable again, at `?1`; the next claims judge each under the limit
/// that applies then.
fn freeing(picked: &str) -> String {
    format!(
        "UPDATE executions SET eligibility_state = 'eligible_now', \
             blocking_reason = 'waiting_for_worker', updated_at = ?1 \
         WHERE rowid IN ({picked})"
    )
}

/// Make claimable what the tenant's limit for a scope and name held back,
/// as far as [`LIMIT_CHANGE_FREES`] among the tenant's first
/// [`LIMIT_CHANGE_LOOKS_AT`] held executions (off
/// `executions_concurrency_blocked_idx`); the held-keys pass frees the rest.
async fn unblock_scope(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    scope: ConcurrencyScope,
    name: &str,
    effects: &mut Effects,
) -> Result<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        freeing(&format!(
            "SELECT rowid FROM \
                 (SELECT rowid, kind, lane FROM executions \
                  WHERE tenant_id = ?2 AND eligibility_state = 'blocked_by_concurrency_key' \
                  LIMIT {LIMIT_CHANGE_LOOKS_AT}) \
             WHERE ?3 = CASE ?4 WHEN 'kind' THEN kind ELSE lane END \
             LIMIT {LIMIT_CHANGE_FREES}"
        ))
    });
    let freed = sqlx::query(SQL.as_str())
        .bind(now())
        .bind(tenant)
        .bind(name)
        .bind(scope.as_str())
        .run(conn, "release held executions")
        .await?
        .rows_affected();
    effects.work |= freed > 0;
    Ok(())
}

crate::backend::configuration::implement_concurrency!(SqliteBackend, sqlite);

async fn set_concurrency_limit(
    db: &SqliteBackend,
    tenant: TenantId,
    limit: &ConcurrencyLimit,
    max_limits: u32,
) -> Result<()> {
    db.write("set concurrency limit", async |conn, effects| {
        shared::put_concurrency_limit(conn, tenant, limit, max_limits).await?;
        unblock_scope(conn, tenant, limit.scope, &limit.name, effects).await
    })
    .await
}

async fn delete_concurrency_limit(
    db: &SqliteBackend,
    tenant: TenantId,
    scope: ConcurrencyScope,
    name: &str,
) -> Result<bool> {
    db.write("delete concurrency limit", async |conn, effects| {
        let deleted = shared::delete_concurrency_limit(conn, tenant, scope, name).await?;
        unblock_scope(conn, tenant, scope, name, effects).await?;
        Ok(deleted)
    })
    .await
}

/// Each tenant's held groups (key, kind, lane), at most `limit` a tenant
/// from where its last pass stopped (see [`crate::backend::held_keys`]),
/// each released as far as its key has room now.
async fn release_held_keys(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    let limit = sweep.limit;
    let op = "release held keys";
    let starts: HashMap<TenantId, HeldGroup> = db.held_cursors.starts(sweep).into_iter().collect();
    let (freed, ends) = db
        .write(op, async |conn, effects| {
            let tenants: Vec<TenantId> = match sweep.tenant {
                Some(tenant) => vec![tenant],
                None => sqlx::query_scalar(HELD_TENANTS).all(&mut *conn, op).await?,
            };
            let now = now();
            let (mut freed, mut ends) = (0, Vec::new());
            for tenant in tenants {
                let groups = held_groups(conn, tenant, starts.get(&tenant), limit).await?;
                if let Some(last) = groups.last() {
                    ends.push(PassEnd {
                        tenant_id: tenant,
                        last: HeldGroup {
                            concurrency_key: last.concurrency_key.clone().unwrap_or_default(),
                            kind: last.kind.clone(),
                            lane: last.lane.clone(),
                        },
                        taken: groups.len() as i64,
                    });
                }
                for row in &groups {
                    freed += release_group(conn, row, limit, now).await?;
                }
            }
            effects.work |= freed > 0;
            Ok((freed, ends))
        })
        .await?;
    db.held_cursors.advance(sweep, ends);
    Ok(freed)
}

/// Tenants with held work: one probe of `executions_concurrency_held_groups_idx`
/// a tenant (a `DISTINCT` would read every held execution).
const HELD_TENANTS: &str = "WITH RECURSIVE held(tenant_id) AS ( \
        SELECT (SELECT min(tenant_id) FROM executions \
            WHERE eligibility_state = 'blocked_by_concurrency_key') \
        UNION ALL \
        SELECT (SELECT min(x.tenant_id) FROM executions x \
            WHERE x.eligibility_state = 'blocked_by_concurrency_key' \
              AND x.tenant_id > held.tenant_id) \
        FROM held WHERE held.tenant_id IS NOT NULL) \
    SELECT tenant_id FROM held WHERE tenant_id IS NOT NULL";

/// Which rows [`held_groups`] reads: a recursive walk of
/// `executions_concurrency_held_groups_idx`, one probe a group, binding the
/// tenant (?1), the cursor (?2-?4, NULL for the start) and the limit (?5).
/// Keys, kinds and lanes are never empty, so ('', '', '') is before all.
/// The previous group's columns go through `coalesce` in the next probe:
/// compared as plain columns of another row, SQLite bounds the index range
/// by the key alone and reads the rest of the key's rows (its query plan
/// says so); as expressions, by the whole row value.
const HELD_GROUPS: &str = "rowid IN (WITH RECURSIVE walk(row, n) AS ( \
             SELECT (SELECT rowid FROM executions \
                 WHERE tenant_id = ?1 AND eligibility_state = 'blocked_by_concurrency_key' \
                   AND (concurrency_key, kind, lane) \
                       > (coalesce(?2, ''), coalesce(?3, ''), coalesce(?4, '')) \
                 ORDER BY concurrency_key, kind, lane LIMIT 1), 1 \
             UNION ALL \
             SELECT (SELECT x.rowid FROM executions x \
                 WHERE x.tenant_id = ?1 \
                   AND x.eligibility_state = 'blocked_by_concurrency_key' \
                   AND (x.concurrency_key, x.kind, x.lane) > (coalesce(p.concurrency_key, ''), \
                       coalesce(p.kind, ''), coalesce(p.lane, '')) \
                 ORDER BY x.concurrency_key, x.kind, x.lane LIMIT 1), walk.n + 1 \
             FROM walk JOIN executions p ON p.rowid = walk.row \
             WHERE walk.n < ?5) \
         SELECT row FROM walk WHERE row IS NOT NULL)";

/// The first held row (in claim order) of each of the tenant's held groups
/// after `after`, at most `limit`, in group order: one probe of
/// `executions_concurrency_held_groups_idx` a group, whatever each holds.
async fn held_groups(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    after: Option<&HeldGroup>,
    limit: u32,
) -> Result<Vec<Exec>> {
    let sql = Exec::select_sql(HELD_GROUPS);
    let mut rows: Vec<Exec> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(after.map(|g| g.concurrency_key.as_str()))
        .bind(after.map(|g| g.kind.as_str()))
        .bind(after.map(|g| g.lane.as_str()))
        .bind(i64::from(limit))
        .all(&mut *conn, "release held keys")
        .await?;
    rows.sort_by(|a, b| {
        (&a.concurrency_key, &a.kind, &a.lane).cmp(&(&b.concurrency_key, &b.kind, &b.lane))
    });
    Ok(rows)
}

/// The query plans of the held-keys pass's reads, one line a step.
pub(super) async fn explain_held_pass(conn: &mut SqliteConnection) -> Result<String> {
    let op = "explain release held keys";
    let groups = format!("EXPLAIN QUERY PLAN {}", Exec::select_sql(HELD_GROUPS));
    let mut lines: Vec<String> = Vec::new();
    for (sql, binds) in [
        (format!("EXPLAIN QUERY PLAN {HELD_TENANTS}"), false),
        (groups, true),
    ] {
        let query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
        let query = if binds {
            query
                .bind(TenantId::nil())
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(500_i64)
        } else {
            query
        };
        let plan = query.all(&mut *conn, op).await?;
        lines.extend(plan.into_iter().map(|(_, _, _, detail)| detail));
    }
    Ok(lines.join("\n"))
}

/// Release as many of `row`'s group as its key has room for now; how many.
async fn release_group(
    conn: &mut SqliteConnection,
    row: &Exec,
    limit: u32,
    now: Millis,
) -> Result<u64> {
    let Some(key) = &row.concurrency_key else {
        return Ok(0);
    };
    // The group is one kind and lane, so whichever the rule's scope names,
    // its executions are the group's.
    let room = match rule_for(&mut Tx::Sqlx(conn), row).await? {
        Some(rule) => room(&mut Tx::Sqlx(conn), row, &rule, now).await?,
        None => i64::from(limit),
    };
    if room <= 0 {
        return Ok(0);
    }
    let group = Pick::Group {
        kind: &row.kind,
        lane: &row.lane,
    };
    unblock(&mut Tx::Sqlx(conn), row.tenant_id, key, group, room).await
}

#[cfg(test)]
mod tests {
    use super::{unblock_sql, Pick};
    use crate::backend::sqlite::plans::query_plans;

    /// A run's end hands its key on off the key's index, reading its held
    /// executions in claim order and stopping at what it frees: no sort of
    /// the bound's rows (which would read all of them on every end).
    #[tokio::test]
    async fn the_hand_on_reads_the_keys_index_in_order_without_sorting() {
        let limited = Pick::Limited {
            scope: "kind",
            name: "echo",
        };
        let group = Pick::Group {
            kind: "echo",
            lane: "default",
        };
        let plans = query_plans(&[unblock_sql(&limited).0, unblock_sql(&group).0]).await;
        let indexes = [
            "executions_concurrency_blocked_idx",
            "executions_concurrency_held_groups_idx",
        ];
        for (plan, index) in plans.iter().zip(indexes) {
            assert!(plan.contains(index), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }
}
