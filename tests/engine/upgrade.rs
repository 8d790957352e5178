//! Upgrading a database the previous build migrated: the event outboxes
//! moved into rows of events (Postgres migrations 0038 and 0040) keep
//! every event written before, in order, with later events after them; the
//! executions table copied in a new column order (migration 0046) keeps
//! every row, and a process of the previous build still running keeps
//! working on the connections it had.

use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::Backend;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::{CompletionEvent, EventCursor, ExecutionId, LeaseEvent, TenantId};
use flowfabric_tests::{all_events, ScratchDir, TestDb};
use sqlx::postgres::PgPoolOptions;

use crate::{claim_one, task};

/// The last migration of the build before the outboxes' rows of events.
const BEFORE_EVENT_ROWS: i64 = 37;

/// The last migration of the build before the executions table's copy.
const BEFORE_THE_EXECUTIONS_COPY: i64 = 45;

/// A new database on the test server, migrated as a previous build left
/// it: the migrations up to `previous_build`, run from a copy of them.
async fn migrated_by_the_previous_build(server_db: &TestDb, previous_build: i64) -> String {
    let url = server_db.pg_url();
    let server = &url[..url.rfind('/').unwrap()];
    // Named as the harness names its databases, so it is cleaned up with them.
    let name = format!("t_{}", uuid::Uuid::now_v7().simple());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE template0"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{server}/{name}");

    let dir = ScratchDir::new("migrations");
    std::fs::create_dir_all(dir.path()).unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: Option<i64> = file.split('_').next().and_then(|v| v.parse().ok());
        if file.ends_with(".sql") && version.is_some_and(|v| v <= previous_build) {
            std::fs::copy(&path, dir.path().join(&file)).unwrap();
        }
    }
    let before = sqlx::migrate::Migrator::new(dir.path().to_owned())
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    before.run(&pool).await.unwrap();
    pool.close().await;
    url
}

/// Events the previous build wrote (a completion and two lease changes,
/// its outbox rows of one event each) read back after the upgrade, before
/// the events this build writes; every id stays unique and growing.
#[tokio::test]
async fn events_written_before_the_upgrade_read_back_first() {
    let server = TestDb::new().await;
    let url = migrated_by_the_previous_build(&server, BEFORE_EVENT_ROWS).await;
    let old = PgBackend::connect(&url, 4).await.unwrap();
    let pool = old.pool().clone();
    let tenant = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tenants (tenant_id, name) VALUES ($1, 'upgraded')")
        .bind(tenant)
        .execute(&pool)
        .await
        .unwrap();
    let earlier = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome) \
         VALUES ($1, $2, 1, 'success')",
    )
    .bind(tenant)
    .bind(earlier)
    .execute(&pool)
    .await
    .unwrap();
    for kind in ["acquired", "released"] {
        sqlx::query(
            "INSERT INTO lease_events (tenant_id, execution_id, attempt_index, lease_epoch, \
                 kind, lease_expires_at, phase) VALUES ($1, $2, 1, 1, $3, now(), 'active')",
        )
        .bind(tenant)
        .bind(earlier)
        .bind(kind)
        .execute(&pool)
        .await
        .unwrap();
    }

    // This build migrates the rest and runs an execution of its own.
    old.migrate().await.unwrap();
    let backend: std::sync::Arc<dyn Backend> = std::sync::Arc::new(old);
    let limits = Limits {
        require_component: false,
        ..Default::default()
    };
    let engine = Engine::new(backend, limits);
    let t: TenantId = tenant.into();
    let id = engine.create(t, task("after")).await.unwrap().execution_id;
    let c = claim_one(&engine).await;
    assert_eq!(c.lease.execution_id, id);
    engine.complete(&c.lease, b"").await.unwrap();

    let completions: Vec<CompletionEvent> = all_events(&engine, t).await;
    let ended: Vec<_> = completions
        .iter()
        .map(|ev| ev.execution_id.as_uuid())
        .collect();
    assert_eq!(ended, [earlier, id.as_uuid()]);
    in_order(&completions, |ev: &CompletionEvent| {
        (ev.cursor, ev.event_id)
    });
    let leases: Vec<LeaseEvent> = all_events(&engine, t).await;
    let told: Vec<_> = leases
        .iter()
        .map(|ev| (ev.execution_id.as_uuid(), ev.kind.as_str()))
        .collect();
    assert_eq!(
        told,
        [
            (earlier, "acquired"),
            (earlier, "released"),
            (id.as_uuid(), "acquired"),
            (id.as_uuid(), "released")
        ]
    );
    in_order(&leases, |ev: &LeaseEvent| (ev.cursor, ev.event_id));
    let after_old = engine
        .completion_events(t, completions[0].cursor, 10)
        .await
        .unwrap();
    assert_eq!(after_old.events, completions[1..]);
}

