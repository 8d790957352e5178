//! Completions written in one statement (`complete_many`, the worker pool's
//! group commit): each keeps its own fence, replay rule and answer.

use flowfabric_tests::Store;
use std::collections::HashMap;

use flowfabric::model::{
    AttemptState, ClaimedExecution, Completion, CompletionEvent, FlowEdge, FlowMember, GraphChange,
    JoinPolicy, LeaseHandle, NewExecution, NewFlow, Progress, PublicState,
};
use flowfabric::EngineError;

use crate::{claim_none, request, setup, setup_on, task};

/// Every claimed execution, completed with `result`.
fn completing<'r>(claimed: &[ClaimedExecution], result: &'r [u8]) -> Vec<(LeaseHandle, &'r [u8])> {
    claimed.iter().map(|c| (c.lease.clone(), result)).collect()
}

async fn each_completion_in_a_batch_is_fenced_and_answered_on_its_own(store: Store) {
    let (db, t) = setup_on(store).await;
    let other = db.tenant("other").await;
    let e = &db.engine;
    for i in 0..5 {
        e.create(t, task(&format!("in-{i}"))).await.unwrap();
    }
    let claimed = e.claim(&request(5)).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let [fresh_a, fresh_b, replayed, revoked, held] = &claimed[..] else {
        unreachable!()
    };
    e.complete(&replayed.lease, b"replayed").await.unwrap();
    e.revoke_lease(t, revoked.lease.execution_id).await.unwrap();
    let forged = LeaseHandle {
        tenant_id: other,
        ..held.lease.clone()
    };
    let oversized = vec![0u8; e.limits().max_result_bytes + 1];

    let results = e
        .complete_many(&[
            (fresh_a.lease.clone(), &b"a"[..]),
            (replayed.lease.clone(), &b"replayed"[..]),
            (revoked.lease.clone(), &b"late"[..]),
            (forged, &b"forged"[..]),
            (held.lease.clone(), &oversized[..]),
            (fresh_b.lease.clone(), &b"b"[..]),
        ])
        .await
        .expect("the batch is written");

    assert_eq!(results.len(), 6, "one answer per completion, in order");
    assert!(results[0].is_ok() && results[1].is_ok() && results[5].is_ok());
    assert!(
        matches!(results[2], Err(EngineError::StaleLease { .. })),
        "revoked: {:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(EngineError::NotFound { .. })),
        "another tenant's handle finds nothing: {:?}",
        results[3]
    );
    assert!(
        matches!(results[4], Err(EngineError::PayloadTooLarge { .. })),
        "{:?}",
        results[4]
    );

    let result_of = async |c: &ClaimedExecution| {
        let ex = e.get(t, c.lease.execution_id).await.unwrap();
        (ex.state, ex.result)
    };
    assert_eq!(
        result_of(fresh_a).await,
        (PublicState::Completed, Some(b"a".to_vec()))
    );
    assert_eq!(
        result_of(fresh_b).await,
        (PublicState::Completed, Some(b"b".to_vec()))
    );
    assert_eq!(
        result_of(replayed).await,
        (PublicState::Completed, Some(b"replayed".to_vec())),
        "a replay changes nothing"
    );
    assert_eq!(result_of(revoked).await, (PublicState::Waiting, None));
    assert_eq!(result_of(held).await, (PublicState::Active, None));

    let mut completed: Vec<_> = db
        .events::<CompletionEvent>(t)
        .await
        .into_iter()
        .map(|ev| (ev.execution_id, ev.outcome))
        .collect();
    completed.sort();
    let mut expected: Vec<_> = [fresh_a, fresh_b, replayed]
        .iter()
        .map(|c| (c.lease.execution_id, "success".to_string()))
        .collect();
    expected.sort();
    assert_eq!(completed, expected, "one event per completed execution");
    assert!(db.events::<CompletionEvent>(other).await.is_empty());

    // The one still held can still complete itself.
    e.complete(&held.lease, b"held").await.unwrap();
}

