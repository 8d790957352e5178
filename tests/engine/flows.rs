//! Flows (reference §6: flow_linear_chain, flow_fan_out, flow_dependency_failure_propagation,
//! flow_data_passing, edge policies AnyOf/Quorum with CancelRemaining/LetRun); flow_cancel is
//! in `flow_cancel.rs`.

use flowfabric_tests::Store;
use std::collections::HashMap;

use flowfabric::model::TenantId;
use flowfabric::model::{
    ClaimedExecution, CompletionEvent, EdgeState, ExecutionId, Failure, FailureClass,
    FlowCancelPolicy, FlowEdge, FlowMember, FlowState, GraphApplied, GraphChange, JoinPolicy,
    JoinState, NewExecution, NewFlow, OnSatisfied, PublicState,
};
use flowfabric::{Engine, EngineError};
use flowfabric_tests::TestDb;

use crate::{claim_none, request, setup_on};

pub(crate) fn member(key: &str) -> FlowMember {
    FlowMember {
        key: key.into(),
        execution: NewExecution::new("echo", key.as_bytes()),
        join: JoinPolicy::AllOf,
    }
}

pub(crate) fn joined(key: &str, join: JoinPolicy) -> FlowMember {
    FlowMember {
        join,
        ..member(key)
    }
}

pub(crate) fn edge(from: &str, to: &str) -> FlowEdge {
    FlowEdge {
        from: from.into(),
        to: to.into(),
        pass_result: false,
    }
}

pub(crate) fn passing(from: &str, to: &str) -> FlowEdge {
    FlowEdge {
        pass_result: true,
        ..edge(from, to)
    }
}

pub(crate) fn graph(members: Vec<FlowMember>, edges: Vec<FlowEdge>) -> GraphChange {
    GraphChange {
        expected_revision: None,
        members,
        edges,
    }
}

fn named(name: &str) -> NewFlow {
    NewFlow {
        name: name.into(),
        ..Default::default()
    }
}

pub(crate) async fn create(e: &Engine, t: TenantId, change: GraphChange) -> GraphApplied {
    e.create_flow(t, named("f"), change)
        .await
        .expect("create flow")
}

/// Everything claimable now, by execution id.
pub(crate) async fn claim_all(e: &Engine) -> HashMap<ExecutionId, ClaimedExecution> {
    e.claim(&request(100))
        .await
        .expect("claim")
        .into_iter()
        .map(|c| (c.lease.execution_id, c))
        .collect()
}

pub(crate) async fn state(e: &Engine, t: TenantId, id: ExecutionId) -> PublicState {
    e.get(t, id).await.unwrap().state
}

pub(crate) fn no_retry(mut m: FlowMember) -> FlowMember {
    m.execution.policy.retry.max_retries = 0;
    m
}

async fn flow_linear_chain_with_data_passing(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(
            vec![member("a"), member("b"), member("c")],
            vec![passing("a", "b"), passing("b", "c")],
        ),
    )
    .await;
    assert_eq!(f.revision, 1);
    let (a, b, c) = (f.members["a"], f.members["b"], f.members["c"]);
    assert_eq!(state(e, t, b).await, PublicState::WaitingChildren);

    let mut claimed = claim_all(e).await;
    assert_eq!(claimed.len(), 1, "only the root runs first");
    e.complete(&claimed.remove(&a).unwrap().lease, b"from-a")
        .await
        .unwrap();

    let mut claimed = claim_all(e).await;
    let cb = claimed.remove(&b).expect("b runs once a succeeded");
    assert_eq!(cb.input, b"from-a", "a's result is b's input");
    assert!(claimed.is_empty());
    e.complete(&cb.lease, b"from-b").await.unwrap();

    let cc = claim_all(e).await.remove(&c).expect("c runs after b");
    assert_eq!(cc.input, b"from-b");
    e.complete(&cc.lease, b"done").await.unwrap();

    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.state, FlowState::Completed);
    assert_eq!((snap.summary.members, snap.summary.unfinished), (3, 0));
    assert!(snap.edges.iter().all(|e| e.state == EdgeState::Satisfied));
    let c_view = snap.members.iter().find(|m| m.key == "c").unwrap();
    assert_eq!(c_view.join_state, Some(JoinState::Satisfied));
    let ex = e.get(t, c).await.unwrap();
    assert_eq!(
        (ex.flow_id, ex.flow_key.as_deref()),
        (Some(f.flow_id), Some("c"))
    );
}

