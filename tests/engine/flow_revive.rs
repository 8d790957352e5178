//! Replaying a failed flow member with `revive_dependents` (reference:
//! `replay_execution` re-opening what the failure closed): the dependents
//! its failure skipped come back, joins are recounted from their edges, the
//! flow runs to the end; a dependent that another failure still blocks, or
//! that was cancelled, stays as it is; refusals change nothing.

use std::collections::HashMap;

use flowfabric::model::{
    ClaimedExecution, EdgeState, ExecutionId, Failure, FailureClass, FlowCancelPolicy, FlowState,
    JoinPolicy, JoinState, OnSatisfied, PublicState, Replay, TenantId,
};
use flowfabric::Engine;
use flowfabric_tests::Store;

use crate::flows::{claim_all, create, edge, graph, joined, member, no_retry, passing, state};
use crate::setup_on;

const REVIVE: Replay = Replay {
    keep_steps: false,
    revive_dependents: true,
};

/// Claims taken and not yet ended, by execution: a claim takes every
/// runnable member, so one claimed earlier is found here.
#[derive(Default)]
struct Held(HashMap<ExecutionId, ClaimedExecution>);

impl Held {
    async fn take(&mut self, e: &Engine, id: ExecutionId) -> ClaimedExecution {
        self.0.extend(claim_all(e).await);
        self.0.remove(&id).expect("claimable")
    }

    async fn fail(&mut self, e: &Engine, id: ExecutionId) {
        let claimed = self.take(e, id).await;
        e.fail(
            &claimed.lease,
            Failure::new(FailureClass::Permanent, "boom"),
        )
        .await
        .unwrap();
    }

    /// Complete `id`; the input it ran with.
    async fn complete(&mut self, e: &Engine, id: ExecutionId, result: &[u8]) -> Vec<u8> {
        let claimed = self.take(e, id).await;
        e.complete(&claimed.lease, result).await.unwrap();
        claimed.input
    }
}

async fn states(e: &Engine, t: TenantId, ids: &[ExecutionId]) -> Vec<PublicState> {
    let mut out = Vec::new();
    for id in ids {
        out.push(state(e, t, *id).await);
    }
    out
}

async fn a_replayed_member_revives_the_chain_its_failure_skipped(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut held = Held::default();
    let f = create(
        e,
        t,
        graph(
            vec![no_retry(member("a")), member("b"), member("c")],
            vec![passing("a", "b"), edge("b", "c")],
        ),
    )
    .await;
    let (a, b, c) = (f.members["a"], f.members["b"], f.members["c"]);
    held.fail(e, a).await;
    assert_eq!(
        states(e, t, &[b, c]).await,
        [PublicState::Skipped, PublicState::Skipped]
    );
    let failed = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(failed.summary.state, FlowState::Failed);

    let outcome = e.replay_with(t, a, REVIVE).await.unwrap();
    assert_eq!(outcome.replay_count, 1);
    assert_eq!(outcome.revived, [b, c], "b, then its own dependent c");
    assert_eq!(
        states(e, t, &[a, b, c]).await,
        [
            PublicState::Waiting,
            PublicState::WaitingChildren,
            PublicState::WaitingChildren
        ]
    );
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.state, FlowState::Running);
    assert!(snap.edges.iter().all(|ed| ed.state == EdgeState::Pending));
    assert!(snap
        .members
        .iter()
        .filter(|m| m.key != "a")
        .all(|m| m.join_state == Some(JoinState::Pending)));

    // The flow now runs as if the failure never happened.
    held.complete(e, a, b"from-a").await;
    assert_eq!(
        held.complete(e, b, b"from-b").await,
        b"from-a",
        "a passes to b"
    );
    held.complete(e, c, b"").await;
    let done = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(done.summary.state, FlowState::Completed);
    // Nothing else came back, and replaying a success revives nothing.
    let again = e.replay_with(t, c, REVIVE).await.unwrap();
    assert!(again.revived.is_empty());
}

/// `d` joins `a` and `x` (all of): both fail. Reviving through `a` alone
/// cannot help while `x` is failed; once `a` has succeeded, reviving
/// through `x` recounts `d`'s join from its edges, `a`'s success included.
async fn a_join_is_recounted_from_its_edges(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut held = Held::default();
    let f = create(
        e,
        t,
        graph(
            vec![no_retry(member("a")), no_retry(member("x")), member("d")],
            vec![edge("a", "d"), edge("x", "d")],
        ),
    )
    .await;
    let (a, x, d) = (f.members["a"], f.members["x"], f.members["d"]);
    held.fail(e, a).await;
    assert_eq!(state(e, t, d).await, PublicState::Skipped);
    held.fail(e, x).await;

    let outcome = e.replay_with(t, a, REVIVE).await.unwrap();
    assert!(outcome.revived.is_empty(), "x still fails d's join");
    assert_eq!(state(e, t, d).await, PublicState::Skipped);
    assert_eq!(
        e.flow_edge(t, f.flow_id, "a", "d").await.unwrap().state,
        EdgeState::Pending,
        "a's edge is open again, to count its next end"
    );
    held.complete(e, a, b"").await;
    assert_eq!(state(e, t, d).await, PublicState::Skipped);

    let outcome = e.replay_with(t, x, REVIVE).await.unwrap();
    assert_eq!(outcome.revived, [d]);
    assert_eq!(state(e, t, d).await, PublicState::WaitingChildren);
    held.complete(e, x, b"").await;
    assert_eq!(state(e, t, d).await, PublicState::Waiting, "both succeeded");
    held.complete(e, d, b"").await;
}

