//! Test support: a scratch database, and the query plans SQLite chooses for
//! statements on one. Unit tests pin the plans of statements that must stay
//! on an index, since a plan that scans or sorts a table still gives the
//! right answer and no other test would notice.

use std::path::PathBuf;

use super::SqliteBackend;
use crate::backend::Backend;

/// A freshly migrated database in a directory of its own, removed on drop.
pub(super) struct Scratch {
    pub db: SqliteBackend,
    dir: PathBuf,
}

impl Scratch {
    pub async fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ff-scratch-{}", uuid::Uuid::now_v7()));
        let db = SqliteBackend::open(&dir.join(FILE)).await.unwrap();
        db.migrate().await.unwrap();
        Self { db, dir }
    }

    /// The database file, for a second connection to it.
    pub fn file(&self) -> PathBuf {
        self.dir.join(FILE)
    }
}

const FILE: &str = "scratch.db";

/// A claim of up to `limit` executions of `lanes` by a worker with
/// `capabilities`, holding leases for 30 s.
pub(super) fn claim_request(
    lanes: &[&str],
    capabilities: &[&str],
    limit: u32,
) -> crate::model::ClaimRequest {
    let owned = |all: &[&str]| all.iter().map(|s| (*s).to_owned()).collect();
    crate::model::ClaimRequest {
        worker_id: "w".into(),
        worker_instance: "i".into(),
        lanes: owned(lanes),
        capabilities: owned(capabilities),
        limit,
        lease_ttl: std::time::Duration::from_secs(30),
        exclude_tenants: Vec::new(),
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `EXPLAIN QUERY PLAN` of each statement (one line a plan step), on a
/// [`Scratch`] database.
pub(super) async fn query_plans(statements: &[&str]) -> Vec<String> {
    let scratch = Scratch::new().await;
    let db = &scratch.db;
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
    plans
}
