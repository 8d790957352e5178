//! Test support: the query plans SQLite chooses for statements, on a
//! freshly migrated database. Unit tests pin the plans of statements that
//! must stay on an index, since a plan that scans or sorts a table still
//! gives the right answer and no other test would notice.

use super::SqliteBackend;
use crate::backend::Backend;

/// `EXPLAIN QUERY PLAN` of each statement (one line a plan step), on a
/// scratch database that is removed afterwards.
pub(super) async fn query_plans(statements: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("ff-plan-{}", uuid::Uuid::now_v7()));
    let db = SqliteBackend::open(&dir.join("plan.db")).await.unwrap();
    db.migrate().await.unwrap();
    let mut conn = db.writer.acquire().await.unwrap();
    let mut plans = Vec::new();
    for sql in statements {
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        plans.push(rows.into_iter().map(|r| r.3 + "\n").collect());
    }
    drop(conn);
    std::fs::remove_dir_all(dir).unwrap();
    plans
}
