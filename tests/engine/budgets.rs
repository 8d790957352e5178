//! Budgets and quotas (reference §6 "budgets and quotas"): reports checked and
//! applied under the lease, soft and hard limits, dedup, scopes, resets.

use flowfabric::backend::Sweep;
use flowfabric::backend::UsageAdjust;
use flowfabric::model::TenantId;
use flowfabric::model::{
    AttemptType, Breach, BudgetScope, DimensionLimit, HardLimitAction, NewBudget, PublicState,
    UsageAdjustment, UsageEntry, UsageOutcome,
};
use flowfabric::{Engine, EngineError};
use flowfabric_tests::Store;

use crate::{claim_one, setup_on, task};

fn budget(scope: BudgetScope, soft: Option<u64>, hard: Option<u64>) -> NewBudget {
    NewBudget {
        name: "tokens".into(),
        scope,
        dimensions: vec![DimensionLimit {
            dimension: "tokens".into(),
            soft_limit: soft,
            hard_limit: hard,
        }],
        on_hard_limit: HardLimitAction::Fail,
        reset_interval_ms: None,
    }
}

fn limit(dimension: &str, soft: Option<u64>, hard: Option<u64>) -> DimensionLimit {
    DimensionLimit {
        dimension: dimension.into(),
        soft_limit: soft,
        hard_limit: hard,
    }
}

async fn used(e: &Engine, t: TenantId, id: flowfabric::model::BudgetId) -> u64 {
    e.backend().get_budget(t, id).await.unwrap().dimensions[0].used
}

async fn budget_report_and_breach(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let b = e
        .create_budget(t, budget(BudgetScope::Tenant, Some(10), Some(20)))
        .await
        .unwrap();
    let id = e.create(t, task("a")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let report = |delta, key| e.report_usage(&c.lease, "tokens", delta, key);

    assert_eq!(report(5, None).await.unwrap(), UsageOutcome::Ok);
    let breach = |current, limit| Breach {
        budget_id: b.budget_id,
        dimension: "tokens".into(),
        current,
        limit,
        action: HardLimitAction::Fail,
    };
    assert_eq!(
        report(6, None).await.unwrap(),
        UsageOutcome::SoftBreach(breach(11, 10))
    );
    assert!(matches!(
        report(1, Some("call-1")).await.unwrap(),
        UsageOutcome::SoftBreach(_)
    ));
    assert_eq!(
        report(1, Some("call-1")).await.unwrap(),
        UsageOutcome::AlreadyApplied
    );
    assert_eq!(used(e, t, b.budget_id).await, 12);
    // Other dimensions have no budget: applied, unlimited.
    assert_eq!(
        e.report_usage(&c.lease, "calls", 1_000, None)
            .await
            .unwrap(),
        UsageOutcome::Ok
    );

    assert_eq!(
        report(9, None).await.unwrap(),
        UsageOutcome::HardBreach(breach(21, 20))
    );
    assert_eq!(
        used(e, t, b.budget_id).await,
        12,
        "a hard breach is not applied"
    );
    let failed = e.get(t, id).await.unwrap();
    assert_eq!(failed.state, PublicState::Failed);
    assert_eq!(
        failed.last_failure.unwrap().class.as_str(),
        "budget_exceeded"
    );
    let stale = report(1, None).await;
    assert!(
        matches!(stale, Err(EngineError::NotActive { .. })),
        "{stale:?}"
    );

    let usage = db.attempt_usage(id).await;
    assert_eq!(usage, serde_json::json!({ "tokens": 12, "calls": 1000 }));
}

async fn a_hard_limit_can_suspend_until_the_budget_is_reset(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("a")).await.unwrap().execution_id;
    let mut new = budget(BudgetScope::Execution { execution_id: id }, None, Some(3));
    new.on_hard_limit = HardLimitAction::Suspend;
    let b = e.create_budget(t, new).await.unwrap();
    let c = claim_one(e).await;
    assert!(matches!(
        e.report_usage(&c.lease, "tokens", 4, None).await.unwrap(),
        UsageOutcome::HardBreach(Breach {
            action: HardLimitAction::Suspend,
            ..
        })
    ));
    assert_eq!(e.state(t, id).await.unwrap().state, PublicState::Suspended);
    assert_eq!(db.blocking_reason(id).await, "waiting_for_budget");

    let reset = e.reset_budget(t, b.budget_id).await.unwrap();
    assert_eq!(reset.dimensions[0].used, 0);
    let resumed = claim_one(e).await;
    assert_eq!(resumed.attempt_type, AttemptType::Resume);
    assert_eq!(
        e.report_usage(&resumed.lease, "tokens", 3, None)
            .await
            .unwrap(),
        UsageOutcome::Ok
    );
}