async fn a_batch_that_ends_every_upstream_releases_the_join(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let member = |key: &str| FlowMember {
        key: key.into(),
        execution: NewExecution::new("echo", key.as_bytes()),
        join: JoinPolicy::AllOf,
    };
    let edge = |from: &str| FlowEdge {
        from: from.into(),
        to: "join".into(),
        pass_result: false,
    };
    let change = GraphChange {
        expected_revision: None,
        members: vec![member("a"), member("b"), member("c"), member("join")],
        edges: vec![edge("a"), edge("b"), edge("c")],
    };
    let flow = e
        .create_flow(
            t,
            NewFlow {
                name: "fan-in".into(),
                ..Default::default()
            },
            change,
        )
        .await
        .unwrap();
    let claimed: HashMap<_, _> = e
        .claim(&request(10))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.lease.execution_id, c))
        .collect();
    assert_eq!(claimed.len(), 3, "only the upstreams run first");

    let claimed: Vec<ClaimedExecution> = claimed.into_values().collect();
    let results = e
        .complete_many(&completing(&claimed, b"done"))
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let next = e.claim(&request(10)).await.unwrap();
    assert_eq!(next.len(), 1, "the join runs once all three ended together");
    assert_eq!(next[0].lease.execution_id, flow.members["join"]);
    claim_none(e).await;
}

/// Unlike the claim, a batch completion is planned for each batch, knowing its
/// real size: a plan cached without that knowledge (as one with its arrays
/// hidden from the planner would be) was measured looking every row up by
/// scanning the table, 150 ms a batch of 100 instead of 15. Planning is paid
/// once per batch, so it costs little per completion.
#[tokio::test]
async fn batched_completions_are_planned_for_each_batch() {
    use flowfabric::backend::prelude::*;

    let (db, t) = setup().await;
    // A realistic table: analysed, with enough rows that a scan is wrong.
    let backlog: Vec<NewExecution> = (0..2_000).map(|i| task(&i.to_string())).collect();
    for chunk in backlog.chunks(1_000) {
        db.engine.create_batch(t, chunk).await.unwrap();
    }
    let started = db.engine.claim(&request(1_000)).await.unwrap();
    db.engine
        .complete_many(&completing(&started, b"ok"))
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(db.pg()).await.unwrap();
    let (one_connection, backend) = db.one_connection_backend().await;
    for _ in 0..15 {
        let claimed = backend.claim(&request(2)).await.unwrap();
        let ends: Vec<Completion> = claimed
            .iter()
            .map(|c| Completion::new(&c.lease, b"ok"))
            .collect();
        let results = backend.complete_many(&ends).await.unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%carried_percent%' AND statement LIKE '%succeeded%' \
           AND statement NOT LIKE '%pg_prepared%'",
    )
    .fetch_one(&one_connection)
    .await
    .unwrap();
    assert_eq!(
        (generic, custom),
        (0, 15),
        "the batch completion must be planned for every batch"
    );
}

/// The same completion twice in one batch (a worker's retry caught up with
/// its first write) is written once: the second is its replay.
async fn a_completion_twice_in_one_batch_is_written_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..2 {
        e.create(t, task(&format!("in-{i}"))).await.unwrap();
    }
    let claimed = e.claim(&request(2)).await.unwrap();
    let [a, b] = &claimed[..] else { unreachable!() };
    let results = e
        .complete_many(&[
            (a.lease.clone(), &b"a"[..]),
            (a.lease.clone(), &b"a"[..]),
            (b.lease.clone(), &b"b"[..]),
        ])
        .await
        .expect("the batch is written");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let ended: Vec<_> = db
        .events::<CompletionEvent>(t)
        .await
        .into_iter()
        .map(|ev| ev.execution_id)
        .collect();
    assert_eq!(ended, [a.lease.execution_id, b.lease.execution_id]);
    let a_now = e.get(t, a.lease.execution_id).await.unwrap();
    assert_eq!(
        (a_now.state, a_now.result),
        (PublicState::Completed, Some(b"a".to_vec()))
    );
}

/// A claim and a completion batch of many rows (written chunk by chunk on
/// SQLite) give every row its own attempt, lease events and outbox row.
async fn a_large_claim_and_completion_batch_write_every_row(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..100 {
        e.create(t, task(&format!("in-{i}"))).await.unwrap();
    }
    let claimed = e.claim(&request(100)).await.unwrap();
    assert_eq!(claimed.len(), 100);
    for c in &claimed {
        let attempts = e.attempts(t, c.lease.execution_id).await.unwrap();
        let [attempt] = &attempts[..] else {
            panic!("one attempt each: {attempts:?}")
        };
        assert_eq!(
            (attempt.attempt_index, attempt.lease_epoch, attempt.state),
            (
                c.lease.attempt_index,
                c.lease.lease_epoch,
                AttemptState::Running
            )
        );
    }
    let results = e
        .complete_many(&completing(&claimed, b"done"))
        .await
        .expect("the batch is written");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for c in &claimed {
        let id = c.lease.execution_id;
        let ex = e.get(t, id).await.unwrap();
        assert_eq!(
            (ex.state, ex.result),
            (PublicState::Completed, Some(b"done".to_vec()))
        );
        let attempts = e.attempts(t, id).await.unwrap();
        assert_eq!(attempts[0].state, AttemptState::Succeeded, "{id}");
        let kinds: Vec<String> = e
            .lease_history(t, id)
            .await
            .unwrap()
            .into_iter()
            .map(|ev| ev.kind)
            .collect();
        assert_eq!(kinds, ["acquired", "released"], "{id}");
    }
    assert_eq!(db.events::<CompletionEvent>(t).await.len(), 100);
}

