use flowfabric_tests::Store;
use std::collections::HashSet;
use std::time::Duration;

use flowfabric::model::{
    ClaimRequest, ConcurrencyLimit, ConcurrencyScope, KeyLimit, NewExecution, TenantLimits,
};

use crate::{claim_none, claim_one, request, setup, setup_on, task};

async fn priority_then_age_ordering(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut ids = Vec::new();
    for (input, priority) in [("low", -3), ("old-high", 5), ("mid", 0), ("new-high", 5)] {
        let mut new = task(input);
        new.priority = priority;
        ids.push(e.create(t, new).await.unwrap().execution_id);
    }
    let claimed = e.claim(&request(10)).await.unwrap();
    let order: Vec<_> = claimed.iter().map(|c| c.lease.execution_id).collect();
    assert_eq!(order, [ids[1], ids[3], ids[2], ids[0]]);
}

async fn capability_subset_match(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut gpu = task("needs gpu");
    gpu.required_capabilities = vec!["gpu".into(), "cuda12".into()];
    let gpu_id = e.create(t, gpu).await.unwrap().execution_id;

    claim_none(e).await;
    let partial = ClaimRequest {
        capabilities: vec!["gpu".into()],
        ..request(10)
    };
    assert!(
        e.claim(&partial).await.unwrap().is_empty(),
        "missing one capability"
    );
    let superset = ClaimRequest {
        capabilities: vec!["cuda12".into(), "gpu".into(), "x86".into()],
        ..request(10)
    };
    let got = e.claim(&superset).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.execution_id, gpu_id);

    // No requirement: any worker.
    e.create(t, task("plain")).await.unwrap();
    assert_eq!(e.claim(&superset).await.unwrap().len(), 1);
}

async fn lanes_partition_work(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("x");
    new.lane = "video".into();
    e.create(t, new).await.unwrap();
    claim_none(e).await;
    let video = ClaimRequest {
        lanes: vec!["default".into(), "video".into()],
        ..request(10)
    };
    assert_eq!(e.claim(&video).await.unwrap().len(), 1);
}