async fn flow_fan_out_fan_in_waits_for_every_upstream(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(
            vec![member("a"), member("b"), member("c"), member("d")],
            vec![
                edge("a", "b"),
                edge("a", "c"),
                edge("b", "d"),
                edge("c", "d"),
            ],
        ),
    )
    .await;
    let ca = claim_all(e).await.remove(&f.members["a"]).unwrap();
    e.complete(&ca.lease, b"").await.unwrap();
    let mut fan = claim_all(e).await;
    assert_eq!(fan.len(), 2, "b and c run in parallel");
    e.complete(&fan.remove(&f.members["b"]).unwrap().lease, b"")
        .await
        .unwrap();
    claim_none(e).await;
    assert_eq!(
        state(e, t, f.members["d"]).await,
        PublicState::WaitingChildren
    );
    e.complete(&fan.remove(&f.members["c"]).unwrap().lease, b"")
        .await
        .unwrap();
    let cd = claim_all(e).await;
    assert!(
        cd.contains_key(&f.members["d"]),
        "d runs once b and c are done"
    );
}

async fn flow_dependency_failure_propagation_skips_the_chain(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(
            vec![
                no_retry(member("a")),
                member("b"),
                member("c"),
                member("side"),
            ],
            vec![edge("a", "b"), edge("b", "c")],
        ),
    )
    .await;
    let mut claimed = claim_all(e).await;
    assert_eq!(claimed.len(), 2, "a and the unrelated root");
    e.fail(
        &claimed.remove(&f.members["a"]).unwrap().lease,
        Failure::new(FailureClass::Permanent, "boom"),
    )
    .await
    .unwrap();
    assert_eq!(state(e, t, f.members["b"]).await, PublicState::Skipped);
    assert_eq!(state(e, t, f.members["c"]).await, PublicState::Skipped);
    let events = db.events::<CompletionEvent>(t).await;
    let outcomes: Vec<&str> = events.iter().map(|ev| ev.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "skipped", "skipped"]);

    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.state, FlowState::Running, "`side` still runs");
    e.complete(&claimed.remove(&f.members["side"]).unwrap().lease, b"")
        .await
        .unwrap();
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(
        (snap.summary.state, snap.summary.failed),
        (FlowState::Failed, 1)
    );
    let b = snap.members.iter().find(|m| m.key == "b").unwrap();
    assert_eq!(b.join_state, Some(JoinState::Impossible));
}

pub(crate) async fn any_of_flow(
    e: &Engine,
    t: TenantId,
    on_satisfied: OnSatisfied,
) -> GraphApplied {
    create(
        e,
        t,
        graph(
            vec![
                member("a"),
                member("b"),
                joined("d", JoinPolicy::AnyOf { on_satisfied }),
            ],
            vec![edge("a", "d"), edge("b", "d")],
        ),
    )
    .await
}

async fn any_of_cancel_remaining_cancels_the_running_sibling(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = any_of_flow(e, t, OnSatisfied::CancelRemaining).await;
    let mut claimed = claim_all(e).await;
    let cb = claimed.remove(&f.members["b"]).unwrap();
    e.complete(&claimed.remove(&f.members["a"]).unwrap().lease, b"")
        .await
        .unwrap();
    assert_eq!(state(e, t, f.members["b"]).await, PublicState::Cancelled);
    let err = e.complete(&cb.lease, b"late").await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NotActive { .. } | EngineError::StaleLease { .. }
        ),
        "the cancelled sibling's lease is fenced out: {err:?}"
    );
    let cd = claim_all(e).await;
    assert_eq!(cd.len(), 1);
    e.complete(&cd[&f.members["d"]].lease, b"").await.unwrap();
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.state, FlowState::Completed);
}