/// Only skipped dependents come back: one an operator cancelled stays
/// cancelled, and a skipped quorum comes back when it can be met again
/// with another of its upstreams still failed.
async fn cancelled_dependents_stay_and_a_quorum_comes_back(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut held = Held::default();
    let quorum = JoinPolicy::Quorum {
        k: 2,
        on_satisfied: OnSatisfied::LetRun,
    };
    let f = create(
        e,
        t,
        graph(
            vec![
                no_retry(member("a")),
                no_retry(member("y")),
                member("z"),
                member("cancelled"),
                joined("q", quorum),
            ],
            vec![
                edge("a", "cancelled"),
                edge("a", "q"),
                edge("y", "q"),
                edge("z", "q"),
            ],
        ),
    )
    .await;
    let (a, y, q) = (f.members["a"], f.members["y"], f.members["q"]);
    e.cancel(t, f.members["cancelled"], "not wanted")
        .await
        .unwrap();
    held.fail(e, y).await;
    held.fail(e, a).await;
    assert_eq!(state(e, t, q).await, PublicState::Skipped, "3 - 2 < 2");
    // Reviving through `a`: q needs 2 of 3, with y failed: a and z can
    // still make it, so q comes back; `cancelled` does not.
    let outcome = e.replay_with(t, a, REVIVE).await.unwrap();
    assert_eq!(outcome.revived, [q]);
    assert_eq!(
        state(e, t, f.members["cancelled"]).await,
        PublicState::Cancelled
    );
    held.complete(e, a, b"").await;
    held.complete(e, f.members["z"], b"").await;
    assert_eq!(state(e, t, q).await, PublicState::Waiting, "2 of 3");
}

async fn refused_revivals_change_nothing(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut held = Held::default();
    // Outside any flow: invalid, and the execution is not replayed.
    let lone = e.create(t, crate::task("lone")).await.unwrap().execution_id;
    held.complete(e, lone, b"").await;
    let err = e.replay_with(t, lone, REVIVE).await.unwrap_err();
    assert_eq!(err.kind(), "invalid_input", "{err}");
    assert!(err.to_string().contains("not a member of a flow"), "{err}");
    let unchanged = e.get(t, lone).await.unwrap();
    assert_eq!(
        (unchanged.state, unchanged.replay_count),
        (PublicState::Completed, 0)
    );

    // A cancelled flow: refused, its failed member stays failed.
    let f = create(
        e,
        t,
        graph(
            vec![no_retry(member("a")), member("b"), member("c")],
            vec![edge("a", "b")],
        ),
    )
    .await;
    let (a, b) = (f.members["a"], f.members["b"]);
    held.fail(e, a).await;
    e.cancel_flow(t, f.flow_id, FlowCancelPolicy::CancelAll, "stop")
        .await
        .unwrap();
    let err = e.replay_with(t, a, REVIVE).await.unwrap_err();
    assert_eq!(err.kind(), "flow_cancelled", "{err}");
    assert_eq!(
        states(e, t, &[a, b]).await,
        [PublicState::Failed, PublicState::Skipped]
    );
    assert_eq!(e.get(t, a).await.unwrap().replay_count, 0);

    // Another tenant's member: not found.
    let other = db.tenant("other").await;
    let err = e.replay_with(other, a, REVIVE).await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
}

async fn a_running_member_is_not_replayed(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut held = Held::default();
    let f = create(
        e,
        t,
        graph(vec![member("a"), member("b")], vec![edge("a", "b")]),
    )
    .await;
    held.take(e, f.members["a"]).await;
    let err = e.replay_with(t, f.members["a"], REVIVE).await.unwrap_err();
    assert_eq!(err.kind(), "conflict", "{err}");
    assert_eq!(
        state(e, t, f.members["b"]).await,
        PublicState::WaitingChildren
    );
}

on_both_backends!(
    a_replayed_member_revives_the_chain_its_failure_skipped,
    a_join_is_recounted_from_its_edges,
    cancelled_dependents_stay_and_a_quorum_comes_back,
    refused_revivals_change_nothing,
    a_running_member_is_not_replayed,
);