async fn budgets_count_only_what_their_scope_covers(store: Store) {
    let (db, t) = setup_on(store).await;
    let other = db.tenant("other").await;
    let e = &db.engine;
    // Another tenant's tenant-wide budget and a lane nobody runs in.
    e.create_budget(other, budget(BudgetScope::Tenant, None, Some(1)))
        .await
        .unwrap();
    let lane = budget(
        BudgetScope::Lane {
            lane: "elsewhere".into(),
        },
        None,
        Some(1),
    );
    e.create_budget(t, lane).await.unwrap();
    let mine = e
        .create_budget(t, budget(BudgetScope::Tenant, None, Some(100)))
        .await
        .unwrap();
    e.create(t, task("a")).await.unwrap();
    let c = claim_one(e).await;
    assert_eq!(
        e.report_usage(&c.lease, "tokens", 50, None).await.unwrap(),
        UsageOutcome::Ok
    );
    assert_eq!(used(e, t, mine.budget_id).await, 50);
    assert!(matches!(
        e.backend().get_budget(other, mine.budget_id).await,
        Err(EngineError::NotFound { .. })
    ));
    assert_eq!(e.backend().list_budgets(other).await.unwrap().len(), 1);
}

async fn bad_budgets_are_refused_and_write_nothing(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut twice = budget(BudgetScope::Tenant, Some(1), None);
    twice.dimensions.push(twice.dimensions[0].clone());
    let mut fast = budget(BudgetScope::Tenant, Some(1), None);
    fast.reset_interval_ms = Some(10);
    let mut empty = budget(BudgetScope::Tenant, Some(1), None);
    empty.dimensions.clear();
    for bad in [
        budget(BudgetScope::Tenant, None, None),
        budget(BudgetScope::Tenant, Some(5), Some(4)),
        twice,
        fast,
        empty,
    ] {
        let refused = e.create_budget(t, bad).await;
        assert!(
            matches!(refused, Err(EngineError::InvalidInput { .. })),
            "{refused:?}"
        );
    }
    let unknown = BudgetScope::Flow {
        flow_id: flowfabric::model::FlowId::new(),
    };
    assert!(matches!(
        e.create_budget(t, budget(unknown, Some(1), None)).await,
        Err(EngineError::NotFound { what: "flow", .. })
    ));
    assert_eq!(db.count("budgets").await, 0);
    assert_eq!(db.count("budget_dimensions").await, 0);
}

