//! Engine scenarios, each written once and run against both backends
//! (`on_both_backends!`): a real Postgres and a real SQLite file. The few
//! that test what only one backend has (query plans, connection handling,
//! the SQL of the schema) say so in their names.

#[macro_use]
extern crate flowfabric_tests;

mod batched;
mod budget_usage;
mod budgets;
mod children;
mod claim;
mod concurrency;
mod concurrency_slots;
mod connections;
mod errors;
mod event_rows;
mod events;
mod events_filtered;
mod flow_cancel;
mod flow_edges;
mod flow_revive;
mod flows;
mod grants;
mod hardening;
mod held_keys;
mod insights;
mod lifecycle;
mod retention;
mod rules;
mod scanners;
mod schedules;
mod schema;
mod steps;
mod streams;
mod suspension;
mod tenancy;
mod upgrade;
mod waitpoint_keys;

use std::time::Duration;

use flowfabric::model::{ClaimRequest, ClaimedExecution, NewExecution, TenantId, DEFAULT_LANE};
use flowfabric::Engine;
use flowfabric_tests::{Store, TestDb};

pub fn request(limit: u32) -> ClaimRequest {
    ClaimRequest {
        worker_id: "test-worker".into(),
        worker_instance: "instance-1".into(),
        lanes: vec![DEFAULT_LANE.into()],
        capabilities: vec![],
        limit,
        lease_ttl: Duration::from_secs(30),
        exclude_tenants: Vec::new(),
    }
}

pub async fn claim_one(engine: &Engine) -> ClaimedExecution {
    let mut claimed = engine.claim(&request(1)).await.expect("claim");
    assert_eq!(claimed.len(), 1, "expected exactly one claimable execution");
    claimed.remove(0)
}

pub async fn claim_none(engine: &Engine) {
    let claimed = engine.claim(&request(10)).await.expect("claim");
    assert!(
        claimed.is_empty(),
        "expected nothing claimable, got {claimed:?}"
    );
}

pub async fn setup() -> (TestDb, TenantId) {
    setup_on(Store::Postgres).await
}

pub async fn setup_on(store: Store) -> (TestDb, TenantId) {
    let db = TestDb::on(store).await;
    let tenant = db.tenant("acme").await;
    (db, tenant)
}

/// [`setup_on`] with the engine's limits as `adjust` changes them.
pub async fn setup_with(
    store: Store,
    adjust: impl FnOnce(&mut flowfabric::engine::Limits),
) -> (TestDb, TenantId) {
    let db = TestDb::on_with(store, adjust).await;
    let tenant = db.tenant("acme").await;
    (db, tenant)
}

pub fn task(input: &str) -> NewExecution {
    NewExecution::new("echo", input.as_bytes())
}

/// Until a session of the test's database waits on a lock.
pub async fn wait_for_a_lock_wait(db: &TestDb) {
    let waiting = "SELECT count(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(db.pg())
        .await
        .unwrap()
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "nothing waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
