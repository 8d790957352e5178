//! Retention: executions ended longer ago than the retention period are
//! deleted with everything recorded of them; what another record still
//! needs is kept (a flow until every member has ended, a child until its
//! parent has), and so is everything ended lately or still running.

use std::time::Duration;

use flowfabric::engine::prune_ended;
use flowfabric::model::{
    BudgetScope, DimensionLimit, ExecutionId, HardLimitAction, NewBudget, NewExecution, StreamMode,
    TenantId,
};
use flowfabric::Engine;
use flowfabric_tests::Store;

use crate::flows::{claim_all, create, edge, graph, member};
use crate::setup_on;

const RETENTION: Duration = Duration::from_millis(200);

async fn exists(e: &Engine, t: TenantId, id: ExecutionId) -> bool {
    match e.get(t, id).await {
        Ok(_) => true,
        Err(err) if err.kind() == "not_found" => false,
        Err(err) => panic!("{err}"),
    }
}

async fn old_ended_executions_are_deleted_with_what_they_recorded(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let keyed = |input: &str| {
        let mut new = NewExecution::new("echo", input.as_bytes());
        new.idempotency_key = Some("once".into());
        new
    };
    let plain = e.create(t, keyed("plain")).await.unwrap().execution_id;
    let running = e
        .create(t, NewExecution::new("echo", "r"))
        .await
        .unwrap()
        .execution_id;
    let parent = e
        .create(t, NewExecution::new("echo", "p"))
        .await
        .unwrap()
        .execution_id;
    let ended_flow = create(e, t, graph(vec![member("a"), member("b")], vec![])).await;
    let live_flow = create(
        e,
        t,
        graph(vec![member("x"), member("y")], vec![edge("x", "y")]),
    )
    .await;
    let scoped = |scope| NewBudget {
        name: "scoped".into(),
        scope,
        dimensions: vec![DimensionLimit {
            dimension: "tokens".into(),
            soft_limit: None,
            hard_limit: Some(10),
        }],
        on_hard_limit: HardLimitAction::Fail,
        reset_interval_ms: None,
    };
    for scope in [
        BudgetScope::Execution {
            execution_id: plain,
        },
        BudgetScope::Flow {
            flow_id: ended_flow.flow_id,
        },
        BudgetScope::Tenant,
    ] {
        e.create_budget(t, scoped(scope)).await.unwrap();
    }
    let mut claimed = claim_all(e).await;
    e.append_frame(
        &claimed[&plain].lease,
        "log",
        StreamMode::Durable,
        b"kept until pruned",
    )
    .await
    .unwrap();
    for id in [
        plain,
        ended_flow.members["a"],
        ended_flow.members["b"],
        live_flow.members["x"],
    ] {
        e.complete(&claimed[&id].lease, b"done").await.unwrap();
    }
    let parent_lease = claimed.remove(&parent).unwrap().lease;
    let child = e
        .spawn_child(&parent_lease, NewExecution::new("echo", "c"), "c")
        .await
        .unwrap()
        .execution_id;
    let claimed = claim_all(e).await;
    e.complete(&claimed[&child].lease, b"done").await.unwrap();
    assert!(claimed.contains_key(&live_flow.members["y"]), "y runs on");

    tokio::time::sleep(RETENTION + Duration::from_millis(150)).await;
    let recent = e
        .create(t, NewExecution::new("echo", "n"))
        .await
        .unwrap()
        .execution_id;
    let claimed = claim_all(e).await;
    e.complete(&claimed[&recent].lease, b"done").await.unwrap();

    let backend = e.backend();
    let pruned = prune_ended(backend.as_ref(), RETENTION, 100).await.unwrap();
    assert_eq!(pruned, 3, "plain, and the ended flow's two members");
    for gone in [plain, ended_flow.members["a"], ended_flow.members["b"]] {
        assert!(!exists(e, t, gone).await, "{gone} was deleted");
    }
    let flow = backend.get_flow(t, ended_flow.flow_id).await.unwrap_err();
    assert_eq!(flow.kind(), "not_found", "{flow}");
    for kept in [running, parent, child, recent, live_flow.members["x"]] {
        assert!(exists(e, t, kept).await, "{kept} is kept");
    }
    backend
        .get_flow(t, live_flow.flow_id)
        .await
        .expect("a running flow is kept whole");
    assert_eq!(db.count("frames").await, 0, "its frames went with it");
    assert_eq!(
        db.count(
            "attempts a WHERE NOT EXISTS (SELECT 1 FROM executions x \
             WHERE x.tenant_id = a.tenant_id AND x.execution_id = a.execution_id)"
        )
        .await,
        0,
        "their attempts went with them"
    );
    assert_eq!(
        db.count("budgets").await,
        1,
        "budgets scoped to them went too"
    );
    let again = e.create(t, keyed("again")).await.unwrap();
    assert!(again.created, "its idempotency key went with it");

    // A spawned child joins its parent's flow: both stay until the parent
    // too has been ended for the retention period, then go together.
    e.complete(&parent_lease, b"done").await.unwrap();
    assert_eq!(
        prune_ended(backend.as_ref(), RETENTION, 100).await.unwrap(),
        0
    );
    assert!(exists(e, t, child).await, "the parent ended only now");
    tokio::time::sleep(RETENTION + Duration::from_millis(150)).await;
    assert_eq!(
        prune_ended(backend.as_ref(), RETENTION, 100).await.unwrap(),
        3
    );
    for gone in [parent, child, recent] {
        assert!(!exists(e, t, gone).await, "{gone} was deleted");
    }
    assert!(exists(e, t, running).await);
}

/// A tenant whose executions cannot be deleted (here a trigger refuses
/// them) does not keep the pass from the tenants after it: every other
/// tenant's old executions still go, and the pass reports the failure.
async fn one_tenants_failure_does_not_stop_anothers_pruning(store: Store) {
    let (db, _) = setup_on(store).await;
    let e = &db.engine;
    // Made in this order so that each name sorts, and lists, both ways round.
    let names = ["a-poisoned", "b-fine", "c-poisoned", "d-fine"];
    let mut ended = Vec::new();
    for name in names {
        let t = db.tenant(name).await;
        let id = e
            .create(t, NewExecution::new("echo", "x"))
            .await
            .unwrap()
            .execution_id;
        ended.push((name, t, id));
    }
    let claimed = e.claim(&crate::request(10)).await.unwrap();
    assert_eq!(claimed.len(), names.len());
    for c in &claimed {
        e.complete(&c.lease, b"done").await.unwrap();
    }
    db.refuse_execution_deletes(&["a-poisoned", "c-poisoned"])
        .await;
    tokio::time::sleep(RETENTION + Duration::from_millis(150)).await;

    let failed = prune_ended(e.backend().as_ref(), RETENTION, 100)
        .await
        .unwrap_err();
    assert!(
        failed.to_string().contains("refused by the test"),
        "{failed}"
    );
    for (name, t, id) in ended {
        let poisoned = name.ends_with("poisoned");
        assert_eq!(exists(e, t, id).await, poisoned, "{name}'s execution");
    }
}

on_both_backends!(
    old_ended_executions_are_deleted_with_what_they_recorded,
    one_tenants_failure_does_not_stop_anothers_pruning,
);
