//! Budget usage held and given back: a report over several dimensions
//! applies whole or not at all, concurrent reports count exactly up to a
//! hard limit, and usage corrected by hand or a budget deleted releases
//! what it held.

use flowfabric::backend::UsageAdjust;
use flowfabric::model::{
    AttemptType, BudgetScope, HardLimitAction, NewBudget, PublicState, UsageAdjustment, UsageEntry,
    UsageOutcome,
};
use flowfabric::EngineError;
use flowfabric_tests::Store;

use crate::budgets::{budget, limit, used};
use crate::{claim_one, setup_on, task};

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

on_both_backends!(
    a_report_over_several_dimensions_applies_whole_or_not_at_all,
    usage_is_corrected_by_hand_audited_and_releases_what_it_held,
    concurrent_reports_count_exactly_up_to_the_hard_limit,
    deleting_a_budget_releases_what_it_held,
);
