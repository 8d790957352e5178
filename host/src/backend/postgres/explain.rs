//! The plans tests pin: a statement's generic plan, the one a prepared
//! statement settles on after its first runs, whatever the arguments.
//!
//! A plain `EXPLAIN` with arguments plans for their values, which can hide a
//! plan that only the generic one takes (a partial index whose predicate the
//! statement does not spell out, say). Nothing is read.

use sqlx::PgConnection;

use super::rows::transaction;
use super::Connections;
use crate::backend::Fetch;
use crate::error::{EngineError, Result};

/// The generic plan of `sql`, which takes `arguments` parameters: prepared
/// under a name of its own, explained under `plan_cache_mode =
/// force_generic_plan` (a generic plan uses no argument's value, so all are
/// NULL), and deallocated.
pub(super) async fn generic_plan(
    pool: &Connections,
    sql: &str,
    arguments: usize,
) -> Result<String> {
    let op = "explain a statement";
    let name = format!("flowfabric_explain_{}", uuid::Uuid::now_v7().simple());
    transaction(pool, op, async |conn| {
        let run = async |conn: &mut PgConnection, sql: String| {
            sqlx::query(&sql)
                .execute(&mut *conn)
                .await
                .map_err(EngineError::storage(op))
        };
        run(
            conn,
            "SET LOCAL plan_cache_mode = force_generic_plan".into(),
        )
        .await?;
        run(conn, format!("PREPARE {name} AS {sql}")).await?;
        let nulls = vec!["NULL"; arguments].join(", ");
        let explain = format!("EXPLAIN EXECUTE {name}({nulls})");
        let lines: Vec<String> = sqlx::query_scalar(&explain).all(&mut *conn, op).await?;
        run(conn, format!("DEALLOCATE {name}")).await?;
        Ok(lines.join("\n"))
    })
    .await
}