async fn any_of_let_run_lets_the_sibling_finish(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = any_of_flow(e, t, OnSatisfied::LetRun).await;
    let mut claimed = claim_all(e).await;
    e.complete(&claimed.remove(&f.members["a"]).unwrap().lease, b"")
        .await
        .unwrap();
    assert_eq!(state(e, t, f.members["b"]).await, PublicState::Active);
    let cd = claim_all(e).await;
    assert!(cd.contains_key(&f.members["d"]));
    e.complete(&claimed.remove(&f.members["b"]).unwrap().lease, b"")
        .await
        .unwrap();
    claim_none(e).await;
}

async fn impossible_quorum_skips_before_the_last_upstream_ends(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let quorum = JoinPolicy::Quorum {
        k: 2,
        on_satisfied: OnSatisfied::CancelRemaining,
    };
    let f = create(
        e,
        t,
        graph(
            vec![
                no_retry(member("a")),
                no_retry(member("b")),
                member("c"),
                joined("d", quorum),
            ],
            vec![edge("a", "d"), edge("b", "d"), edge("c", "d")],
        ),
    )
    .await;
    let mut claimed = claim_all(e).await;
    let fail = Failure::new(FailureClass::Permanent, "no");
    e.fail(
        &claimed.remove(&f.members["a"]).unwrap().lease,
        fail.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        state(e, t, f.members["d"]).await,
        PublicState::WaitingChildren
    );
    e.fail(&claimed.remove(&f.members["b"]).unwrap().lease, fail)
        .await
        .unwrap();
    assert_eq!(state(e, t, f.members["d"]).await, PublicState::Skipped);
    assert_eq!(state(e, t, f.members["c"]).await, PublicState::Active);
}

async fn edges_added_later_resolve_against_members_that_already_ended(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(vec![member("a"), no_retry(member("bad"))], vec![]),
    )
    .await;
    let mut claimed = claim_all(e).await;
    e.complete(
        &claimed.remove(&f.members["a"]).unwrap().lease,
        b"\"payload\"",
    )
    .await
    .unwrap();
    e.fail(
        &claimed.remove(&f.members["bad"]).unwrap().lease,
        Failure::new(FailureClass::Permanent, "x"),
    )
    .await
    .unwrap();
    let mut change = graph(
        vec![member("after-a"), member("after-bad")],
        vec![passing("a", "after-a"), edge("bad", "after-bad")],
    );
    change.expected_revision = Some(1);
    let added = e.extend_flow(t, f.flow_id, change).await.unwrap();
    assert_eq!(added.revision, 2);
    assert_eq!(
        state(e, t, added.members["after-bad"]).await,
        PublicState::Skipped
    );
    let c = claim_all(e)
        .await
        .remove(&added.members["after-a"])
        .unwrap();
    assert_eq!(c.input, b"\"payload\"");
}

