//! Test support: a real Postgres for the whole test run, a database per test.
//!
//! If `FLOWFABRIC_TEST_DATABASE_URL` names a server (CI starts one), tests use it;
//! otherwise the first test starts a throwaway cluster from
//! `/usr/lib/postgresql/15/bin` (as the `postgres` user when run as root) in a
//! temporary directory, and a watchdog stops and deletes it when this process
//! exits. Either way a template database is migrated once, and every test clones
//! it (`CREATE DATABASE … TEMPLATE`, ~30 ms), so tests run in parallel without
//! seeing each other's rows. Nothing drops a test's database when it ends;
//! instead, preparing the template drops those earlier runs left on a
//! long-lived server, once they are an hour old.

mod postgres;
mod proxy;
mod served;
pub mod server;
mod template;
pub mod webdriver;

use std::sync::Arc;

use std::path::PathBuf;

use flowfabric::backend::postgres::Connections;
use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::sqlite::SqliteBackend;
use flowfabric::backend::Backend;
use flowfabric::engine::{Engine, Limits, Subscription};
use flowfabric::model::{EventCursor, Execution, ExecutionId, ScheduleId, TenantId};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

pub use postgres::{server_url, Cluster};
pub use proxy::Proxy;
pub use served::{ServedProcess, TEST_CONFIG_KEYS};
use template::TEMPLATE;

/// Run each named scenario (an `async fn(Store)`) as two tests,
/// `postgres::<name>` and `sqlite::<name>`: one conformance suite, written
/// once, run against both backends.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario($crate::Store::Postgres).await
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $scenario() {
                super::$scenario($crate::Store::Sqlite).await
            })*
        }
    };
}

/// Which storage backend a test runs on. Engine scenarios run on both (see
/// `on_both_backends!` in the engine tests); the rest use Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Postgres,
    Sqlite,
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub engine: Engine,
    store: Stored,
}