async fn concurrent_claimers_never_claim_one_execution_twice(store: Store) {
    let (db, t) = setup_on(store).await;
    let total = 600;
    let batch: Vec<NewExecution> = (0..total).map(|i| task(&i.to_string())).collect();
    for chunk in batch.chunks(200) {
        db.engine.create_batch(t, chunk).await.unwrap();
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let engine = db.engine.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let req = ClaimRequest {
                    worker_instance: format!("w{w}"),
                    ..request(7)
                };
                let claimed = engine.claim(&req).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                for c in claimed {
                    engine.complete(&c.lease, b"").await.unwrap();
                    mine.push(c.lease.execution_id);
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut claims = 0;
    for w in workers {
        for id in w.await.unwrap() {
            claims += 1;
            assert!(seen.insert(id), "execution {id} was claimed twice");
        }
    }
    assert_eq!((claims, seen.len()), (total, total));
    assert_eq!(db.count("attempts").await, total as i64, "one attempt each");
    assert_eq!(db.completion_events_written().await, total as i64);
}

async fn claim_is_fair_across_tenants(store: Store) {
    let db = flowfabric_tests::TestDb::on(store).await;
    let big = db.tenant("big").await;
    let small = db.tenant("small").await;
    let backlog: Vec<NewExecution> = (0..300).map(|i| task(&i.to_string())).collect();
    db.engine.create_batch(big, &backlog).await.unwrap();
    db.engine
        .create_batch(small, &[task("a"), task("b")])
        .await
        .unwrap();

    let claimed = db.engine.claim(&request(4)).await.unwrap();
    let small_claimed = claimed
        .iter()
        .filter(|c| c.lease.tenant_id == small)
        .count();
    assert_eq!(
        small_claimed, 2,
        "the small tenant's work starts in the first batch"
    );
}

async fn notify_wakes_a_waiting_claimer(store: Store) {
    let (db, t) = setup_on(store).await;
    let mut signal = db.engine.work_signal().await.unwrap();
    signal.borrow_and_update();
    db.engine.create(t, task("wake")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signal.changed())
        .await
        .expect("a NOTIFY within 5 s")
        .unwrap();
    claim_one(&db.engine).await;
}

#[tokio::test]
async fn claim_stays_on_its_index_with_a_large_backlog() {
    let (db, t) = setup().await;
    let backlog: Vec<NewExecution> = (0..1_000).map(|i| task(&i.to_string())).collect();
    for chunk in backlog.chunks(500) {
        db.engine.create_batch(t, chunk).await.unwrap();
    }
    let backend = flowfabric::backend::postgres::PgBackend::connect(db.pg_url(), 4)
        .await
        .unwrap();
    for analyzed in [false, true] {
        if analyzed {
            sqlx::query("ANALYZE").execute(db.pg()).await.unwrap();
        }
        // Both shapes: lean while no tenant has a limit, full once one has.
        for admission in [false, true] {
            let limits = TenantLimits {
                max_running: admission.then_some(10_000),
                ..TenantLimits::default()
            };
            db.engine.set_tenant_limits(t, limits).await.unwrap();
            for limit in [1, 100] {
                let plan = backend.explain_claim(&request(limit)).await.unwrap();
                let shown = format!("limit {limit}, analyzed: {analyzed}, admission: {admission}");
                // Every shape checks whether admission is needed; only the
                // admission shape blocks what an exhausted budget covers.
                assert_eq!(
                    plan.contains("CTE blocked"),
                    admission,
                    "claim ({shown}) has the wrong shape:\n{plan}"
                );
                // The SKIP LOCKED probe must lock rows straight off the ordered
                // index. (The regression this guards against was LockRows ->
                // Sort -> Seq Scan. The UPDATE's join to the picked rows may
                // hash-join a small table.)
                let lines: Vec<&str> = plan.lines().collect();
                let lock = lines
                    .iter()
                    .position(|l| l.contains("LockRows"))
                    .expect("a LockRows node");
                assert!(
                    lines[lock + 1].contains("Index Scan using executions_claim_idx"),
                    "claim ({shown}) left its index:\n{plan}"
                );
                // Planned without knowing the limit (as the cached generic plan
                // is), the updates must still find their rows by key.
                assert!(
                    !plan.contains("Seq Scan on executions"),
                    "claim ({shown}) scans executions:\n{plan}"
                );
            }
        }
    }
}

/// A claim locks about as many rows as it takes, however many tenants have
/// work. A row it locked and did not take keeps the claim's transaction id in
/// `xmax`, so runnable rows with one were locked for nothing.
#[tokio::test]
async fn a_claim_locks_about_as_many_rows_as_it_takes() {
    let db = flowfabric_tests::TestDb::new().await;
    for i in 0..20 {
        let tenant = db.tenant(&format!("t{i}")).await;
        let backlog: Vec<NewExecution> = (0..5).map(|j| task(&j.to_string())).collect();
        db.engine.create_batch(tenant, &backlog).await.unwrap();
    }
    let mut tenants = HashSet::new();
    for limit in [1, 4, 40] {
        let claimed = db.engine.claim(&request(limit)).await.unwrap();
        assert_eq!(claimed.len(), limit as usize, "every tenant has work left");
        tenants.extend(claimed.iter().map(|c| c.lease.tenant_id));
    }
    assert_eq!(tenants.len(), 20, "a claim of 40 reached every tenant");
    let locked_for_nothing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM executions \
         WHERE lifecycle_phase = 'runnable' AND xmax::text <> '0'",
    )
    .fetch_one(db.pg())
    .await
    .unwrap();
    assert_eq!(locked_for_nothing, 0, "rows locked and left by the claims");
}

/// The claim's cost estimates are far above its real work, enough to trigger
/// JIT compilation (about two seconds a claim); engine connections turn it off.
#[tokio::test]
async fn engine_connections_never_jit_compile() {
    let db = flowfabric_tests::TestDb::new().await;
    let jit: String = sqlx::query_scalar("SELECT current_setting('jit')")
        .fetch_one(db.pg())
        .await
        .unwrap();
    assert_eq!(jit, "off");
}

/// The claim is planned once on a connection, for no values of its own
/// (see `claim.rs`), so claims skip planning, which costs more than running
/// them. Both shapes.
#[tokio::test]
async fn the_claim_is_planned_once_per_connection() {
    use flowfabric::backend::prelude::*;

    let (db, t) = setup().await;
    let backlog: Vec<NewExecution> = (0..40).map(|i| task(&i.to_string())).collect();
    db.engine.create_batch(t, &backlog).await.unwrap();
    let (_, backend) = db.one_connection_backend().await;
    let one_connection = backend.claim_connections().clone();
    for admission in [false, true] {
        let limits = TenantLimits {
            max_running: admission.then_some(10_000),
            ..TenantLimits::default()
        };
        db.engine.set_tenant_limits(t, limits).await.unwrap();
        for _ in 0..15 {
            assert_eq!(backend.claim(&request(1)).await.unwrap().len(), 1);
        }
    }
    let plans: Vec<(bool, i64, i64)> = sqlx::query_as(
        "SELECT statement LIKE '%budget_dimensions%', generic_plans, custom_plans \
         FROM pg_prepared_statements \
         WHERE statement LIKE '%WITH chosen AS%' AND statement NOT LIKE '%pg_prepared%' \
         ORDER BY 1",
    )
    .fetch_all(&one_connection)
    .await
    .unwrap();
    assert_eq!(plans.len(), 2, "one prepared claim per shape: {plans:?}");
    for (full, generic, custom) in plans {
        assert!(
            generic >= 15 && custom == 0,
            "the {} claim: {generic} calls on the generic plan, {custom} planned for their values",
            if full { "full" } else { "lean" }
        );
    }
}

/// The claim keeps its generic plan when the statistics move under it. A
/// new `ANALYZE` replans it, and Postgres then weighs the new generic plan
/// against the custom plans of the calls before: planned for a backlog of
/// 40, they look far cheaper than the plan for 20,000, and Postgres would
/// plan every claim anew until enough dearer custom plans had moved their
/// average (hundreds of claims, a millisecond and more each). The claim's
/// connections ask for generic plans, so no call is planned for its values.
#[tokio::test]
async fn the_claim_is_not_replanned_when_the_backlog_grows() {
    use flowfabric::backend::prelude::*;

    let (db, t) = setup().await;
    let backlog: Vec<NewExecution> = (0..40).map(|i| task(&i.to_string())).collect();
    db.engine.create_batch(t, &backlog).await.unwrap();
    sqlx::query("ANALYZE executions")
        .execute(db.pg())
        .await
        .unwrap();
    let (_, backend) = db.one_connection_backend().await;
    let one_connection = backend.claim_connections().clone();
    for _ in 0..10 {
        assert_eq!(backend.claim(&request(1)).await.unwrap().len(), 1);
    }
    for chunk in 0..40 {
        let more: Vec<NewExecution> = (0..500).map(|i| task(&format!("{chunk}-{i}"))).collect();
        db.engine.create_batch(t, &more).await.unwrap();
    }
    sqlx::query("ANALYZE executions")
        .execute(db.pg())
        .await
        .unwrap();
    for _ in 0..20 {
        assert_eq!(backend.claim(&request(1)).await.unwrap().len(), 1);
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%WITH chosen AS%' AND statement NOT LIKE '%pg_prepared%'",
    )
    .fetch_one(&one_connection)
    .await
    .unwrap();
    assert_eq!(
        (generic, custom),
        (30, 0),
        "30 claims: generic plans, custom plans"
    );
}

/// A limit set between two claims binds the very next one: Postgres claims
/// in the shape the last claim found needed, and that shape must not claim
/// past a limit set since (a tenant's running limit, then a key's).
async fn a_limit_set_between_claims_binds_the_very_next_claim(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..3 {
        e.create(t, task(&format!("plain-{i}"))).await.unwrap();
    }
    assert_eq!(e.claim(&request(1)).await.unwrap().len(), 1);
    let one_running = TenantLimits {
        max_running: Some(1),
        ..TenantLimits::default()
    };
    e.set_tenant_limits(t, one_running).await.unwrap();
    assert!(
        e.claim(&request(5)).await.unwrap().is_empty(),
        "the tenant's one running slot is taken"
    );
    e.set_tenant_limits(t, TenantLimits::default())
        .await
        .unwrap();
    assert_eq!(e.claim(&request(5)).await.unwrap().len(), 2);
    assert_eq!(
        e.claim(&request(5)).await.unwrap().len(),
        0,
        "nothing left to claim"
    );

    let one_per_key = ConcurrencyLimit {
        scope: ConcurrencyScope::Kind,
        name: "echo".into(),
        limit: KeyLimit {
            max_running: 1,
            max_starts: None,
            window_ms: None,
        },
    };
    e.create(t, task("plain-3")).await.unwrap();
    assert_eq!(e.claim(&request(5)).await.unwrap().len(), 1);
    e.set_concurrency_limit(t, one_per_key).await.unwrap();
    for _ in 0..2 {
        let keyed = NewExecution {
            concurrency_key: Some("customer".into()),
            ..task("keyed")
        };
        e.create(t, keyed).await.unwrap();
    }
    assert_eq!(
        e.claim(&request(5)).await.unwrap().len(),
        1,
        "one of the key's two runs at a time"
    );
}

on_both_backends!(
    a_limit_set_between_claims_binds_the_very_next_claim,
    priority_then_age_ordering,
    capability_subset_match,
    lanes_partition_work,
    concurrent_claimers_never_claim_one_execution_twice,
    claim_is_fair_across_tenants,
    notify_wakes_a_waiting_claimer,
);
