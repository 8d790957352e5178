//! Children spawned by a running execution, and waiting for them
//! (`spawn-child` / `wait-children`).

use flowfabric::backend::Sweep;
use flowfabric::model::{
    AttemptType, ChildrenOutcome, ClaimedExecution, Failure, FailureClass, NewExecution,
    PublicState, TimeoutBehavior,
};
use flowfabric::model::{ExecutionId, TenantId};
use flowfabric::{Engine, EngineError};
use flowfabric_tests::Store;

use crate::{claim_none, claim_one, setup, setup_on, task};

async fn state(e: &Engine, t: TenantId, id: ExecutionId) -> PublicState {
    e.state(t, id).await.unwrap().state
}

async fn spawn(e: &Engine, parent: &ClaimedExecution, key: &str, input: &str) -> ExecutionId {
    e.spawn_child(&parent.lease, task(input), key)
        .await
        .unwrap()
        .execution_id
}

async fn wait(e: &Engine, parent: &ClaimedExecution) -> ChildrenOutcome {
    e.wait_children(&parent.lease, None, TimeoutBehavior::Fail)
        .await
        .unwrap()
}

async fn a_parent_waits_for_its_children_and_resumes_when_the_last_one_ends(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let parent_id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    let ok = spawn(e, &parent, "ok", "a").await;
    let bad = spawn(e, &parent, "bad", "b").await;
    assert_eq!(wait(e, &parent).await, ChildrenOutcome::Suspended);
    assert_eq!(state(e, t, parent_id).await, PublicState::Suspended);
    assert!(
        e.complete(&parent.lease, b"").await.is_err(),
        "the lease went with the suspension"
    );

    // The children joined a flow made for the parent, which is its `root`.
    let parent_row = e.get(t, parent_id).await.unwrap();
    let flow = e
        .backend()
        .get_flow(t, parent_row.flow_id.unwrap())
        .await
        .unwrap();
    let mut keys: Vec<_> = flow.members.iter().map(|m| m.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["bad", "ok", "root"]);

    let first = claim_one(e).await;
    let second = claim_one(e).await;
    let (ok_lease, bad_lease) = if first.lease.execution_id == ok {
        (first, second)
    } else {
        (second, first)
    };
    e.complete(&ok_lease.lease, b"fine").await.unwrap();
    assert_eq!(
        state(e, t, parent_id).await,
        PublicState::Suspended,
        "one child is still running"
    );
    e.fail(
        &bad_lease.lease,
        Failure::new(FailureClass::Permanent, "broken"),
    )
    .await
    .unwrap();
    assert_eq!(
        state(e, t, parent_id).await,
        PublicState::Waiting,
        "the last child's transaction resumed the parent"
    );

    let resumed = claim_one(e).await;
    assert_eq!(resumed.lease.execution_id, parent_id);
    assert_eq!(resumed.attempt_type, AttemptType::Resume);
    assert_eq!(resumed.lease.attempt_index, parent.lease.attempt_index);
    // The re-run guest spawns the same keys again: it gets the same children.
    assert_eq!(spawn(e, &resumed, "ok", "a").await, ok);
    let ChildrenOutcome::Done(children) = wait(e, &resumed).await else {
        panic!("every child has ended");
    };
    let seen: Vec<_> = children
        .iter()
        .map(|c| {
            (
                c.execution_id,
                c.key.as_str(),
                c.state,
                c.result.clone(),
                c.error.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                ok,
                "ok",
                PublicState::Completed,
                Some(b"fine".to_vec()),
                None
            ),
            (bad, "bad", PublicState::Failed, None, Some("broken".into())),
        ]
    );
    e.complete(&resumed.lease, b"done").await.unwrap();
    assert_eq!(state(e, t, parent_id).await, PublicState::Completed);
}

async fn waiting_without_unfinished_children_returns_at_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let parent_id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    assert_eq!(wait(e, &parent).await, ChildrenOutcome::Done(vec![]));
    let child = spawn(e, &parent, "c", "x").await;
    let running = claim_one(e).await;
    e.complete(&running.lease, b"r").await.unwrap();
    let ChildrenOutcome::Done(children) = wait(e, &parent).await else {
        panic!("the only child has ended");
    };
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].execution_id, child);
    assert_eq!(
        state(e, t, parent_id).await,
        PublicState::Active,
        "still running"
    );
    e.complete(&parent.lease, b"").await.unwrap();
}

async fn a_key_spawns_once_and_another_members_key_is_refused(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    e.create(t, task("parent")).await.unwrap();
    let parent = claim_one(e).await;
    let first = e.spawn_child(&parent.lease, task("x"), "x").await.unwrap();
    let again = e
        .spawn_child(&parent.lease, task("different input"), "x")
        .await
        .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.execution_id, again.execution_id);
    assert_eq!(db.count("executions").await, 2);

    // The child is a member of the same flow: it cannot take its own key,
    // nor the parent's.
    let child = claim_one(e).await;
    for key in ["x", "root"] {
        let refused = e.spawn_child(&child.lease, task("y"), key).await;
        assert!(
            matches!(
                refused,
                Err(EngineError::Graph {
                    kind: "member_exists",
                    ..
                })
            ),
            "{key}: {refused:?}"
        );
    }
    assert_eq!(db.count("executions").await, 2, "nothing was written");
    // A grandchild is fine: it belongs to the child, not to the parent.
    let grandchild = spawn(e, &child, "grandchild", "z").await;
    let row = e.get(t, grandchild).await.unwrap();
    assert_eq!(row.parent_id, Some(child.lease.execution_id));
    assert_eq!(
        row.flow_id,
        e.get(t, first.execution_id).await.unwrap().flow_id
    );
}

