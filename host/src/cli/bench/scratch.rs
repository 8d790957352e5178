//! Benchmark support: a scratch database, and the raw-SQL baseline queue.
//!
//! The baseline is the smallest queue that does the same job on the same server:
//! a bulk `INSERT … unnest`, a `FOR UPDATE SKIP LOCKED` claim of `n` rows by
//! priority and age, and a guarded `UPDATE` to finish them — no tenants,
//! attempts, fencing, outbox or NOTIFY. The engine's throughput divided by the
//! baseline's is the price of everything the engine adds. For latency it can
//! also wake a listener with NOTIFY on insert, the floor of the engine's
//! wake-up path.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;

use flowfabric::backend::postgres::Connections;
use uuid::Uuid;

use flowfabric::error::{EngineError, Result};

/// A database of a round's own: a scratch database of a Postgres server, or
/// a fresh SQLite file (the embedded default) in a directory of its own.
pub enum Scratch {
    Postgres(ScratchDatabase),
    Sqlite(PathBuf),
}

impl Scratch {
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("ff-bench-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self::Sqlite(dir))
    }

    pub fn url(&self) -> String {
        match self {
            Self::Postgres(db) => db.url.clone(),
            Self::Sqlite(dir) => format!("sqlite:{}", dir.join("bench.db").display()),
        }
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        match self {
            Self::Postgres(db) => Ok(db.drop().await?),
            Self::Sqlite(dir) => Ok(std::fs::remove_dir_all(dir)?),
        }
    }
}

/// A database created for one benchmark run and dropped afterwards.
pub struct ScratchDatabase {
    admin: PgPool,
    name: String,
    pub url: String,
}

impl ScratchDatabase {
    pub async fn create(server_url: &str) -> Result<Self> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await
            .map_err(EngineError::storage("connect"))?;
        let name = format!("flowfabric_bench_{}", Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .map_err(EngineError::storage("create scratch database"))?;
        let mut url: url_like::Url = server_url.into();
        url.set_database(&name);
        Ok(Self {
            admin,
            url: url.0,
            name,
        })
    }

    pub async fn drop(self) -> Result<()> {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await
        .map_err(EngineError::storage("drop scratch database"))?;
        Ok(())
    }
}

mod url_like {
    /// Replace the database path of a `postgres://` URL, keeping any query string.
    pub struct Url(pub String);

    impl From<&str> for Url {
        fn from(s: &str) -> Self {
            Url(s.to_owned())
        }
    }

    impl Url {
        pub fn set_database(&mut self, db: &str) {
            let (base, query) = match self.0.split_once('?') {
                Some((b, q)) => (b.to_owned(), Some(q.to_owned())),
                None => (self.0.clone(), None),
            };
            let authority_end = base
                .find("://")
                .map(|i| i + 3)
                .and_then(|start| base[start..].find('/').map(|j| start + j))
                .unwrap_or(base.len());
            let mut out = format!("{}/{db}", &base[..authority_end]);
            if let Some(q) = query {
                out.push('?');
                out.push_str(&q);
            }
            self.0 = out;
        }
    }
}

/// Refresh the planner's statistics after a bulk fill, as autovacuum would in
/// time, so a benchmark measures the plans a settled installation gets.
pub async fn analyze(pool: &Connections) -> Result<()> {
    sqlx::query("ANALYZE")
        .execute(pool)
        .await
        .map_err(EngineError::storage("analyze"))?;
    Ok(())
}

/// Submit → start of every execution that has started: its first attempt's
/// start against its creation, both by the server's clock.
pub async fn start_latencies(pool: &Connections) -> Result<Vec<Duration>> {
    Ok(seconds_to_durations(
        sqlx::query_scalar(
            "SELECT extract(epoch FROM min(a.started_at) - e.created_at)::float8 \
             FROM executions e JOIN attempts a USING (tenant_id, execution_id) \
             GROUP BY e.tenant_id, e.execution_id, e.created_at",
        )
        .fetch_all(pool)
        .await
        .map_err(EngineError::storage("start latencies"))?,
    ))
}

fn seconds_to_durations(seconds: Vec<f64>) -> Vec<Duration> {
    // `now()` is a transaction's start, so a start can never precede a creation.
    seconds
        .into_iter()
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
        .collect()
}

const RAW_CHANNEL: &str = "flowfabric_bench_raw";

pub struct RawQueue {
    pool: Connections,
    url: String,
}