async fn budget_reset_on_its_interval(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = budget(BudgetScope::Tenant, None, Some(10));
    new.reset_interval_ms = Some(60_000);
    let b = e.create_budget(t, new).await.unwrap();
    e.create(t, task("a")).await.unwrap();
    let c = claim_one(e).await;
    e.report_usage(&c.lease, "tokens", 7, None).await.unwrap();
    assert_eq!(
        e.backend()
            .reset_due_budgets(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0
    );
    db.make_budget_resets_due().await;
    assert_eq!(
        e.backend()
            .reset_due_budgets(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    let after = e.backend().get_budget(t, b.budget_id).await.unwrap();
    assert_eq!(after.dimensions[0].used, 0);
    assert!(after.next_reset_at.unwrap() > chrono::Utc::now());
    assert_eq!(
        e.backend()
            .reset_due_budgets(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0
    );
}

/// Reference scenario `block_and_unblock`: once a budget is exhausted, claims
/// stop starting what it covers (it shows `rate_limited`) but start the rest;
/// a reset makes the blocked work claimable again.
async fn block_and_unblock(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let lane = |lane: &str, input: &str| {
        let mut new = task(input);
        new.lane = lane.into();
        new
    };
    let b = e
        .create_budget(
            t,
            budget(BudgetScope::Lane { lane: "gpu".into() }, None, Some(5)),
        )
        .await
        .unwrap();
    let mut request = crate::request(10);
    request.lanes = vec!["gpu".into(), "cpu".into()];

    e.create(t, lane("gpu", "spender")).await.unwrap();
    let spender = e.claim(&request).await.unwrap().remove(0);
    // Reaching the hard limit exactly is allowed, and exhausts the budget.
    assert_eq!(
        e.report_usage(&spender.lease, "tokens", 5, None)
            .await
            .unwrap(),
        UsageOutcome::Ok
    );
    assert!(
        e.backend()
            .get_budget(t, b.budget_id)
            .await
            .unwrap()
            .dimensions[0]
            .exhausted
    );
    e.complete(&spender.lease, b"").await.unwrap();

    let blocked = [
        e.create(t, lane("gpu", "a")).await.unwrap().execution_id,
        e.create(t, lane("gpu", "b")).await.unwrap().execution_id,
    ];
    let free = e.create(t, lane("cpu", "c")).await.unwrap().execution_id;
    let claimed = e.claim(&request).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.lease.execution_id)
            .collect::<Vec<_>>(),
        [free],
        "only the lane the budget does not cover"
    );
    for id in blocked {
        assert_eq!(e.get(t, id).await.unwrap().state, PublicState::RateLimited);
    }
    assert!(e.claim(&request).await.unwrap().is_empty());

    // Another tenant's identical lane is not covered.
    let other = db.tenant("other").await;
    let theirs = e
        .create(other, lane("gpu", "x"))
        .await
        .unwrap()
        .execution_id;
    let claimed = e.claim(&request).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.execution_id, theirs);

    let reset = e.reset_budget(t, b.budget_id).await.unwrap();
    assert!(!reset.dimensions[0].exhausted);
    for id in blocked {
        assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Waiting);
    }
    let mut resumed: Vec<_> = e
        .claim(&request)
        .await
        .unwrap()
        .iter()
        .map(|c| c.lease.execution_id)
        .collect();
    resumed.sort();
    let mut expected = blocked.to_vec();
    expected.sort();
    assert_eq!(resumed, expected);
}

/// A refused report exhausts its budget too: the next execution it covers is
/// blocked at claim instead of being started only to breach again.
async fn a_refused_report_blocks_later_claims(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let b = e
        .create_budget(t, budget(BudgetScope::Tenant, None, Some(10)))
        .await
        .unwrap();
    e.create(t, task("a")).await.unwrap();
    let c = claim_one(e).await;
    assert!(matches!(
        e.report_usage(&c.lease, "tokens", 11, None).await.unwrap(),
        UsageOutcome::HardBreach(_)
    ));
    let budget = e.backend().get_budget(t, b.budget_id).await.unwrap();
    assert_eq!(
        (budget.dimensions[0].used, budget.dimensions[0].exhausted),
        (0, true)
    );
    let next = e.create(t, task("b")).await.unwrap().execution_id;
    assert!(e.claim(&crate::request(5)).await.unwrap().is_empty());
    assert_eq!(
        e.get(t, next).await.unwrap().state,
        PublicState::RateLimited
    );
}