async fn bad_children_and_stale_leases_are_refused_and_write_nothing(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    let before = (db.count("executions").await, db.count("flows").await);

    let bad_key = e.spawn_child(&parent.lease, task("x"), "no spaces").await;
    assert!(matches!(bad_key, Err(EngineError::InvalidInput { .. })));
    let huge = NewExecution::new("echo", vec![0u8; e.limits().max_input_bytes + 1]);
    let too_big = e.spawn_child(&parent.lease, huge, "big").await;
    assert!(matches!(too_big, Err(EngineError::PayloadTooLarge { .. })));
    let mut keyed = task("x");
    keyed.idempotency_key = Some("k".into());
    assert!(matches!(
        e.spawn_child(&parent.lease, keyed, "k").await,
        Err(EngineError::InvalidInput { .. })
    ));

    // Reclaimed: the old lease can neither spawn nor wait.
    db.expire_lease(id).await;
    e.backend()
        .reclaim_expired_leases(Sweep::every_tenant(100))
        .await
        .unwrap();
    let reclaimed = claim_one(e).await;
    let stale = e.spawn_child(&parent.lease, task("x"), "late").await;
    assert!(
        matches!(stale, Err(EngineError::StaleLease { .. })),
        "{stale:?}"
    );
    let stale_wait = e
        .wait_children(&parent.lease, None, TimeoutBehavior::Fail)
        .await;
    assert!(matches!(stale_wait, Err(EngineError::StaleLease { .. })));
    assert_eq!(
        (db.count("executions").await, db.count("flows").await),
        before,
        "no child and no flow were written"
    );
    assert_eq!(state(e, t, id).await, PublicState::Active);
    e.complete(&reclaimed.lease, b"").await.unwrap();
}

async fn a_child_ended_by_an_operator_counts(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let parent_id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    let child = spawn(e, &parent, "c", "x").await;
    assert_eq!(wait(e, &parent).await, ChildrenOutcome::Suspended);
    assert!(e.cancel(t, child, "not needed").await.unwrap());
    let resumed = claim_one(e).await;
    assert_eq!(resumed.lease.execution_id, parent_id);
    let ChildrenOutcome::Done(children) = wait(e, &resumed).await else {
        panic!("the child was cancelled");
    };
    assert_eq!(children[0].state, PublicState::Cancelled);
    assert_eq!(children[0].error.as_deref(), Some("not needed"));
}

/// The completion trigger names a parent once per child that ended: two in one
/// statement name it twice, and it must still resume once.
async fn siblings_completed_in_one_statement_resume_their_parent_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let parent_id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    spawn(e, &parent, "a", "a").await;
    spawn(e, &parent, "b", "b").await;
    assert_eq!(wait(e, &parent).await, ChildrenOutcome::Suspended);
    let (first, second) = (claim_one(e).await, claim_one(e).await);
    let written = e
        .complete_many(&[
            (first.lease.clone(), &b"1"[..]),
            (second.lease.clone(), &b"2"[..]),
        ])
        .await
        .unwrap();
    assert!(written.iter().all(Result::is_ok), "{written:?}");
    assert_eq!(state(e, t, parent_id).await, PublicState::Waiting);
    let resumed = claim_one(e).await;
    assert_eq!(resumed.lease.execution_id, parent_id);
    assert_eq!(resumed.attempt_type, AttemptType::Resume);
    claim_none(e).await;
    let ChildrenOutcome::Done(children) = wait(e, &resumed).await else {
        panic!("both children have ended");
    };
    assert_eq!(children.len(), 2);
}

#[tokio::test]
async fn a_parent_locked_when_its_last_child_ends_is_resumed_by_the_scanner() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let parent_id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    spawn(e, &parent, "c", "x").await;
    assert_eq!(wait(e, &parent).await, ChildrenOutcome::Suspended);
    let child = claim_one(e).await;

    let mut holder = db.pg().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM executions WHERE execution_id = $1 FOR UPDATE")
        .bind(parent_id)
        .execute(&mut *holder)
        .await
        .unwrap();
    e.complete(&child.lease, b"").await.unwrap();
    holder.rollback().await.unwrap();
    assert_eq!(
        state(e, t, parent_id).await,
        PublicState::Suspended,
        "the child did not wait for its parent's lock"
    );
    claim_none(e).await;
    assert_eq!(
        e.backend()
            .wake_waiting_parents(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(e, t, parent_id).await, PublicState::Waiting);
    assert_eq!(
        e.backend()
            .wake_waiting_parents(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0
    );
    assert_eq!(claim_one(e).await.lease.execution_id, parent_id);
}

async fn a_wait_that_times_out_fails_the_parent(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let parent_id = e.create(t, task("parent")).await.unwrap().execution_id;
    let parent = claim_one(e).await;
    let child = spawn(e, &parent, "c", "x").await;
    let outcome = e
        .wait_children(&parent.lease, Some(1), TimeoutBehavior::Fail)
        .await
        .unwrap();
    assert_eq!(outcome, ChildrenOutcome::Suspended);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        e.backend()
            .time_out_suspensions(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(e, t, parent_id).await, PublicState::Failed);
    assert_eq!(
        state(e, t, child).await,
        PublicState::Waiting,
        "the child carries on"
    );
}

on_both_backends!(
    a_parent_waits_for_its_children_and_resumes_when_the_last_one_ends,
    waiting_without_unfinished_children_returns_at_once,
    a_key_spawns_once_and_another_members_key_is_refused,
    bad_children_and_stale_leases_are_refused_and_write_nothing,
    a_child_ended_by_an_operator_counts,
    a_wait_that_times_out_fails_the_parent,
    siblings_completed_in_one_statement_resume_their_parent_once,
);
