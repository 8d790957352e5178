//! Budgets and quotas (reference §6 "budgets and quotas"): reports checked and
//! applied under the lease, soft and hard limits, dedup, scopes, resets.

use flowfabric::backend::Sweep;
use flowfabric::model::TenantId;
use flowfabric::model::{
    AttemptType, Breach, BudgetScope, DimensionLimit, HardLimitAction, NewBudget, PublicState,
    UsageOutcome,
};
use flowfabric::{Engine, EngineError};
use flowfabric_tests::Store;

use crate::{claim_one, setup_on, task};

pub(crate) fn budget(scope: BudgetScope, soft: Option<u64>, hard: Option<u64>) -> NewBudget {
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

pub(crate) fn limit(dimension: &str, soft: Option<u64>, hard: Option<u64>) -> DimensionLimit {
    DimensionLimit {
        dimension: dimension.into(),
        soft_limit: soft,
        hard_limit: hard,
    }
}

pub(crate) async fn used(e: &Engine, t: TenantId, id: flowfabric::model::BudgetId) -> u64 {
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
    a_tenant_has_at_most_so_many_budgets,
    a_dimension_is_limited_while_a_budget_of_the_tenant_has_it,
    budget_report_and_breach,
    a_hard_limit_can_suspend_until_the_budget_is_reset,
    budgets_count_only_what_their_scope_covers,
    bad_budgets_are_refused_and_write_nothing,
    budget_reset_on_its_interval,
    block_and_unblock,
    a_refused_report_blocks_later_claims,
    a_reset_pass_for_one_tenant_resets_only_its_budgets,
);