async fn graph_changes_are_refused_whole_with_the_reason(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(
            vec![member("a"), member("b"), member("c")],
            vec![edge("a", "b"), edge("b", "c")],
        ),
    )
    .await;
    let before = (db.count("executions").await, db.count("flow_edges").await);
    let refuse = |change: GraphChange| async move { e.extend_flow(t, f.flow_id, change).await };
    let kind = |r: Result<GraphApplied, EngineError>| r.unwrap_err().kind();

    assert_eq!(
        kind(refuse(graph(vec![member("x")], vec![edge("x", "x")])).await),
        "invalid_input"
    );
    let cycle = graph(
        vec![member("x"), member("y")],
        vec![edge("x", "y"), edge("y", "x")],
    );
    assert_eq!(kind(refuse(cycle).await), "cycle_detected");
    // Through the stored graph: b and c both wait, c -> b closes b -> c.
    assert_eq!(
        kind(refuse(graph(vec![], vec![edge("c", "b")])).await),
        "cycle_detected"
    );
    assert_eq!(
        kind(refuse(graph(vec![], vec![edge("a", "b")])).await),
        "dependency_exists"
    );
    // `a` is a root: it is already runnable, so nothing may be put before it.
    assert_eq!(
        kind(refuse(graph(vec![member("x")], vec![edge("x", "a")])).await),
        "member_started"
    );
    assert_eq!(
        kind(refuse(graph(vec![member("a")], vec![])).await),
        "member_exists"
    );
    assert_eq!(
        kind(refuse(graph(vec![], vec![edge("a", "nobody")])).await),
        "invalid_input"
    );
    let mut stale = graph(vec![member("x")], vec![]);
    stale.expected_revision = Some(0);
    assert_eq!(kind(refuse(stale).await), "graph_revision_conflict");
    let too_many = JoinPolicy::Quorum {
        k: 2,
        on_satisfied: OnSatisfied::LetRun,
    };
    let quorum = graph(vec![joined("q", too_many)], vec![edge("a", "q")]);
    assert_eq!(kind(refuse(quorum).await), "invalid_input");
    let any_without_edges = JoinPolicy::AnyOf {
        on_satisfied: OnSatisfied::LetRun,
    };
    assert_eq!(
        kind(refuse(graph(vec![joined("q", any_without_edges)], vec![])).await),
        "invalid_input"
    );
    let two_inputs = graph(
        vec![member("x")],
        vec![passing("a", "x"), passing("b", "x")],
    );
    assert_eq!(kind(refuse(two_inputs).await), "invalid_input");

    assert_eq!(
        (db.count("executions").await, db.count("flow_edges").await),
        before,
        "nothing refused was written"
    );
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.revision, 1);
}

async fn flows_are_invisible_to_other_tenants(store: Store) {
    let (db, t) = setup_on(store).await;
    let other = db.tenant("other").await;
    let e = &db.engine;
    let f = create(e, t, graph(vec![member("a")], vec![])).await;
    assert_eq!(
        e.backend()
            .get_flow(other, f.flow_id)
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
    let err = e
        .extend_flow(other, f.flow_id, graph(vec![member("x")], vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
    let err = e
        .cancel_flow(other, f.flow_id, FlowCancelPolicy::CancelAll, "x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
    assert!(e.list_flows(other, None, 10).await.unwrap().is_empty());
    assert_eq!(e.list_flows(t, None, 10).await.unwrap().len(), 1);
    assert_eq!(state(e, t, f.members["a"]).await, PublicState::Waiting);
}

async fn a_long_skip_cascade_is_a_loop_not_a_recursion(store: Store) {
    let db = TestDb::on(store).await;
    let t = db.tenant("acme").await;
    let e = &db.engine;
    let n = 300;
    let mut members = vec![no_retry(member("n0"))];
    let mut edges = vec![];
    for i in 1..n {
        members.push(member(&format!("n{i}")));
        edges.push(edge(&format!("n{}", i - 1), &format!("n{i}")));
    }
    let f = create(e, t, graph(members, edges)).await;
    let c = claim_all(e).await.remove(&f.members["n0"]).unwrap();
    e.fail(&c.lease, Failure::new(FailureClass::Permanent, "x"))
        .await
        .unwrap();
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.unfinished, 0);
    let skipped = snap
        .members
        .iter()
        .filter(|m| m.state == PublicState::Skipped)
        .count();
    assert_eq!(skipped, n - 1);
}

on_both_backends!(
    flow_linear_chain_with_data_passing,
    flow_fan_out_fan_in_waits_for_every_upstream,
    flow_dependency_failure_propagation_skips_the_chain,
    any_of_cancel_remaining_cancels_the_running_sibling,
    any_of_let_run_lets_the_sibling_finish,
    impossible_quorum_skips_before_the_last_upstream_ends,
    edges_added_later_resolve_against_members_that_already_ended,
    graph_changes_are_refused_whole_with_the_reason,
    flows_are_invisible_to_other_tenants,
    a_long_skip_cascade_is_a_loop_not_a_recursion,
);
