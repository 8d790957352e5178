//! A hostile guest against the limits on what it may grow: its result, its
//! frames, its children and flow, its waitpoints and its usage counters.
//! Each limit refuses with a typed error the guest sees (or, for a result,
//! fails the attempt at once and for good), on both backends.

use std::time::Duration;

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::{FailureClass, PublicState, TenantLimits};

use flowfabric_tests::Store;

use crate::{config, text, Env};

async fn an_oversized_result_fails_the_attempt_at_once_and_for_good(store: Store) {
    let env = Env::on_with(store, |l| l.max_result_bytes = 64 << 10).await;
    let pool = env.pool(config(2));
    // Retries allowed, and a 5 s lease: before, the refused result was
    // dropped, the lease expired and the guest ran again and again.
    let id = env.submit("testkit", "big-result:128", 3).await;
    let done = env.wait_terminal_within(id, Duration::from_secs(4)).await;
    assert_eq!(done.state, PublicState::Failed);
    let failure = done.last_failure.expect("a failure");
    assert_eq!(failure.class, FailureClass::LimitExceeded, "{failure:?}");
    assert!(failure.message.contains("result"), "{}", failure.message);
    assert_eq!(
        (done.attempt_index, done.reclaim_count),
        (1, 0),
        "one attempt"
    );

    // A tenant's own lower limit applies the same way.
    env.db
        .engine
        .set_tenant_limits(
            env.tenant,
            TenantLimits {
                max_result_bytes: Some(1_024),
                ..TenantLimits::default()
            },
        )
        .await
        .unwrap();
    let id = env.submit("testkit", "big-result:2", 3).await;
    let done = env.wait_terminal_within(id, Duration::from_secs(4)).await;
    assert_eq!(
        done.last_failure.map(|f| f.class),
        Some(FailureClass::LimitExceeded)
    );
    let small = env.submit("testkit", "echo:fits", 0).await;
    assert_eq!(env.wait_terminal(small).await.state, PublicState::Completed);
    pool.shutdown().await;
}

async fn frames_stop_at_the_attempts_byte_cap(store: Store) {
    let env = Env::on_with(store, |l| l.max_frame_bytes_per_attempt = 256 << 10).await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "frame-bytes:100:64", 0).await;
    let done = env.wait_terminal(id).await;
    let report = text(&done.result);
    assert!(report.starts_with("appended=4 "), "{report}");
    assert!(
        report.contains("LimitExceeded") && report.contains("max_frame_bytes_per_attempt"),
        "{report}"
    );
    let frames = env.first_attempt_frames(id, 1_000).await;
    let bytes: usize = frames.iter().map(|f| f.payload.len()).sum();
    assert!(bytes <= 256 << 10, "{bytes} bytes kept");
    pool.shutdown().await;
}

async fn children_and_flow_members_stop_at_their_caps(store: Store) {
    let env = Env::on_with(store, |l| {
        l.max_children_per_execution = 5;
        l.max_flow_members = 100;
    })
    .await;
    let pool = env.pool(config(4));
    let id = env.submit("testkit", "spawn-many:50", 0).await;
    let report = text(&env.wait_terminal(id).await.result);
    assert!(report.starts_with("spawned=5 "), "{report}");
    assert!(report.contains("max_children_per_execution"), "{report}");

    // The flow's cap counts its root: three members leave room for two.
    env.db
        .engine
        .set_tenant_limits(
            env.tenant,
            TenantLimits {
                max_flow_members: Some(3),
                ..TenantLimits::default()
            },
        )
        .await
        .unwrap();
    let id = env.submit("testkit", "spawn-many:50", 0).await;
    let done = env.wait_terminal(id).await;
    let report = text(&done.result);
    assert!(report.starts_with("spawned=2 "), "{report}");
    assert!(report.contains("max_flow_members"), "{report}");
    let flow = env
        .db
        .engine
        .backend()
        .get_flow(env.tenant, done.flow_id.unwrap())
        .await
        .unwrap();
    assert_eq!(flow.members.len(), 3);
    pool.shutdown().await;
}

async fn waitpoints_stop_at_their_cap_and_list_in_pages(store: Store) {
    let env = Env::on_with(store, |l| l.max_waitpoints_per_execution = 10).await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "waitpoints:50", 0).await;
    let report = text(&env.wait_terminal(id).await.result);
    assert!(report.starts_with("created=10 "), "{report}");
    assert!(report.contains("max_waitpoints_per_execution"), "{report}");

    let engine = &env.db.engine;
    let (mut after, mut pages, mut seen) = (None, Vec::new(), Vec::new());
    loop {
        let page = engine
            .list_waitpoints(env.tenant, id, after, 4)
            .await
            .unwrap();
        pages.push(page.len());
        seen.extend(page.iter().map(|w| w.waitpoint.key.clone()));
        match page.last() {
            Some(last) if page.len() == 4 => after = Some(last.waitpoint.waitpoint_id),
            _ => break,
        }
    }
    assert_eq!(pages, [4, 4, 2]);
    let want: Vec<String> = (1..=10).map(|i| format!("w{i}")).collect();
    assert_eq!(seen, want, "in creation order, each once");
    pool.shutdown().await;
}