/// A completion carries the progress its run reported last: written with
/// the result, clamped and clipped as a progress write is, and a completion
/// without one leaves what was written before.
async fn a_completion_writes_the_progress_it_carries(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..4 {
        e.create(t, task(&format!("p-{i}"))).await.unwrap();
    }
    let claimed = e.claim(&request(4)).await.unwrap();
    let [kept, clamped, clipped, single] = &claimed[..] else {
        panic!("claimed {}", claimed.len())
    };
    e.set_progress(&kept.lease, 20, "earlier").await.unwrap();
    let long = "é".repeat(700);
    let progress = |percent, message| Some(Progress { percent, message });
    let results = e
        .complete_many_with(&[
            Completion::new(&kept.lease, b"a"),
            Completion {
                progress: progress(250, "done"),
                ..Completion::new(&clamped.lease, b"b")
            },
            Completion {
                progress: progress(70, &long),
                ..Completion::new(&clipped.lease, b"c")
            },
        ])
        .await
        .expect("the batch is written");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    e.complete_with(&Completion {
        progress: progress(55, "alone"),
        ..Completion::new(&single.lease, b"d")
    })
    .await
    .unwrap();

    let shown = |c: &ClaimedExecution| {
        let id = c.lease.execution_id;
        async move {
            let ex = e.get(t, id).await.unwrap();
            assert_eq!(ex.state, PublicState::Completed);
            (ex.progress_percent, ex.progress_message.unwrap_or_default())
        }
    };
    assert_eq!(shown(kept).await, (Some(20), "earlier".into()), "kept");
    assert_eq!(shown(clamped).await, (Some(100), "done".into()), "clamped");
    let (percent, message) = shown(clipped).await;
    assert_eq!(percent, Some(70));
    assert!(
        message.len() <= 1_024 && long.starts_with(&message) && message.len() > 1_000,
        "clipped to {} bytes",
        message.len()
    );
    assert_eq!(shown(single).await, (Some(55), "alone".into()), "single");
}

/// A batch out of key order (the order rows were once locked in) is written
/// whole and answered in the caller's order.
async fn a_batch_out_of_key_order_is_answered_in_its_own_order(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..4 {
        e.create(t, task(&format!("o-{i}"))).await.unwrap();
    }
    let mut claimed = e.claim(&request(4)).await.unwrap();
    assert_eq!(claimed.len(), 4);
    claimed.sort_by_key(|c| std::cmp::Reverse(c.lease.execution_id.as_uuid()));
    e.revoke_lease(t, claimed[1].lease.execution_id)
        .await
        .unwrap();
    let results_by_position: Vec<Vec<u8>> = (0..claimed.len())
        .map(|i| format!("at {i}").into_bytes())
        .collect();
    let batch: Vec<(LeaseHandle, &[u8])> = claimed
        .iter()
        .zip(&results_by_position)
        .map(|(c, r)| (c.lease.clone(), &r[..]))
        .collect();

    let results = e.complete_many(&batch).await.expect("the batch is written");

    assert!(
        matches!(results[1], Err(EngineError::StaleLease { .. })),
        "the revoked one, where the caller put it: {results:?}"
    );
    for i in [0, 2, 3] {
        assert!(results[i].is_ok(), "{i}: {:?}", results[i]);
        let ex = e.get(t, claimed[i].lease.execution_id).await.unwrap();
        assert_eq!(
            ex.result.as_deref(),
            Some(&results_by_position[i][..]),
            "{i}"
        );
    }
}

