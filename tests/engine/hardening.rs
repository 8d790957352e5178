//! What one tenant can do to everyone else with the numbers and times it
//! sends: every one that reaches storage is range-checked with its field
//! named, and no stored row, whatever it holds, can make a claim or a
//! scanner pass fail for other tenants.

use chrono::{TimeDelta, Utc};
use flowfabric::backend::Sweep;
use flowfabric::model::STORED_RECORD_BYTES;
use flowfabric::model::{
    Backoff, BudgetScope, DimensionLimit, FlowMember, GraphChange, HardLimitAction, JoinPolicy,
    NewBudget, NewExecution, NewFlow, StreamMode, TenantLimits,
};
use flowfabric::EngineError;
use flowfabric_tests::{Store, TestDb};

use crate::{request, setup_on, task};

/// A policy no API request can create any more, stored by hand: every
/// duration and count at the top of its type.
const POISON: &str = r#"{"retry": {"max_retries": 3, "backoff": {"type": "fixed", "delay_ms": 0}, "retryable": ["transient"]}, "timeouts": {"attempt_timeout_ms": 18446744073709551615, "execution_deadline_ms": 18446744073709551615, "max_reclaim_count": 4294967295}, "dedup_window_ms": null, "max_replays": 1000}"#;

async fn a_poisoned_row_cannot_stop_claims_or_scanners_for_others(store: Store) {
    let (db, a) = setup_on(store).await;
    let e = &db.engine;
    let b = db.tenant("bystander").await;
    let poisoned = e.create(a, task("poison")).await.unwrap().execution_id;
    db.overwrite_policy(poisoned, POISON).await;
    let theirs = e.create(b, task("theirs")).await.unwrap().execution_id;

    let claimed = e.claim(&request(10)).await.expect("the claim never fails");
    let mut ids: Vec<_> = claimed.iter().map(|c| c.lease.execution_id).collect();
    ids.sort();
    let mut want = vec![poisoned, theirs];
    want.sort();
    assert_eq!(
        ids, want,
        "both are claimed; the poisoned row's timeout is clamped"
    );

    // The scanners read the same row: lease expiry (the reclaim cap) and the
    // attempt timeout pass must not fail either.
    db.expire_lease(poisoned).await;
    assert_eq!(
        db.backend()
            .reclaim_expired_leases(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    db.backend()
        .fail_timed_out_attempts(Sweep::every_tenant(100))
        .await
        .unwrap();
    let again = e
        .claim(&request(10))
        .await
        .expect("claim after the reclaim");
    assert_eq!(again.len(), 1);
    e.complete(&again[0].lease, b"done").await.unwrap();

    // Replay recomputes the deadline from the same policy.
    e.replay(a, poisoned, false).await.unwrap();
    assert_eq!(e.claim(&request(10)).await.unwrap().len(), 1);
}

/// Each field of a new execution at values past its bound: refused with the
/// field named, nothing written; at its bound, accepted.
async fn extreme_values_are_refused_with_their_field_and_others_still_run(store: Store) {
    let (db, a) = setup_on(store).await;
    let e = &db.engine;
    let b = db.tenant("bystander").await;
    let now = Utc::now();
    type Edit = Box<dyn Fn(&mut NewExecution)>;
    let refused: Vec<(&str, Edit)> = vec![
        (
            "policy.timeouts.attempt_timeout_ms",
            Box::new(|n| n.policy.timeouts.attempt_timeout_ms = Some(i64::MAX as u64)),
        ),
        (
            "policy.timeouts.attempt_timeout_ms",
            Box::new(|n| n.policy.timeouts.attempt_timeout_ms = Some(u64::MAX)),
        ),
        (
            "policy.timeouts.execution_deadline_ms",
            Box::new(|n| n.policy.timeouts.execution_deadline_ms = Some(i64::MAX as u64)),
        ),
        (
            "policy.timeouts.max_reclaim_count",
            Box::new(|n| n.policy.timeouts.max_reclaim_count = u32::MAX),
        ),
        (
            "policy.dedup_window_ms",
            Box::new(|n| n.policy.dedup_window_ms = Some(u64::MAX)),
        ),
        (
            "policy.retry.max_retries",
            Box::new(|n| n.policy.retry.max_retries = u32::MAX),
        ),
        (
            "policy.max_replays",
            Box::new(|n| n.policy.max_replays = Some(u32::MAX)),
        ),
        (
            "policy.retry.backoff.delay_ms",
            Box::new(|n| n.policy.retry.backoff = Backoff::Fixed { delay_ms: u64::MAX }),
        ),
        (
            "policy.retry.backoff.max_delay_ms",
            Box::new(|n| {
                n.policy.retry.backoff = Backoff::Exponential {
                    initial_delay_ms: 1,
                    max_delay_ms: u64::MAX,
                    multiplier: 2.0,
                    jitter: false,
                }
            }),
        ),
        ("priority", Box::new(|n| n.priority = i32::MAX)),
        ("priority", Box::new(|n| n.priority = i32::MIN)),
        (
            "delay_until",
            Box::new(move |n| n.delay_until = Some(now + TimeDelta::days(400))),
        ),
        (
            "delay_until",
            Box::new(|n| {
                n.delay_until = Some("9999-12-31T23:59:59Z".parse().unwrap());
            }),
        ),
        (
            "delay_until",
            Box::new(|n| {
                n.delay_until = Some("0000-01-01T00:00:00Z".parse().unwrap());
            }),
        ),
    ];
    for (field, edit) in &refused {
        let mut new = task("extreme");
        edit(&mut new);
        match e.create(a, new).await {
            Err(EngineError::InvalidInput { field: got, reason }) => {
                assert_eq!(&got, field, "{reason}");
                assert!(
                    reason.chars().any(|c| c.is_ascii_digit()),
                    "the reason states the bounds: {reason}"
                );
            }
            other => panic!("{field}: expected invalid_input, got {other:?}"),
        }
    }
    assert_eq!(db.count("executions").await, 0, "nothing was written");

    let accepted: Vec<Edit> = vec![
        Box::new(|n| n.policy.timeouts.attempt_timeout_ms = Some(7 * 24 * 3600 * 1000)),
        Box::new(|n| n.policy.timeouts.execution_deadline_ms = Some(366 * 24 * 3600 * 1000)),
        Box::new(|n| n.policy.timeouts.max_reclaim_count = 1_000),
        Box::new(move |n| n.delay_until = Some(now + TimeDelta::days(365))),
        Box::new(move |n| n.delay_until = Some(now - TimeDelta::days(365))),
    ];
    for edit in &accepted {
        let mut new = task("at its bound");
        edit(&mut new);
        e.create(a, new)
            .await
            .expect("a value at its bound is accepted");
    }

    // Budgets and tenant limits: the other numbers a tenant or operator
    // stores for scanners to read.
    let budget = NewBudget {
        name: "forever".into(),
        scope: BudgetScope::Tenant,
        dimensions: vec![DimensionLimit {
            dimension: "tokens".into(),
            soft_limit: None,
            hard_limit: Some(10),
        }],
        on_hard_limit: HardLimitAction::Fail,
        reset_interval_ms: Some(u64::MAX),
    };
    let err = e.create_budget(a, budget).await.unwrap_err();
    assert!(err.to_string().contains("reset_interval_ms"), "{err}");
    for limits in [
        TenantLimits {
            max_task_timeout_ms: Some(u64::MAX),
            ..TenantLimits::default()
        },
        TenantLimits {
            max_frame_bytes_per_attempt: Some(u64::MAX),
            ..TenantLimits::default()
        },
        TenantLimits {
            max_waitpoints_per_execution: Some(0),
            ..TenantLimits::default()
        },
    ] {
        let err = e.set_tenant_limits(a, limits).await.unwrap_err();
        assert!(matches!(err, EngineError::InvalidInput { .. }), "{err}");
    }

    // And the bystander's work runs as ever, alongside everything accepted.
    let theirs = e.create(b, task("theirs")).await.unwrap().execution_id;
    let claimed = e.claim(&request(100)).await.expect("claim");
    assert!(claimed.iter().any(|c| c.lease.execution_id == theirs));
}

/// A tenant's storage quota refuses what would pass it, whatever writes it
/// (creates, results, frames), and another tenant is not affected.
async fn a_storage_quota_refuses_writes_past_it(store: Store) {
    let (db, a) = setup_on(store).await;
    let e = &db.engine;
    let b = db.tenant("bystander").await;
    let quota = TenantLimits {
        max_stored_bytes: Some(10_000),
        ..TenantLimits::default()
    };
    e.set_tenant_limits(a, quota).await.unwrap();
    let sized = |n: usize| NewExecution::new("echo", vec![b'i'; n]);
    e.create(a, sized(4_000)).await.unwrap();
    e.create(a, sized(4_000)).await.unwrap();
    let refused = e.create(a, sized(4_000)).await.unwrap_err();
    assert!(
        matches!(refused, EngineError::QuotaExceeded { limit: 10_000, .. }),
        "{refused}"
    );
    assert_eq!(db.count("executions").await, 2, "nothing written");
    e.create(b, sized(40_000)).await.expect("B has no quota");

    // A frame or a result that would pass it is refused too.
    let claimed = e.claim(&request(10)).await.unwrap();
    let mine = claimed.iter().find(|c| c.lease.tenant_id == a).unwrap();
    let frame = e
        .append_frame(&mine.lease, "log", StreamMode::Durable, &[b'f'; 3_000])
        .await
        .unwrap_err();
    assert_eq!(frame.kind(), "quota_exceeded", "{frame}");
    let result = e.check_tenant_result(a, &[b'r'; 3_000]).await.unwrap_err();
    assert_eq!(result.kind(), "quota_exceeded", "{result}");
    e.append_frame(&mine.lease, "log", StreamMode::Durable, b"small")
        .await
        .expect("what fits is written");

    let usage = e.usage(a).await.unwrap();
    assert_eq!(usage.max_stored_bytes, Some(10_000));
    assert!(usage.stored_bytes >= 8_000, "{usage:?}");
    // Measured afresh, to the byte: the two inputs and the frame's
    // payload, and each of those three records.
    let records = STORED_RECORD_BYTES;
    assert_eq!(
        db.backend().stored_bytes(a).await.unwrap(),
        8_005 + 3 * records
    );
    assert_eq!(
        db.backend().stored_bytes(b).await.unwrap(),
        40_000 + records
    );
}

/// Requests that find a tenant's stored bytes stale together share one
/// measurement (it reads every row the tenant has) instead of each making
/// its own.
async fn a_tenants_stored_bytes_are_measured_once_at_a_time(store: Store) {
    let (db, a) = setup_on(store).await;
    let e = &db.engine;
    let quota = TenantLimits {
        max_stored_bytes: Some(1 << 20),
        ..TenantLimits::default()
    };
    e.set_tenant_limits(a, quota).await.unwrap();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let asked = futures::future::join_all((0..8).map(|_| e.usage(a))).await;
    for usage in asked {
        assert_eq!(usage.unwrap().stored_bytes, 0);
    }
    let text = metrics.render();
    assert!(
        text.contains("flowfabric_storage_measurements_total 1\n"),
        "{text}"
    );
}

/// Flows created or extended over the API stop at the member cap too.
async fn flows_stop_at_their_member_cap(store: Store) {
    let db = flowfabric_tests::TestDb::on_with(store, |l| l.max_flow_members = 3).await;
    let t = db.tenant("acme").await;
    let e = &db.engine;
    let member = |key: &str| FlowMember {
        key: key.into(),
        execution: NewExecution::new("echo", key.as_bytes()),
        join: JoinPolicy::AllOf,
    };
    let change = |keys: &[&str]| GraphChange {
        expected_revision: None,
        members: keys.iter().map(|k| member(k)).collect(),
        edges: Vec::new(),
    };
    let flow = NewFlow {
        name: "capped".into(),
        tags: Default::default(),
    };
    let err = e
        .create_flow(t, flow.clone(), change(&["a", "b", "c", "d"]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    let created = e.create_flow(t, flow, change(&["a", "b"])).await.unwrap();
    let err = e
        .extend_flow(t, created.flow_id, change(&["c", "d"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_flow_members"), "{err}");
    e.extend_flow(t, created.flow_id, change(&["c"]))
        .await
        .expect("the third fits");
    assert_eq!(db.count("executions").await, 3);
}

/// A flow's edges stop at their cap, whether they come with the flow or
/// are added later, and a refused change writes nothing.
async fn flows_stop_at_their_edge_cap(store: Store) {
    use crate::flows::{edge, graph, member};
    let db = flowfabric_tests::TestDb::on_with(store, |l| l.max_flow_edges = 2).await;
    let t = db.tenant("acme").await;
    let e = &db.engine;
    let members = || ["a", "b", "c", "d"].map(member).to_vec();
    let flow = NewFlow {
        name: "capped".into(),
        tags: Default::default(),
    };
    let three = vec![edge("a", "d"), edge("b", "d"), edge("c", "d")];
    let err = e
        .create_flow(t, flow.clone(), graph(members(), three))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    assert_eq!(db.count("executions").await, 0, "nothing written");
    let two = vec![edge("a", "d"), edge("b", "d")];
    let created = e.create_flow(t, flow, graph(members(), two)).await.unwrap();
    let err = e
        .extend_flow(t, created.flow_id, graph(vec![], vec![edge("c", "d")]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_flow_edges"), "{err}");
    assert_eq!(db.count("flow_edges").await, 2, "nothing written");
    e.extend_flow(t, created.flow_id, graph(vec![member("e")], vec![]))
        .await
        .expect("members without edges still fit");
}

/// A component blob's digest is its SHA-256 in 64 lowercase hex digits,
/// on both backends (a CHECK on Postgres, triggers on SQLite), whatever
/// writes the row: the component cache names files by it.
async fn a_component_digest_is_64_lowercase_hex_digits(store: Store) {
    let db = TestDb::on(store).await;
    let tenant = db.tenant("blobs").await;
    let good = "0123456789abcdef".repeat(4);
    for bad in [
        "".to_owned(),
        "abc".to_owned(),
        "0123456789ABCDEF".repeat(4),
        format!("{}0", good),
        format!("../{}", &good[3..]),
        format!("{}g", &good[1..]),
    ] {
        assert!(
            db.store_blob_raw(tenant, &bad).await.is_err(),
            "`{bad}` was stored"
        );
    }
    assert_eq!(db.count("component_blobs").await, 0);
    db.store_blob_raw(tenant, &good).await.unwrap();
    assert_eq!(db.count("component_blobs").await, 1);
}

/// Records with nothing in them are not free to keep: under a quota of two
/// and a half records, two empty executions fit and a third is refused, as
/// is an empty flow.
async fn empty_records_count_against_the_storage_quota(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let quota = TenantLimits {
        max_stored_bytes: Some(2 * STORED_RECORD_BYTES + STORED_RECORD_BYTES / 2),
        ..TenantLimits::default()
    };
    e.set_tenant_limits(t, quota).await.unwrap();
    let empty = || NewExecution::new("echo", Vec::new());
    e.create(t, empty()).await.unwrap();
    e.create(t, empty()).await.unwrap();
    let refused = e.create(t, empty()).await.unwrap_err();
    assert_eq!(refused.kind(), "quota_exceeded", "{refused}");
    let flow = NewFlow {
        name: "empty".into(),
        tags: Default::default(),
    };
    let refused = e
        .create_flow(t, flow, GraphChange::default())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), "quota_exceeded", "{refused}");
    assert_eq!(db.count("executions").await, 2, "nothing more written");
    assert_eq!(db.count("flows").await, 0);
}

on_both_backends!(
    a_component_digest_is_64_lowercase_hex_digits,
    flows_stop_at_their_member_cap,
    flows_stop_at_their_edge_cap,
    a_tenants_stored_bytes_are_measured_once_at_a_time,
    a_storage_quota_refuses_writes_past_it,
    a_poisoned_row_cannot_stop_claims_or_scanners_for_others,
    extreme_values_are_refused_with_their_field_and_others_still_run,
    empty_records_count_against_the_storage_quota,
);