async fn a_report_over_several_dimensions_applies_whole_or_not_at_all(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let b = e
        .create_budget(
            t,
            NewBudget {
                name: "llm".into(),
                scope: BudgetScope::Tenant,
                dimensions: vec![
                    limit("calls", Some(5), Some(10)),
                    limit("tokens", None, Some(100)),
                ],
                on_hard_limit: HardLimitAction::Fail,
                reset_interval_ms: None,
            },
        )
        .await
        .unwrap();
    let usage = || async {
        let budget = e.backend().get_budget(t, b.budget_id).await.unwrap();
        budget
            .dimensions
            .iter()
            .map(|d| (d.dimension.clone(), d.used))
            .collect::<Vec<_>>()
    };
    let entries = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(d, n)| UsageEntry {
                dimension: d.to_string(),
                delta: *n,
            })
            .collect::<Vec<_>>()
    };
    e.create(t, task("a")).await.unwrap();
    let c = claim_one(e).await;

    // Given in any order; a soft limit crossed in one dimension is reported.
    let outcome = e
        .report_usage_many(
            &c.lease,
            entries(&[("tokens", 40), ("calls", 6)]),
            Some("r1"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&outcome, UsageOutcome::SoftBreach(b) if b.dimension == "calls"),
        "{outcome:?}"
    );
    assert_eq!(usage().await, [("calls".into(), 6), ("tokens".into(), 40)]);
    let again = e
        .report_usage_many(
            &c.lease,
            entries(&[("tokens", 40), ("calls", 6)]),
            Some("r1"),
        )
        .await
        .unwrap();
    assert_eq!(again, UsageOutcome::AlreadyApplied);

    // Refused before anything is read: nothing changes.
    let seventeen: Vec<(String, u64)> = (0..17).map(|i| (format!("d{i}"), 1)).collect();
    let seventeen: Vec<_> = seventeen.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    for (bad, field) in [
        (entries(&[]), "dimensions"),
        (entries(&[("calls", 1), ("calls", 1)]), "appears twice"),
        (entries(&seventeen), "dimensions"),
        (entries(&[("calls", 1), ("bad dim", 1)]), "dimension"),
        (entries(&[("calls", 1), ("tokens", u64::MAX)]), "delta"),
    ] {
        let err = e.report_usage_many(&c.lease, bad, None).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    assert_eq!(usage().await, [("calls".into(), 6), ("tokens".into(), 40)]);

    // `tokens` fits but `calls` would pass its hard limit: neither applies.
    let outcome = e
        .report_usage_many(&c.lease, entries(&[("tokens", 10), ("calls", 5)]), None)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, UsageOutcome::HardBreach(b) if b.dimension == "calls" && b.current == 11),
        "{outcome:?}"
    );
    assert_eq!(
        usage().await,
        [("calls".into(), 6), ("tokens".into(), 40)],
        "a breached report applies nothing"
    );
}