/// A process of the previous build keeps running while this one migrates
/// (`docs/operations.md`). Migration 0046 copies `executions` into a new
/// column order and drops the old table: the old process's statements,
/// prepared on its connections against the old table, are planned again
/// against the new one and run as before (every statement names its
/// columns, so no result changes shape), and every row reads back as it was.
#[tokio::test]
async fn the_executions_copy_keeps_rows_and_the_previous_builds_statements() {
    let server = TestDb::new().await;
    let url = migrated_by_the_previous_build(&server, BEFORE_THE_EXECUTIONS_COPY).await;
    let limits = Limits {
        require_component: false,
        ..Default::default()
    };
    let old = Engine::new(
        std::sync::Arc::new(PgBackend::connect(&url, 4).await.unwrap()),
        limits.clone(),
    );
    let t = old.create_tenant("upgraded").await.unwrap().tenant_id;
    let done = old.create(t, task("done")).await.unwrap().execution_id;
    let running = old.create(t, task("running")).await.unwrap().execution_id;
    let waiting = old.create(t, task("waiting")).await.unwrap().execution_id;
    let first = claim_one(&old).await;
    assert_eq!(first.lease.execution_id, done);
    old.complete(&first.lease, b"first").await.unwrap();
    let second = claim_one(&old).await;
    assert_eq!(second.lease.execution_id, running);
    let before: Vec<String> = rows_of(&old, t, [done, running, waiting]).await;
    let position = "SELECT attnum FROM pg_attribute \
                    WHERE attrelid = 'executions'::regclass AND attname = 'retry_count'";
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let old_position: i16 = sqlx::query_scalar(position).fetch_one(&pool).await.unwrap();

    let new = PgBackend::connect(&url, 4).await.unwrap();
    new.migrate().await.unwrap();
    let new_position: i16 = sqlx::query_scalar(position).fetch_one(&pool).await.unwrap();
    assert!(
        new_position < old_position,
        "{old_position} -> {new_position}"
    );

    // The old process, on the connections it had, through its prepared statements.
    assert_eq!(rows_of(&old, t, [done, running, waiting]).await, before);
    old.complete(&second.lease, b"second").await.unwrap();
    let third = claim_one(&old).await;
    assert_eq!(third.lease.execution_id, waiting);
    old.complete(&third.lease, b"third").await.unwrap();
    // And this build, on the same rows.
    let engine = Engine::new(std::sync::Arc::new(new), limits);
    let mut results = Vec::new();
    for id in [done, running, waiting] {
        results.push(engine.get(t, id).await.unwrap().result);
    }
    let expected: Vec<Option<Vec<u8>>> = [&b"first"[..], b"second", b"third"]
        .into_iter()
        .map(|r| Some(r.to_vec()))
        .collect();
    assert_eq!(results, expected);
}

/// Each execution as read back, for comparing.
async fn rows_of(engine: &Engine, t: TenantId, ids: [ExecutionId; 3]) -> Vec<String> {
    let mut rows = Vec::new();
    for id in ids {
        rows.push(format!("{:?}", engine.get(t, id).await.unwrap()));
    }
    rows
}

/// Cursors and ids grow from each event to the next.
fn in_order<E>(events: &[E], position: impl Fn(&E) -> (EventCursor, i64)) {
    assert!(events.windows(2).all(|w| position(&w[0]) < position(&w[1])));
    assert!(events
        .windows(2)
        .all(|w| position(&w[0]).1 < position(&w[1]).1));
}
