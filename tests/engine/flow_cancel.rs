//! Cancelling flows: all members or only those not yet running, a sibling
//! cancel that meets a locked row, and a cancel cut short by a crash, which
//! the scanner finishes.

use flowfabric::backend::Sweep;
use flowfabric::model::{FlowCancelPolicy, FlowState, OnSatisfied, PublicState};
use flowfabric_tests::Store;

use crate::flows::{any_of_flow, claim_all, create, edge, graph, member, state};
use crate::{request, setup, setup_on};

async fn flow_cancel_all_cancels_running_and_waiting_members(store: Store) {
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
    let ca = claim_all(e).await.remove(&f.members["a"]).unwrap();
    let n = e
        .cancel_flow(t, f.flow_id, FlowCancelPolicy::CancelAll, "stop")
        .await
        .unwrap();
    assert_eq!(n, 3);
    for key in ["a", "b", "c"] {
        assert_eq!(
            state(e, t, f.members[key]).await,
            PublicState::Cancelled,
            "{key}"
        );
    }
    assert!(
        e.complete(&ca.lease, b"").await.is_err(),
        "a's lease is revoked"
    );
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.state, FlowState::Cancelled);
    let again = e
        .cancel_flow(t, f.flow_id, FlowCancelPolicy::CancelAll, "stop")
        .await
        .unwrap();
    assert_eq!(again, 0, "idempotent");
    let err = e
        .extend_flow(t, f.flow_id, graph(vec![member("late")], vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "flow_cancelled");
}

async fn flow_cancel_pending_lets_running_members_finish(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(vec![member("a"), member("b")], vec![edge("a", "b")]),
    )
    .await;
    let ca = claim_all(e).await.remove(&f.members["a"]).unwrap();
    let n = e
        .cancel_flow(t, f.flow_id, FlowCancelPolicy::CancelPending, "drain")
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(state(e, t, f.members["b"]).await, PublicState::Cancelled);
    e.complete(&ca.lease, b"").await.unwrap();
    let snap = e.backend().get_flow(t, f.flow_id).await.unwrap();
    assert_eq!(snap.summary.state, FlowState::Cancelled);
}

#[tokio::test]
async fn sibling_cancel_waits_for_a_locked_row_then_the_scanner_finishes_it() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let f = any_of_flow(e, t, OnSatisfied::CancelRemaining).await;
    let mut claimed = claim_all(e).await;
    // Another transaction holds b's row while a completes.
    let mut holder = db.pg().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM executions WHERE execution_id = $1 FOR UPDATE")
        .bind(f.members["b"])
        .execute(&mut *holder)
        .await
        .unwrap();
    e.complete(&claimed.remove(&f.members["a"]).unwrap().lease, b"")
        .await
        .unwrap();
    holder.rollback().await.unwrap();
    assert_eq!(state(e, t, f.members["b"]).await, PublicState::Active);
    assert_eq!(
        e.backend()
            .cancel_pending_siblings(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(e, t, f.members["b"]).await, PublicState::Cancelled);
    assert_eq!(
        e.backend()
            .cancel_pending_siblings(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0
    );
    let flagged: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_groups WHERE cancel_pending")
        .fetch_one(db.pg())
        .await
        .unwrap();
    assert_eq!(flagged, 0, "the scanner clears the flag once done");
}

/// A process that dies after marking a flow cancelled, before it has
/// cancelled every member, leaves `cancel_phases`: the scanner finishes the
/// job. The crash is simulated by taking the first step by hand.
#[tokio::test]
async fn a_flow_cancel_cut_short_is_finished_by_the_scanner() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let f = create(
        e,
        t,
        graph(
            vec![member("a"), member("b"), member("c")],
            vec![edge("a", "c")],
        ),
    )
    .await;
    let running = e.claim(&request(1)).await.unwrap();
    assert_eq!(running.len(), 1);
    sqlx::query(
        "UPDATE flows SET cancelled_at = now(), cancellation_reason = 'cut short', \
             cancel_phases = '{runnable,active,suspended}' WHERE flow_id = $1",
    )
    .bind(f.flow_id)
    .execute(db.pg())
    .await
    .unwrap();
    let finished = e
        .backend()
        .cancel_pending_siblings(Sweep::every_tenant(100))
        .await
        .unwrap();
    assert!(
        finished >= 2,
        "{finished}: c may be skipped by a's cancel instead"
    );
    for key in ["a", "b", "c"] {
        let state = state(e, t, f.members[key]).await;
        assert!(
            matches!(state, PublicState::Cancelled | PublicState::Skipped),
            "{key} is {state}"
        );
    }
    assert!(e.complete(&running[0].lease, b"late").await.is_err());
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM flows WHERE cancel_phases IS NOT NULL")
            .fetch_one(db.pg())
            .await
            .unwrap();
    assert_eq!(left, 0, "the scanner clears the mark once done");

    // A cancel that runs to the end clears it itself.
    let g = create(e, t, graph(vec![member("x")], vec![])).await;
    e.cancel_flow(t, g.flow_id, FlowCancelPolicy::CancelAll, "done")
        .await
        .unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM flows WHERE cancel_phases IS NOT NULL")
            .fetch_one(db.pg())
            .await
            .unwrap();
    assert_eq!(left, 0);
}

on_both_backends!(
    flow_cancel_all_cancels_running_and_waiting_members,
    flow_cancel_pending_lets_running_members_finish,
);