async fn a_usage_counter_overflow_is_a_typed_refusal(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "overflow:tokens", 0).await;
    let done = env.wait_terminal(id).await;
    let report = text(&done.result);
    let (first, second) = report.split_once('\n').expect("two outcomes");
    assert_eq!(first, "ok");
    assert!(
        second.contains("LimitExceeded") && second.contains("usage counter"),
        "{second}"
    );
    for leak in ["SQL", "INTEGER", "bigint", "REAL", "out of range"] {
        assert!(!second.contains(leak), "storage detail leaked: {second}");
    }
    pool.shutdown().await;
}

async fn nested_children_without_keys_do_not_collide(store: Store) {
    let env = Env::on(store).await;
    let scanners = Scanners::start(
        env.db.backend(),
        ScannerConfig {
            wake_parents: Duration::from_millis(50),
            ..ScannerConfig::default()
        },
    );
    // Eight children run at once, each spawning two of its own into the
    // same flow: concurrent spawns into one flow, which on Postgres used to
    // deadlock on the flow row.
    let pool = env.pool(config(12));
    let id = env.submit("testkit", "spawn-nested:8", 0).await;
    let done = env.wait_terminal_within(id, Duration::from_secs(60)).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    let report = text(&done.result);
    for i in 1..=8 {
        let grandchildren = format!("child-{i}/child-1=completed:a;child-{i}/child-2=completed:b");
        assert!(
            report.contains(&format!("child-{i}=completed:")),
            "{report}"
        );
        assert!(
            report.contains(&grandchildren),
            "{grandchildren} in {report}"
        );
    }
    pool.shutdown().await;
    scanners.shutdown().await;
}

/// Tenant A fills the pool with guests that spin until their timeout; tenant
/// B's small executions still start at once (the reserve slots, then turns
/// on the guest threads shared by tenant) and all finish long before any of
/// A's guests would have freed a slot. Loose bounds only: the ratio is
/// measured by `flowfabric bench fairness`.
async fn a_tenants_spinning_guests_do_not_starve_another_tenant(store: Store) {
    let env = Env::on(store).await;
    let b = env.db.tenant("bystander").await;
    flowfabric::components::register(
        &env.db.engine,
        &env.runtime,
        b,
        "echo",
        &flowfabric_tests::guest("echo"),
    )
    .await
    .unwrap();
    let mut cfg = config(8);
    cfg.sandbox.timeout = Duration::from_secs(60);
    cfg.lease_ttl = Duration::from_secs(30);
    let pool = env.pool(cfg);
    let mut spinning = Vec::new();
    for _ in 0..20 {
        spinning.push(env.submit("testkit", "loop", 0).await);
    }
    // Until A holds its share of the slots.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut running = 0;
        for id in &spinning {
            if env.db.engine.get(env.tenant, *id).await.unwrap().state == PublicState::Active {
                running += 1;
            }
        }
        if running >= 8 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never filled the pool"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = tokio::time::Instant::now();
    let mut theirs = Vec::new();
    for i in 0..100 {
        let new = flowfabric::model::NewExecution::new("echo", format!("{i}").into_bytes());
        theirs.push(env.db.engine.create(b, new).await.unwrap().execution_id);
    }
    let first = env
        .db
        .wait_terminal(b, theirs[0], Duration::from_secs(5))
        .await;
    assert_eq!(first.state, PublicState::Completed);
    let first_after = started.elapsed();
    for id in &theirs {
        let done = env.db.wait_terminal(b, *id, Duration::from_secs(20)).await;
        assert_eq!(done.state, PublicState::Completed);
    }
    let all_after = started.elapsed();
    // Loose, for a loaded CI machine (alone it takes 0.2-0.7 s here); before
    // the shares it took A's timeout, a minute.
    assert!(
        first_after < Duration::from_secs(5),
        "B's first completion took {first_after:?}"
    );
    for id in &spinning {
        let ex = env.db.engine.get(env.tenant, *id).await.unwrap();
        assert!(!ex.state.is_terminal(), "A's guests were still spinning");
    }
    eprintln!("B: first after {first_after:?}, all 100 after {all_after:?}");
    for id in spinning {
        env.db
            .engine
            .cancel(env.tenant, id, "test over")
            .await
            .unwrap();
    }
    pool.shutdown().await;
}

on_both_backends!(
    an_oversized_result_fails_the_attempt_at_once_and_for_good,
    frames_stop_at_the_attempts_byte_cap,
    children_and_flow_members_stop_at_their_caps,
    waitpoints_stop_at_their_cap_and_list_in_pages,
    a_usage_counter_overflow_is_a_typed_refusal,
    nested_children_without_keys_do_not_collide,
    a_tenants_spinning_guests_do_not_starve_another_tenant,
);
