//! Test support: a real Postgres for the whole test run, a database per test.
//!
//! If `FLOWFABRIC_TEST_DATABASE_URL` names a server (CI starts one), tests use it;
//! otherwise the first test starts a throwaway cluster from
//! `/usr/lib/postgresql/15/bin` (as the `postgres` user when run as root) in a
//! temporary directory, and a watchdog stops and deletes it when this process
//! exits. Either way a template database is migrated once, and every test clones
//! it (`CREATE DATABASE … TEMPLATE`, ~30 ms), so tests run in parallel without
//! seeing each other's rows.

mod postgres;
mod proxy;
mod served;
pub mod server;

use std::sync::Arc;

use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::Backend;
use flowfabric::engine::{Engine, Limits, Subscription};
use flowfabric::model::{EventCursor, Execution, ExecutionId, TenantId};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub use postgres::{server_url, Cluster};
pub use proxy::Proxy;
pub use served::ServedProcess;

const TEMPLATE: &str = "flowfabric_template";

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    pub engine: Engine,
}

impl TestDb {
    /// Engine tests exercise the engine without uploading components, so
    /// creating an execution of a kind with no component is allowed here.
    pub async fn new() -> Self {
        Self::with_limits(Limits {
            require_component: false,
            ..Limits::default()
        })
        .await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::on_server(&server_url(), limits).await
    }

    /// A database on `server` (`postgres://user@host:port`), which must have
    /// the test template (the shared server, or a [`Cluster`]).
    pub async fn on_server(server: &str, limits: Limits) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{server}/postgres"))
            .await
            .expect("connect to test server");
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .execute(&admin)
            .await
            .expect("clone template database");
        admin.close().await;
        let url = format!("{server}/{name}");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(PgBackend::connect_options(&url).expect("test database url"))
            .await
            .expect("connect to test database");
        let backend: Arc<dyn Backend> = Arc::new(PgBackend::from_pool(pool.clone()));
        Self {
            url,
            pool,
            engine: Engine::new(backend, limits),
        }
    }

    /// Poll until `id` is terminal; fails the test after `limit`.
    pub async fn wait_terminal(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        limit: std::time::Duration,
    ) -> Execution {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ex = self.engine.get(tenant, id).await.expect("get");
            if ex.state.is_terminal() {
                return ex;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "execution {id} stuck in {}",
                ex.state
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn backend(&self) -> Arc<dyn Backend> {
        self.engine.backend().clone()
    }

    pub async fn tenant(&self, name: &str) -> TenantId {
        self.engine
            .create_tenant(name)
            .await
            .expect("create tenant")
            .tenant_id
    }

    /// Every event of one of the tenant's streams, read from the start by
    /// cursor until the outbox withholds nothing (a transaction of a test
    /// running alongside can briefly hold delivery back; see migration 0011).
    pub async fn events<E: Subscription>(&self, tenant: TenantId) -> Vec<E> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (mut all, mut after) = (Vec::new(), EventCursor::START);
        loop {
            let batch = E::read(&self.engine, tenant, after, 1_000)
                .await
                .expect("read events");
            if let Some(last) = batch.events.last() {
                after = last.cursor();
            }
            let page_full = batch.events.len() == 1_000;
            all.extend(batch.events);
            if !batch.pending && !page_full {
                return all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "events still withheld after 10 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A backend over one connection of its own, so a test can read that
    /// connection's session state (its prepared statements and their plans).
    pub async fn one_connection_backend(&self) -> (PgPool, PgBackend) {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(PgBackend::connect_options(&self.url).expect("test database url"))
            .await
            .expect("connect to test database");
        (pool.clone(), PgBackend::from_pool(pool))
    }

    /// Rows in a table, for asserting that a rejected request wrote nothing.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// Move the database clock's view of a lease into the past, so expiry can be
    /// tested without sleeping for a whole TTL.
    pub async fn expire_lease(&self, execution: uuid::Uuid) {
        sqlx::query(
            "UPDATE executions SET lease_expires_at = now() - interval '1 second' \
             WHERE execution_id = $1",
        )
        .bind(execution)
        .execute(&self.pool)
        .await
        .expect("expire lease");
    }

    /// Make a delayed or backing-off execution due now.
    pub async fn make_due(&self, execution: uuid::Uuid) {
        sqlx::query(
            "UPDATE executions SET eligible_at = now() - interval '1 millisecond' \
             WHERE execution_id = $1",
        )
        .bind(execution)
        .execute(&self.pool)
        .await
        .expect("make due");
    }
}

/// Migrate the template once per server (idempotent across test binaries).
async fn prepare_template(server: &str) {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{server}/postgres"))
        .await
        .expect("connect to test server");
    // Serialise template creation across concurrently starting test binaries.
    let mut conn = admin.acquire().await.expect("admin connection");
    sqlx::query("SELECT pg_advisory_lock(7243)")
        .execute(&mut *conn)
        .await
        .expect("template lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(TEMPLATE)
            .fetch_one(&mut *conn)
            .await
            .expect("check template");
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
            .execute(&mut *conn)
            .await
            .expect("create template");
    }
    // Always re-run migrations: a new migration must reach an old template.
    let template = PgBackend::connect(&format!("{server}/{TEMPLATE}"), 1)
        .await
        .expect("connect template");
    template.migrate().await.expect("migrate template");
    template.pool().close().await;
    sqlx::query("SELECT pg_advisory_unlock(7243)")
        .execute(&mut *conn)
        .await
        .expect("template unlock");
}

/// Bytes of a guest component built from `guests/` (`echo`, `testkit`).
pub fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("FLOWFABRIC_GUESTS_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One wasm runtime for the whole test binary: engines are heavy (the pooling
/// allocator reserves address space) and compiled components are worth sharing.
pub fn runtime() -> Arc<flowfabric::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<Arc<flowfabric::runtime::Runtime>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let config = flowfabric::runtime::RuntimeConfig {
                max_instances: 128,
                ..Default::default()
            };
            Arc::new(flowfabric::runtime::Runtime::new(config).expect("wasm runtime"))
        })
        .clone()
}