/// Batches that end runs while an operator cancels and revokes the same
/// runs, from the other end, until they meet: every write is answered (none fails on a lock
/// cycle: the batch locks no row before it changes it, and the single-row
/// writes wait for one row each), and each run ends once, as the write
/// that won says, with one completion event.
async fn batches_racing_cancels_and_revokes_end_each_run_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = std::sync::Arc::new(db.engine.clone());
    let backlog: Vec<NewExecution> = (0..300).map(|i| task(&i.to_string())).collect();
    e.create_batch(t, &backlog).await.unwrap();
    let mut claimed = e.claim(&request(300)).await.unwrap();
    assert_eq!(claimed.len(), 300);
    claimed.sort_by_key(|c| c.lease.execution_id.as_uuid());
    let leases: Vec<LeaseHandle> = claimed.into_iter().map(|c| c.lease).collect();

    // The completers start once the operator is 40 runs in.
    let started = std::sync::Arc::new(tokio::sync::Barrier::new(3));
    let mut writers = Vec::new();
    // Two completers, each a half of the runs in batches of 25, last first.
    for half in leases.chunks(150) {
        let (e, started, mut half) = (e.clone(), started.clone(), half.to_vec());
        half.reverse();
        writers.push(tokio::spawn(async move {
            started.wait().await;
            let mut won = Vec::new();
            for batch in half.chunks(25) {
                let ends: Vec<_> = batch.iter().map(|l| (l.clone(), &b"ok"[..])).collect();
                let written = e.complete_many(&ends).await.expect("the batch is written");
                for (lease, result) in batch.iter().zip(written) {
                    match result {
                        Ok(()) => won.push(lease.execution_id),
                        Err(EngineError::StaleLease { .. } | EngineError::NotActive { .. }) => {}
                        Err(other) => panic!("{}: {other}", other.kind()),
                    }
                }
            }
            won
        }));
    }
    // An operator cancelling every third run and revoking every seventh
    // (first first, while the completers start from the last).
    let operator = {
        let (e, started, leases) = (e.clone(), started.clone(), leases.clone());
        tokio::spawn(async move {
            let (mut cancelled, mut revoked) = (Vec::new(), Vec::new());
            for (i, lease) in leases.iter().enumerate() {
                if i == 40 {
                    started.wait().await;
                }
                let id = lease.execution_id;
                if i % 3 == 0 {
                    match e.cancel(t, id, "race").await {
                        Ok(true) => cancelled.push(id),
                        Ok(false) | Err(EngineError::NotActive { .. }) => {}
                        Err(other) => panic!("cancel {}: {other}", other.kind()),
                    }
                } else if i % 7 == 0 {
                    match e.revoke_lease(t, id).await {
                        Ok(_) => revoked.push(id),
                        Err(EngineError::NotActive { .. }) => {}
                        Err(other) => panic!("revoke {}: {other}", other.kind()),
                    }
                }
            }
            (cancelled, revoked)
        })
    };
    let mut completed = Vec::new();
    for w in writers {
        completed.extend(w.await.unwrap());
    }
    let (cancelled, revoked) = operator.await.unwrap();
    assert!(
        !cancelled.is_empty() && !revoked.is_empty() && completed.len() > 150,
        "both sides won runs: {} cancelled, {} revoked, {} completed",
        cancelled.len(),
        revoked.len(),
        completed.len()
    );

    for id in leases.iter().map(|l| l.execution_id) {
        let state = e.get(t, id).await.unwrap().state;
        let winners = [
            completed.contains(&id).then_some(PublicState::Completed),
            cancelled.contains(&id).then_some(PublicState::Cancelled),
            revoked.contains(&id).then_some(PublicState::Waiting),
        ];
        let winners: Vec<PublicState> = winners.into_iter().flatten().collect();
        assert_eq!(
            winners,
            [state],
            "{id}: one write won, and its state stands"
        );
    }
    let mut events: Vec<_> = db
        .events::<CompletionEvent>(t)
        .await
        .into_iter()
        .map(|ev| ev.execution_id)
        .collect();
    events.sort_by_key(|id| id.as_uuid());
    let mut ended: Vec<_> = completed.iter().chain(&cancelled).copied().collect();
    ended.sort_by_key(|id| id.as_uuid());
    assert_eq!(events, ended, "one completion event a run that ended");
}

on_both_backends!(
    a_batch_out_of_key_order_is_answered_in_its_own_order,
    batches_racing_cancels_and_revokes_end_each_run_once,
    a_completion_writes_the_progress_it_carries,
    a_large_claim_and_completion_batch_write_every_row,
    a_completion_twice_in_one_batch_is_written_once,
    each_completion_in_a_batch_is_fenced_and_answered_on_its_own,
    a_batch_that_ends_every_upstream_releases_the_join,
);