async fn usage_is_corrected_by_hand_audited_and_releases_what_it_held(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("a")).await.unwrap().execution_id;
    let mut new = budget(BudgetScope::Tenant, Some(2), Some(5));
    new.on_hard_limit = HardLimitAction::Suspend;
    let b = e.create_budget(t, new).await.unwrap();
    let c = claim_one(e).await;
    e.report_usage(&c.lease, "tokens", 4, None).await.unwrap();
    // A report that would pass 5 suspends the execution on the budget.
    assert!(matches!(
        e.report_usage(&c.lease, "tokens", 3, None).await.unwrap(),
        UsageOutcome::HardBreach(_)
    ));
    assert_eq!(e.state(t, id).await.unwrap().state, PublicState::Suspended);
    let adjust = |delta: i64, reason: &str| {
        let adjustment = UsageAdjustment {
            dimension: "tokens".into(),
            delta,
            reason: reason.into(),
        };
        async move { e.adjust_usage(t, b.budget_id, &adjustment).await }
    };

    // Raised: still exhausted, nothing released.
    let raised = adjust(2, "late invoice").await.unwrap();
    assert_eq!(raised.dimensions[0].used, 6);
    assert_eq!(e.state(t, id).await.unwrap().state, PublicState::Suspended);
    // Lowered under the hard limit: the execution resumes.
    let lowered = adjust(-5, "refund of a double charge").await.unwrap();
    assert_eq!(lowered.dimensions[0].used, 1);
    assert!(!lowered.dimensions[0].exhausted);
    let resumed = claim_one(e).await;
    assert_eq!(resumed.attempt_type, AttemptType::Resume);
    // Never below zero.
    assert_eq!(
        adjust(-100, "clear it").await.unwrap().dimensions[0].used,
        0
    );

    let trail = e.list_adjustments(t, b.budget_id, 10).await.unwrap();
    let seen: Vec<_> = trail
        .iter()
        .map(|a| (a.delta, a.used_after, a.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (-100, 0, "clear it"),
            (-5, 1, "refund of a double charge"),
            (2, 6, "late invoice")
        ],
        "newest first"
    );

    // Refused before anything changes.
    for (bad, kind) in [
        (adjust(1, "").await, "invalid_input"),
        (adjust(1, "tab\there").await, "invalid_input"),
        (adjust(i64::MIN, "min").await, "invalid_input"),
    ] {
        assert_eq!(bad.unwrap_err().kind(), kind);
    }
    let unknown = UsageAdjustment {
        dimension: "calls".into(),
        delta: 1,
        reason: "no such dimension".into(),
    };
    let err = e.adjust_usage(t, b.budget_id, &unknown).await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
    let other = db.tenant("other").await;
    let err = e
        .adjust_usage(
            other,
            b.budget_id,
            &UsageAdjustment {
                dimension: "tokens".into(),
                delta: 1,
                reason: "not mine".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found", "another tenant's budget: {err}");
    assert_eq!(
        e.list_adjustments(other, b.budget_id, 10)
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
    assert_eq!(
        e.list_adjustments(t, b.budget_id, 10).await.unwrap().len(),
        3
    );

    // A budget keeps a bounded number of adjustments (the engine's cap is
    // large; the backend takes it as a parameter): one past it is refused
    // and changes nothing.
    let backend = e.backend();
    let one_more = UsageAdjustment {
        dimension: "tokens".into(),
        delta: 7,
        reason: "past the cap".into(),
    };
    let capped = |max_adjustments| UsageAdjust {
        budget: b.budget_id,
        adjustment: &one_more,
        max_adjustments,
    };
    match backend.adjust_usage(t, capped(3)).await {
        Err(EngineError::LimitExceeded { limit, value, .. }) => {
            assert_eq!((limit, value), ("max_adjustments_per_budget", 3))
        }
        other => panic!("expected the adjustment cap, got {other:?}"),
    }
    let kept = e.list_adjustments(t, b.budget_id, 10).await.unwrap();
    assert_eq!(kept.len(), 3, "nothing written");
    assert_eq!(used(e, t, b.budget_id).await, 0);
    let applied = backend.adjust_usage(t, capped(4)).await.unwrap();
    assert_eq!(
        applied.dimensions[0].used, 7,
        "under a higher cap it applies"
    );
}

/// Whether a host may count a dimension in memory: only while no budget of
/// the tenant limits it, whatever the budget's scope or kind of limit.
async fn a_dimension_is_limited_while_a_budget_of_the_tenant_has_it(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let other = db.tenant("other").await;
    assert!(
        !e.budget_limits(t, "tokens").await.unwrap(),
        "no budget yet"
    );
    let lane = BudgetScope::Lane { lane: "gpu".into() };
    e.create_budget(t, budget(lane, Some(10), None))
        .await
        .unwrap();
    assert!(
        e.budget_limits(t, "tokens").await.unwrap(),
        "a soft limit in another lane still counts"
    );
    assert!(!e.budget_limits(t, "http_requests").await.unwrap());
    assert!(
        !e.budget_limits(other, "tokens").await.unwrap(),
        "another tenant's budget is not this tenant's"
    );
}

/// Reports from many executions at once, each over two dimensions, against
/// a tenant budget and a lane budget: every applied report is counted
/// exactly once, the soft limit is reported by exactly the reports that
/// end past it, nothing passes the hard limit, and no report deadlocks.
async fn concurrent_reports_count_exactly_up_to_the_hard_limit(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let budget_of = |scope, dimensions| NewBudget {
        name: "shared".into(),
        scope,
        dimensions,
        on_hard_limit: HardLimitAction::Fail,
        reset_interval_ms: None,
    };
    let tenant_wide = e
        .create_budget(
            t,
            budget_of(
                BudgetScope::Tenant,
                vec![
                    limit("calls", Some(20), Some(30)),
                    limit("tokens", None, Some(1_000_000)),
                ],
            ),
        )
        .await
        .unwrap();
    let lane = e
        .create_budget(
            t,
            budget_of(
                BudgetScope::Lane {
                    lane: flowfabric::model::DEFAULT_LANE.into(),
                },
                vec![limit("tokens", Some(1_000), Some(10_000))],
            ),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            e.create(t, task(&format!("r{i}")))
                .await
                .unwrap()
                .execution_id,
        );
    }
    let claimed = e.claim(&crate::request(6)).await.unwrap();
    assert_eq!(claimed.len(), 6);
    let outcomes = futures::future::join_all(claimed.iter().map(|c| async move {
        let mut seen = Vec::new();
        for _ in 0..10 {
            let report = vec![
                UsageEntry {
                    dimension: "tokens".into(),
                    delta: 2,
                },
                UsageEntry {
                    dimension: "calls".into(),
                    delta: 1,
                },
            ];
            let outcome = e.report_usage_many(&c.lease, report, None).await.unwrap();
            let ended = matches!(outcome, UsageOutcome::HardBreach(_));
            seen.push(outcome);
            if ended {
                break;
            }
        }
        seen
    }))
    .await;
    let all: Vec<&UsageOutcome> = outcomes.iter().flatten().collect();
    let applied = all
        .iter()
        .filter(|o| matches!(o, UsageOutcome::Ok | UsageOutcome::SoftBreach(_)))
        .count();
    let soft = all
        .iter()
        .filter(|o| matches!(o, UsageOutcome::SoftBreach(b) if b.dimension == "calls"))
        .count();
    assert_eq!(applied, 30, "{all:?}");
    assert_eq!(
        soft, 10,
        "the reports taking `calls` from 21 to 30: {all:?}"
    );
    let dimension_used = |budget: &flowfabric::model::Budget, name: &str| {
        budget
            .dimensions
            .iter()
            .find(|d| d.dimension == name)
            .unwrap()
            .used
    };
    let tenant_wide = e
        .backend()
        .get_budget(t, tenant_wide.budget_id)
        .await
        .unwrap();
    assert_eq!(dimension_used(&tenant_wide, "calls"), 30);
    assert_eq!(dimension_used(&tenant_wide, "tokens"), 60);
    let lane = e.backend().get_budget(t, lane.budget_id).await.unwrap();
    assert_eq!(dimension_used(&lane, "tokens"), 60);
    let mut calls = 0;
    for id in ids {
        let usage = db.attempt_usage(id).await;
        let of = |name: &str| usage.get(name).and_then(|v| v.as_u64()).unwrap_or(0);
        assert_eq!(of("tokens"), 2 * of("calls"), "{usage}");
        calls += of("calls");
    }
    assert_eq!(calls, 30, "each execution's attempt counts what it applied");
}

/// Deleting a budget takes its dimensions and audit trail with it and lets
/// go of what it held, as a reset does: the execution suspended on it
/// resumes, and one the claim blocked on it is claimable again. Another
/// tenant's budget is untouched.
async fn deleting_a_budget_releases_what_it_held(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let other = db.tenant("other").await;
    let theirs = e
        .create_budget(other, budget(BudgetScope::Tenant, None, Some(5)))
        .await
        .unwrap();
    let mut new = budget(BudgetScope::Tenant, None, Some(3));
    new.on_hard_limit = HardLimitAction::Suspend;
    let b = e.create_budget(t, new).await.unwrap();
    let adjustment = UsageAdjustment {
        dimension: "tokens".into(),
        delta: 1,
        reason: "a correction".into(),
    };
    e.adjust_usage(t, b.budget_id, &adjustment).await.unwrap();
    let a = e.create(t, task("a")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    assert!(matches!(
        e.report_usage(&c.lease, "tokens", 4, None).await.unwrap(),
        UsageOutcome::HardBreach(_)
    ));
    assert_eq!(db.blocking_reason(a).await, "waiting_for_budget");
    let blocked = e.create(t, task("b")).await.unwrap().execution_id;
    assert!(e.claim(&crate::request(5)).await.unwrap().is_empty());
    assert_eq!(
        e.state(t, blocked).await.unwrap().state,
        PublicState::RateLimited
    );

    e.delete_budget(t, b.budget_id).await.unwrap();
    let missing = e.backend().get_budget(t, b.budget_id).await.unwrap_err();
    assert_eq!(missing.kind(), "not_found", "{missing}");
    let again = e.delete_budget(t, b.budget_id).await.unwrap_err();
    assert_eq!(again.kind(), "not_found", "{again}");
    let mut claimed: Vec<_> = e
        .claim(&crate::request(5))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.lease.execution_id, c.attempt_type))
        .collect();
    claimed.sort_by_key(|(id, _)| *id);
    assert_eq!(
        claimed,
        [(a, AttemptType::Resume), (blocked, AttemptType::Initial)]
    );
    assert_eq!(db.count("budgets").await, 1, "only the other tenant's");
    assert_eq!(db.count("budget_dimensions").await, 1);
    assert_eq!(db.count("budget_adjustments").await, 0);
    let kept = e
        .backend()
        .get_budget(other, theirs.budget_id)
        .await
        .unwrap();
    assert_eq!(kept.dimensions[0].hard_limit, Some(5));
    let wrong_tenant = e.delete_budget(t, theirs.budget_id).await.unwrap_err();
    assert_eq!(wrong_tenant.kind(), "not_found", "{wrong_tenant}");
}