impl RawQueue {
    /// The baseline's table, reached through `pool` (connections handled as
    /// the engine's are) and listened for on `url`.
    pub async fn setup(pool: Connections, url: &str) -> Result<Self> {
        for stmt in [
            "CREATE TABLE IF NOT EXISTS raw_jobs (id uuid PRIMARY KEY, payload bytea NOT NULL, \
             priority int NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'ready', \
             created_at timestamptz NOT NULL DEFAULT now(), claimed_at timestamptz, result bytea)",
            "CREATE INDEX IF NOT EXISTS raw_jobs_ready ON raw_jobs (priority DESC, created_at) \
             WHERE state = 'ready'",
        ] {
            sqlx::query(stmt)
                .execute(&pool)
                .await
                .map_err(EngineError::storage("baseline setup"))?;
        }
        Ok(Self {
            pool,
            url: url.to_owned(),
        })
    }

    pub async fn insert(&self, payloads: &[Vec<u8>]) -> Result<()> {
        let ids: Vec<Uuid> = payloads.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(
            "INSERT INTO raw_jobs (id, payload) SELECT * FROM unnest($1::uuid[], $2::bytea[])",
        )
        .bind(&ids)
        .bind(payloads)
        .execute(&self.pool)
        .await
        .map_err(EngineError::storage("baseline insert"))?;
        Ok(())
    }

    /// Insert one job and wake listeners, in one statement.
    pub async fn insert_and_notify(&self, payload: &[u8]) -> Result<()> {
        sqlx::query(
            "WITH job AS (INSERT INTO raw_jobs (id, payload) VALUES ($1, $2) RETURNING id) \
             SELECT pg_notify($3, '') FROM job",
        )
        .bind(Uuid::now_v7())
        .bind(payload)
        .bind(RAW_CHANNEL)
        .execute(&self.pool)
        .await
        .map_err(EngineError::storage("baseline insert"))?;
        Ok(())
    }

    /// A connection listening for [`RawQueue::insert_and_notify`].
    pub async fn listen(&self) -> Result<PgListener> {
        let mut listener = PgListener::connect(&self.url)
            .await
            .map_err(EngineError::storage("baseline listen"))?;
        listener
            .listen(RAW_CHANNEL)
            .await
            .map_err(EngineError::storage("baseline listen"))?;
        Ok(listener)
    }

    /// Insert → claim of every claimed job, by the server's clock.
    pub async fn start_latencies(&self) -> Result<Vec<Duration>> {
        Ok(seconds_to_durations(
            sqlx::query_scalar(
                "SELECT extract(epoch FROM claimed_at - created_at)::float8 FROM raw_jobs \
                 WHERE claimed_at IS NOT NULL",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(EngineError::storage("baseline latencies"))?,
        ))
    }

    pub async fn claim(&self, limit: u32) -> Result<Vec<Uuid>> {
        sqlx::query_scalar(
            "UPDATE raw_jobs SET state = 'running', claimed_at = now() WHERE id IN (\
                SELECT id FROM raw_jobs WHERE state = 'ready' \
                ORDER BY priority DESC, created_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::storage("baseline claim"))
    }

    pub async fn complete(&self, id: Uuid, result: &[u8]) -> Result<()> {
        sqlx::query(
            "UPDATE raw_jobs SET state = 'done', result = $2 WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(result)
        .execute(&self.pool)
        .await
        .map_err(EngineError::storage("baseline complete"))?;
        Ok(())
    }

    /// Finish several jobs in one statement: the baseline for the engine's
    /// batched completions.
    pub async fn complete_many(&self, ids: &[Uuid], result: &[u8]) -> Result<()> {
        sqlx::query(
            "UPDATE raw_jobs SET state = 'done', result = $2 \
             WHERE id = ANY($1) AND state = 'running'",
        )
        .bind(ids)
        .bind(result)
        .execute(&self.pool)
        .await
        .map_err(EngineError::storage("baseline complete many"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::url_like::Url;

    #[test]
    fn database_is_replaced_in_urls() {
        for (input, want) in [
            ("postgres://u@h:5/postgres", "postgres://u@h:5/x"),
            ("postgres://u@h:5", "postgres://u@h:5/x"),
            (
                "postgres://u@h/db?sslmode=disable",
                "postgres://u@h/x?sslmode=disable",
            ),
        ] {
            let mut u: Url = input.into();
            u.set_database("x");
            assert_eq!(u.0, want);
        }
    }
}
