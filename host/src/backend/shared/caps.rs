//! Caps on how many rows of one kind a tenant, or one of its objects, may
//! keep (budgets, schedules, a budget's adjustments, an execution's
//! signals): one rule, counted the same way everywhere.
//!
//! The count reads the table's primary key by its prefix and stops one past
//! the cap, so it costs no more than the cap however many rows there are.
//! The caller holds what serialises the writes it caps (the parent row's
//! lock on Postgres, the single writer on SQLite), so no two writes count
//! at once.

use uuid::Uuid;

use crate::backend::refusals;
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::TenantId;

/// Whose rows a cap counts: the tenant's in `table`, or only those whose
/// `column` is `id`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows {
    pub table: &'static str,
    pub within: Option<(&'static str, Uuid)>,
}

/// Whether the rows counted include the one being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Counted before the write: there must be room for one more.
    BeforeWrite,
    /// Counted after it, in the same transaction: the rows must fit.
    AfterWrite,
}

/// A tenant's named rows under a count cap (config values, concurrency
/// limits): `table` is also the limit's name in the refusal, `key` the
/// columns (after `tenant_id`) and values that name the row being written,
/// `what` the rows in words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Named<'a> {
    pub table: &'static str,
    pub key: &'a [(&'static str, &'a str)],
    pub max: u32,
    pub what: &'static str,
}

/// Whether the tenant exists, whether the named row does, and how many rows
/// the tenant holds (the table's primary key, by its tenant prefix).
fn named_probe_sql(named: Named<'_>) -> String {
    let table = named.table;
    let key: String = (0..named.key.len())
        .map(|i| format!(" AND {} = ${}", named.key[i].0, i + 2))
        .collect();
    format!(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1), \
                EXISTS (SELECT 1 FROM {table} WHERE tenant_id = $1{key}), \
                (SELECT count(*) FROM {table} WHERE tenant_id = $1)"
    )
}

fn count_sql(rows: Rows) -> String {
    let table = rows.table;
    match rows.within {
        None => {
            format!("SELECT count(*) FROM (SELECT 1 FROM {table} WHERE tenant_id = $1 LIMIT $2) c")
        }
        Some((column, _)) => format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} \
             WHERE tenant_id = $1 AND {column} = $2 LIMIT $3) c"
        ),
    }
}

for_both_drivers! {
    /// Whether `rows` stay within `max` (see [`Counted`]).
    async fn within_cap(conn, tenant: TenantId, rows: Rows, max: u32, counted: Counted, op: &'static str)
        -> Result<bool>
    {
        let max = i64::from(max);
        let sql = count_sql(rows);
        let query = sqlx::query_scalar(&sql).bind(tenant);
        let query = match rows.within {
            Some((_, id)) => query.bind(id),
            None => query,
        };
        let kept: i64 = query.bind(max + 1).one(&mut *conn, op).await?;
        Ok(match counted {
            Counted::BeforeWrite => kept < max,
            Counted::AfterWrite => kept <= max,
        })
    }

    /// Refuse writing the row `named` names when the tenant is unknown, or
    /// when the row is new and the tenant already holds `named.max` (see
    /// [`refusals::check_named_cap`]). The count then stays still until
    /// commit: on Postgres the tenant's row is locked first (so two new
    /// names cannot pass the cap at once); on SQLite the one writer holds it.
    async fn check_named_cap(conn, tenant: TenantId, named: Named<'_>, op: &'static str)
        -> Result<()>
    {
        sqlx::query(&format!("SELECT 1 FROM tenants WHERE tenant_id = $1{FOR_UPDATE}"))
            .bind(tenant)
            .run(&mut *conn, op)
            .await?;
        let sql = named_probe_sql(named);
        let mut query = sqlx::query_as(&sql).bind(tenant);
        for (_, value) in named.key {
            query = query.bind(*value);
        }
        let probe: (bool, bool, i64) = query.one(&mut *conn, op).await?;
        refusals::check_named_cap(tenant, probe, named.max, named.table, named.what)
    }
}