/// A tenant has at most so many budgets; the one past the cap is refused
/// and not kept, another tenant is not held to this one's count, and
/// deleting one makes room.
async fn a_tenant_has_at_most_so_many_budgets(store: Store) {
    let (db, t) = setup_on(store).await;
    let backend = db.engine.backend();
    let other = db.tenant("other").await;
    let new = budget(BudgetScope::Tenant, None, Some(10));
    let first = backend.create_budget(t, &new, 2).await.unwrap();
    backend.create_budget(t, &new, 2).await.unwrap();
    let refused = backend.create_budget(t, &new, 2).await.unwrap_err();
    assert_eq!(refused.kind(), "limit_exceeded", "{refused}");
    assert!(
        refused.to_string().contains("max_budgets_per_tenant"),
        "{refused}"
    );
    assert_eq!(db.count("budgets").await, 2, "the refused one is not kept");
    assert_eq!(db.count("budget_dimensions").await, 2);
    backend
        .create_budget(other, &new, 2)
        .await
        .expect("another tenant's count");
    backend.delete_budget(t, first.budget_id).await.unwrap();
    backend.create_budget(t, &new, 2).await.expect("room again");
}

/// The budget reset pass narrowed to one tenant (what a failed pass is
/// retried as) resets only that tenant's due budgets.
async fn a_reset_pass_for_one_tenant_resets_only_its_budgets(store: Store) {
    let (db, one) = setup_on(store).await;
    let e = &db.engine;
    let other = db.tenant("other").await;
    for t in [one, other] {
        let mut new = budget(BudgetScope::Tenant, None, Some(10));
        new.reset_interval_ms = Some(60_000);
        e.create_budget(t, new).await.unwrap();
    }
    db.make_budget_resets_due().await;
    let only_one = Sweep {
        limit: 100,
        tenant: Some(one),
    };
    assert_eq!(e.backend().reset_due_budgets(only_one).await.unwrap(), 1);
    assert_eq!(e.backend().reset_due_budgets(only_one).await.unwrap(), 0);
    let every = Sweep::every_tenant(100);
    assert_eq!(
        e.backend().reset_due_budgets(every).await.unwrap(),
        1,
        "the other's"
    );
}

on_both_backends!(
    deleting_a_budget_releases_what_it_held,
    a_tenant_has_at_most_so_many_budgets,
    concurrent_reports_count_exactly_up_to_the_hard_limit,
    a_dimension_is_limited_while_a_budget_of_the_tenant_has_it,
    usage_is_corrected_by_hand_audited_and_releases_what_it_held,
    a_report_over_several_dimensions_applies_whole_or_not_at_all,
    budget_report_and_breach,
    a_hard_limit_can_suspend_until_the_budget_is_reset,
    budgets_count_only_what_their_scope_covers,
    bad_budgets_are_refused_and_write_nothing,
    budget_reset_on_its_interval,
    block_and_unblock,
    a_refused_report_blocks_later_claims,
    a_reset_pass_for_one_tenant_resets_only_its_budgets,
);
