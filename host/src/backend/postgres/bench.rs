//! Benchmark support: a scratch database, and the raw-SQL baseline queue.
//!
//! The baseline is the smallest queue that does the same job on the same server:
//! a bulk `INSERT … unnest`, a `FOR UPDATE SKIP LOCKED` claim of `n` rows by
//! priority and age, and a guarded `UPDATE` to finish each one — no tenants,
//! attempts, fencing, outbox or NOTIFY. The engine's throughput divided by the
//! baseline's is the price of everything the engine adds.

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{EngineError, Result};

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

pub struct RawQueue {
    pool: PgPool,
}

impl RawQueue {
    pub async fn setup(pool: PgPool) -> Result<Self> {
        for stmt in [
            "CREATE TABLE IF NOT EXISTS raw_jobs (id uuid PRIMARY KEY, payload bytea NOT NULL, \
             priority int NOT NULL DEFAULT 0, state text NOT NULL DEFAULT 'ready', \
             created_at timestamptz NOT NULL DEFAULT now(), result bytea)",
            "CREATE INDEX IF NOT EXISTS raw_jobs_ready ON raw_jobs (priority DESC, created_at) \
             WHERE state = 'ready'",
        ] {
            sqlx::query(stmt)
                .execute(&pool)
                .await
                .map_err(EngineError::storage("baseline setup"))?;
        }
        Ok(Self { pool })
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

    pub async fn claim(&self, limit: u32) -> Result<Vec<Uuid>> {
        sqlx::query_scalar(
            "UPDATE raw_jobs SET state = 'running' WHERE id IN (\
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