enum Stored {
    Postgres {
        url: String,
        pool: PgPool,
        /// The backend's own connections.
        backend: Connections,
    },
    /// A database file in a directory of its own, deleted with the `TestDb`.
    Sqlite { pool: SqlitePool, dir: PathBuf },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Stored::Sqlite { dir, .. } = &self.store {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A directory of a test's own under the system's temp directory, removed
/// when dropped, whether the test passed or panicked.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, not yet created, path named `ff-{prefix}-{unique}`.
    pub fn new(prefix: &str) -> Self {
        let name = format!("ff-{prefix}-{}", uuid::Uuid::now_v7().simple());
        Self(std::env::temp_dir().join(name))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Engine tests exercise the engine without uploading components, so
/// creating an execution of a kind with no component is allowed there.
fn engine_test_limits() -> Limits {
    Limits {
        require_component: false,
        ..Limits::default()
    }
}

impl TestDb {
    /// A Postgres database (see [`TestDb::on`]).
    pub async fn new() -> Self {
        Self::with_limits(engine_test_limits()).await
    }

    /// A database on `store`, with engine-test limits.
    pub async fn on(store: Store) -> Self {
        Self::on_with(store, |_| {}).await
    }

    /// A database on `store`, with engine-test limits as `adjust` changes them.
    pub async fn on_with(store: Store, adjust: impl FnOnce(&mut Limits)) -> Self {
        let mut limits = engine_test_limits();
        adjust(&mut limits);
        match store {
            Store::Postgres => Self::with_limits(limits).await,
            Store::Sqlite => Self::sqlite(limits).await,
        }
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::on_server(&server_url(), limits).await
    }

    /// A fresh SQLite database file, migrated.
    pub async fn sqlite(limits: Limits) -> Self {
        let dir = std::env::temp_dir().join(format!("ff-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create test database directory");
        let file = dir.join("flowfabric.db");
        let backend = SqliteBackend::open(&file).await.expect("open sqlite");
        backend.migrate().await.expect("migrate sqlite");
        // The test's own connection, for poking at rows as the Postgres
        // tests do with theirs.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(SqliteConnectOptions::new().filename(&file))
            .await
            .expect("connect to test database");
        Self {
            engine: Engine::new(Arc::new(backend), limits),
            store: Stored::Sqlite { pool, dir },
        }
    }

    /// A database on `server` (`postgres://user@host:port`), which must have
    /// the test template (the shared server, or a [`Cluster`]).
    pub async fn on_server(server: &str, limits: Limits) -> Self {
        // Time-ordered, so a later run can tell a leftover from a live one.
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
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
        let options = PgBackend::connect_options(&url).expect("test database url");
        // The test's own statements go through a small sqlx pool beside the
        // backend's connections.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .expect("connect to test database");
        let pg = PgBackend::with_options(options, 16);
        let connections = pg.pool().clone();
        let backend: Arc<dyn Backend> = Arc::new(pg);
        Self {
            engine: Engine::new(backend, limits),
            store: Stored::Postgres {
                url,
                pool,
                backend: connections,
            },
        }
    }

    /// The database file of a SQLite test (another process may open it too).
    pub fn sqlite_path(&self) -> PathBuf {
        match &self.store {
            Stored::Sqlite { dir, .. } => dir.join("flowfabric.db"),
            Stored::Postgres { .. } => panic!("this test runs on SQLite only"),
        }
    }

    /// The Postgres pool of a Postgres-only test.
    pub fn pg(&self) -> &PgPool {
        match &self.store {
            Stored::Postgres { pool, .. } => pool,
            Stored::Sqlite { .. } => panic!("this test runs on Postgres only"),
        }
    }

    /// The engine's own connections, of a Postgres-only test.
    pub fn pg_backend_connections(&self) -> &Connections {
        match &self.store {
            Stored::Postgres { backend, .. } => backend,
            Stored::Sqlite { .. } => panic!("this test runs on Postgres only"),
        }
    }

    /// The Postgres URL of a Postgres-only test.
    pub fn pg_url(&self) -> &str {
        match &self.store {
            Stored::Postgres { url, .. } => url,
            Stored::Sqlite { .. } => panic!("this test runs on Postgres only"),
        }
    }

    /// Run one statement of the test's own, in the dialect of its store,
    /// with `id` bound as its parameter if given.
    async fn poke(&self, postgres: &str, sqlite: &str, id: Option<uuid::Uuid>) {
        match &self.store {
            Stored::Postgres { pool, .. } => {
                let query = sqlx::query(postgres);
                let query = if let Some(id) = id {
                    query.bind(id)
                } else {
                    query
                };
                query.execute(pool).await.map(|_| ())
            }
            Stored::Sqlite { pool, .. } => {
                let query = sqlx::query(sqlite);
                let query = if let Some(id) = id {
                    query.bind(id)
                } else {
                    query
                };
                query.execute(pool).await.map(|_| ())
            }
        }
        .expect("test statement");
    }

    /// One text value the test reads for itself, in the dialect of its store.
    async fn read_text(&self, postgres: &str, sqlite: &str, id: ExecutionId) -> String {
        match &self.store {
            Stored::Postgres { pool, .. } => {
                sqlx::query_scalar(postgres).bind(id).fetch_one(pool).await
            }
            Stored::Sqlite { pool, .. } => {
                sqlx::query_scalar(sqlite).bind(id).fetch_one(pool).await
            }
        }
        .expect("test read")
    }

    /// Overwrite an execution's stored policy with `json`, bypassing every
    /// check: what a row written by an older version, or by hand, may hold.
    pub async fn overwrite_policy(&self, execution: ExecutionId, json: &str) {
        self.poke(
            &format!("UPDATE executions SET policy = '{json}'::jsonb WHERE execution_id = $1"),
            &format!("UPDATE executions SET policy = '{json}' WHERE execution_id = ?"),
            Some(execution.as_uuid()),
        )
        .await;
    }

    /// Forget every component version's recorded imports: what a version
    /// stored before imports were recorded holds.
    pub async fn forget_component_imports(&self) {
        self.poke(
            "UPDATE components SET imports = NULL",
            "UPDATE components SET imports = NULL",
            None,
        )
        .await;
    }

    /// Why a non-running execution waits (`waiting_for_budget`…).
    pub async fn blocking_reason(&self, execution: ExecutionId) -> String {
        self.read_text(
            "SELECT blocking_reason FROM executions WHERE execution_id = $1",
            "SELECT blocking_reason FROM executions WHERE execution_id = ?",
            execution,
        )
        .await
    }

    /// The usage the execution's first attempt reported, per dimension.
    pub async fn attempt_usage(&self, execution: ExecutionId) -> serde_json::Value {
        let text = self
            .read_text(
                "SELECT usage::text FROM attempts WHERE execution_id = $1 AND attempt_index = 1",
                "SELECT usage FROM attempts WHERE execution_id = ? AND attempt_index = 1",
                execution,
            )
            .await;
        serde_json::from_str(&text).expect("usage is JSON")
    }

    /// Move the tenant's attempt starts `by` into the past (the start-rate
    /// window counts them).
    pub async fn age_attempt_starts(&self, tenant: TenantId, by: std::time::Duration) {
        let ms = by.as_millis();
        self.poke(
            &format!(
                "UPDATE attempts SET started_at = started_at - interval '{ms} milliseconds' \
                 WHERE tenant_id = $1"
            ),
            &format!("UPDATE attempts SET started_at = started_at - {ms} WHERE tenant_id = ?"),
            Some(tenant.as_uuid()),
        )
        .await;
    }

    /// Make every budget's interval reset due now.
    pub async fn make_budget_resets_due(&self) {
        self.poke(
            "UPDATE budgets SET next_reset_at = now() - interval '1 second'",
            "UPDATE budgets SET next_reset_at = next_reset_at - 3600000",
            None,
        )
        .await;
    }

    /// Make every suspension's timeout due now.
    pub async fn expire_suspension_timeouts(&self) {
        self.poke(
            "UPDATE executions SET suspension_timeout_at = now() - interval '1 second' \
             WHERE suspension_timeout_at IS NOT NULL",
            "UPDATE executions SET suspension_timeout_at = suspension_timeout_at - 3600000 \
             WHERE suspension_timeout_at IS NOT NULL",
            None,
        )
        .await;
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
        all_events(&self.engine, tenant).await
    }

    /// A backend over one connection of its own (and one for its claims), so
    /// a test can read that connection's session state (its prepared
    /// statements and their plans; the claim's through `claim_connections`).
    pub async fn one_connection_backend(&self) -> (Connections, PgBackend) {
        let options = PgBackend::connect_options(self.pg_url()).expect("test database url");
        let backend = PgBackend::with_options(options, 1);
        (backend.pool().clone(), backend)
    }

    /// A backend for reading query plans: `table` analysed first, so the
    /// planner sees the rows a test wrote, then a backend of one connection.
    pub async fn analysed_backend(&self, table: &str) -> PgBackend {
        let analyse = format!("ANALYZE {table}");
        sqlx::query(&analyse).execute(self.pg()).await.unwrap();
        self.one_connection_backend().await.1
    }

    /// Store a component blob under `digest` by hand, past the engine (which
    /// computes every digest itself): what the schema alone allows.
    pub async fn store_blob_raw(&self, tenant: TenantId, digest: &str) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO component_blobs (tenant_id, digest, wasm) VALUES ($1, $2, $3)";
        let wasm: &[u8] = b"\0asm";
        match &self.store {
            Stored::Postgres { pool, .. } => {
                let query = sqlx::query(sql).bind(tenant).bind(digest).bind(wasm);
                query.execute(pool).await.map(|_| ())
            }
            Stored::Sqlite { pool, .. } => {
                let query = sqlx::query(sql).bind(tenant).bind(digest).bind(wasm);
                query.execute(pool).await.map(|_| ())
            }
        }
    }

    /// Rows in a table, for asserting that a rejected request wrote nothing.
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        match &self.store {
            Stored::Postgres { pool, .. } => sqlx::query_scalar(&sql).fetch_one(pool).await,
            Stored::Sqlite { pool, .. } => sqlx::query_scalar(&sql).fetch_one(pool).await,
        }
        .expect("count rows")
    }

    /// Completion events written, every tenant's: Postgres stores a
    /// statement's as one row (and events of earlier builds a row each),
    /// SQLite a row each.
    pub async fn completion_events_written(&self) -> i64 {
        match &self.store {
            Stored::Postgres { pool, .. } => {
                sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM completion_events) + coalesce( \
                     (SELECT sum(cardinality(execution_ids)) FROM completion_event_batches), \
                     0)::bigint",
                )
                .fetch_one(pool)
                .await
            }
            Stored::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT count(*) FROM completion_events")
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count completion events")
    }

    /// Move the database clock's view of a lease into the past, so expiry can be
    /// tested without sleeping for a whole TTL.
    pub async fn expire_lease(&self, execution: ExecutionId) {
        self.poke(
            "UPDATE executions SET lease_expires_at = now() - interval '1 second' \
             WHERE execution_id = $1",
            "UPDATE executions SET lease_expires_at = lease_expires_at - 3600000 \
             WHERE execution_id = ?",
            Some(execution.as_uuid()),
        )
        .await;
    }

    /// Move every running attempt's timeout `by` into the past (as if the
    /// attempts had run that much longer).
    pub async fn age_attempt_timeouts(&self, by: std::time::Duration) {
        let ms = by.as_millis();
        self.poke(
            &format!(
                "UPDATE executions SET attempt_timeout_at = \
                 attempt_timeout_at - interval '{ms} milliseconds'"
            ),
            &format!("UPDATE executions SET attempt_timeout_at = attempt_timeout_at - {ms}"),
            None,
        )
        .await;
    }

    /// Make every lease renewal fail with a storage error (a trigger that
    /// refuses any update extending a lease) until called with `false`:
    /// what a database that is up for everything else, but refuses these
    /// writes, looks like to a worker.
    pub async fn refuse_lease_renewals(&self, refuse: bool) {
        if !refuse {
            self.poke(
                "DROP TRIGGER test_refuse_renewal ON executions",
                "DROP TRIGGER test_refuse_renewal",
                None,
            )
            .await;
            return;
        }
        self.poke(
            "CREATE OR REPLACE FUNCTION test_refuse_renewal() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'renewals refused by the test'; END $$",
            "SELECT 1",
            None,
        )
        .await;
        self.poke(
            "CREATE TRIGGER test_refuse_renewal BEFORE UPDATE ON executions FOR EACH ROW \
             WHEN (NEW.lease_expires_at > OLD.lease_expires_at) \
             EXECUTE FUNCTION test_refuse_renewal()",
            "CREATE TRIGGER test_refuse_renewal BEFORE UPDATE OF lease_expires_at ON executions \
             WHEN NEW.lease_expires_at > OLD.lease_expires_at \
             BEGIN SELECT RAISE(ABORT, 'renewals refused by the test'); END",
            None,
        )
        .await;
    }

    /// Make every delete of the named tenants' executions fail (a row that
    /// breaks a statement: what one tenant's bad data, or a lock timeout on
    /// its rows, does to a pass over every tenant).
    pub async fn refuse_execution_deletes(&self, tenant_names: &[&str]) {
        self.refuse_execution_writes("DELETE", tenant_names).await;
    }

    /// Make every update of the named tenants' executions fail, as
    /// `refuse_execution_deletes` does deletes.
    pub async fn refuse_execution_updates(&self, tenant_names: &[&str]) {
        self.refuse_execution_writes("UPDATE", tenant_names).await;
    }

    async fn refuse_execution_writes(&self, write: &str, tenant_names: &[&str]) {
        let names = tenant_names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let name = format!("test_refuse_{}", write.to_lowercase());
        self.poke(
            &format!(
                "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN \
                 IF OLD.tenant_id IN (SELECT tenant_id FROM tenants WHERE name IN ({names})) \
                 THEN RAISE EXCEPTION '{write}s refused by the test'; END IF; \
                 RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END; END $$"
            ),
            "SELECT 1",
            None,
        )
        .await;
        self.poke(
            &format!(
                "CREATE TRIGGER {name} BEFORE {write} ON executions FOR EACH ROW \
                 EXECUTE FUNCTION {name}()"
            ),
            &format!(
                "CREATE TRIGGER {name} BEFORE {write} ON executions \
                 WHEN OLD.tenant_id IN (SELECT tenant_id FROM tenants WHERE name IN ({names})) \
                 BEGIN SELECT RAISE(ABORT, '{write}s refused by the test'); END"
            ),
            None,
        )
        .await;
    }

    /// Set a schedule's next fire time to `at` (a fire time in the past: what
    /// a schedule finds when its host was down since then).
    pub async fn rewind_schedule(&self, schedule: ScheduleId, at: chrono::DateTime<chrono::Utc>) {
        self.poke(
            &format!(
                "UPDATE schedules SET next_fire_at = '{}'::timestamptz WHERE schedule_id = $1",
                at.to_rfc3339()
            ),
            &format!(
                "UPDATE schedules SET next_fire_at = {} WHERE schedule_id = ?",
                at.timestamp_millis()
            ),
            Some(schedule.as_uuid()),
        )
        .await;
    }

    /// Make a delayed or backing-off execution due now.
    pub async fn make_due(&self, execution: ExecutionId) {
        self.poke(
            "UPDATE executions SET eligible_at = now() - interval '1 millisecond' \
             WHERE execution_id = $1",
            "UPDATE executions SET eligible_at = CAST(unixepoch('subsec') * 1000 AS INTEGER) - 1 \
             WHERE execution_id = ?",
            Some(execution.as_uuid()),
        )
        .await;
    }
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

/// Every event of stream `E` the tenant has, read from the start: waits
/// (up to 10 s) while the database withholds some behind a transaction
/// still open, as a follower would.
pub async fn all_events<E: Subscription>(engine: &Engine, tenant: TenantId) -> Vec<E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut all, mut after) = (Vec::new(), EventCursor::START);
    loop {
        let batch = E::read(engine, tenant, after, 1_000)
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
