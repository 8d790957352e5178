//! Reading back what the lifecycle recorded: attempts of an execution (one
//! per lease, newest first), its lease history, the tenant overview, and
//! listings newest first.

use flowfabric::backend::Sweep;
use flowfabric::error::EngineError;
use flowfabric::model::{
    AttemptState, AttemptType, Backoff, ExecutionFilter, Failure, FailureClass, PublicState,
};

use super::*;

async fn attempts_list_each_lease_newest_first_and_stay_in_their_tenant(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("x");
    new.policy.retry.backoff = Backoff::Fixed { delay_ms: 60_000 };
    let id = e.create(t, new).await.unwrap().execution_id;
    assert!(
        e.attempts(t, id).await.unwrap().is_empty(),
        "never claimed: no attempts, but found"
    );

    let first = claim_one(e).await;
    e.fail(&first.lease, Failure::new(FailureClass::Transient, "flaky"))
        .await
        .unwrap();
    db.make_due(id).await;
    db.backend()
        .promote_delayed(Sweep::every_tenant(100))
        .await
        .unwrap();
    let second = claim_one(e).await;

    let attempts = e.attempts(t, id).await.unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt_index, a.attempt_type, a.lease_epoch, a.state))
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, AttemptType::Retry, 2, AttemptState::Running),
            (1, AttemptType::Initial, 1, AttemptState::Failed),
        ]
    );
    assert_eq!(attempts[1].failure.as_ref().unwrap().message, "flaky");
    assert!(attempts[1].ended_at.is_some() && attempts[0].ended_at.is_none());
    assert_eq!(attempts[0].worker_id, "test-worker");
    e.complete(&second.lease, b"ok").await.unwrap();
    assert_eq!(
        e.attempts(t, id).await.unwrap()[0].state,
        AttemptState::Succeeded
    );

    let other = db.tenant("other").await;
    let err = e.attempts(other, id).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err:?}");
}

async fn the_overview_counts_states_and_the_last_hours_outcomes(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for input in ["a", "b", "c"] {
        e.create(t, task(input)).await.unwrap();
    }
    let mut flaky = NewExecution::new("flaky", b"x".as_slice());
    flaky.policy.retry.max_retries = 0;
    e.create(t, flaky).await.unwrap();
    // Claim order is creation order: a, b, c, then the flaky one.
    let a = claim_one(e).await;
    e.complete(&a.lease, b"ok").await.unwrap();
    let b = claim_one(e).await;
    e.complete(&b.lease, b"ok").await.unwrap();
    let _c = claim_one(e).await;
    let f = claim_one(e).await;
    e.fail(&f.lease, Failure::new(FailureClass::Permanent, "boom"))
        .await
        .unwrap();
    // Another tenant's work shows in neither count.
    let other = db.tenant("other").await;
    e.create(other, task("z")).await.unwrap();
    let z = claim_one(e).await;
    e.complete(&z.lease, b"ok").await.unwrap();

    let o = e.overview(t).await.unwrap();
    let states: Vec<_> = o.states.iter().map(|s| (s.state, s.count)).collect();
    let mut want = vec![
        (PublicState::Active, 1),
        (PublicState::Completed, 2),
        (PublicState::Failed, 1),
    ];
    want.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(states, want);
    let succeeded: u64 = o.minutes.iter().map(|m| m.succeeded).sum();
    let failed: u64 = o.minutes.iter().map(|m| m.failed).sum();
    assert_eq!((succeeded, failed), (2, 1));
    assert_eq!(o.failing_kinds.len(), 1);
    assert_eq!(
        (o.failing_kinds[0].kind.as_str(), o.failing_kinds[0].failed),
        ("flaky", 1)
    );
}

async fn a_listing_pages_newest_first(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            e.create(t, task(&i.to_string()))
                .await
                .unwrap()
                .execution_id,
        );
    }
    let mut filter = ExecutionFilter {
        limit: 2,
        newest_first: true,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = e.list(t, filter.clone()).await.unwrap();
        seen.extend(page.iter().map(|x| x.execution_id));
        match page.last() {
            Some(last) if page.len() == 2 => filter.after = Some(last.execution_id),
            _ => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
}

/// A list by state finds each execution in its state, running ones too,
/// newest first and a page at a time, and none of another tenant's.
async fn a_listing_by_state_finds_running_waiting_and_ended(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..6 {
        e.create(t, task(&i.to_string())).await.unwrap();
    }
    let mut claimed = e.claim(&request(5)).await.unwrap();
    claimed.sort_by_key(|c| c.lease.execution_id);
    for c in &claimed[..2] {
        e.complete(&c.lease, b"ok").await.unwrap();
    }
    let newest_first = |cs: &[ClaimedExecution]| {
        let mut ids: Vec<_> = cs.iter().map(|c| c.lease.execution_id).collect();
        ids.reverse();
        ids
    };
    let (ended, running) = (newest_first(&claimed[..2]), newest_first(&claimed[2..]));
    let other = db.tenant("other").await;
    e.create(other, task("z")).await.unwrap();

    let listed = async |state, limit, after| {
        let filter = ExecutionFilter {
            state: Some(state),
            limit,
            after,
            newest_first: true,
            ..Default::default()
        };
        let page = e.list(t, filter).await.unwrap();
        assert!(page.iter().all(|x| x.state == state));
        page.iter().map(|x| x.execution_id).collect::<Vec<_>>()
    };
    assert_eq!(listed(PublicState::Active, 10, None).await, running);
    assert_eq!(
        listed(PublicState::Active, 2, Some(running[0])).await,
        running[1..]
    );
    assert_eq!(listed(PublicState::Completed, 10, None).await, ended);
    let waiting = listed(PublicState::Waiting, 10, None).await;
    assert_eq!(waiting.len(), 1);
    assert!(!claimed.iter().any(|c| c.lease.execution_id == waiting[0]));
    assert!(listed(PublicState::Failed, 10, None).await.is_empty());
}

/// On Postgres each list by state stays on its index in its generic plan
/// (the one a prepared statement settles on): running executions on the
/// lease-expiry index, every other state on the state index, which leaves
/// running executions out (migration 0041) and so serves a generic plan
/// only when the statement says it needs no running ones; a list of every
/// state on the primary key.
#[tokio::test]
async fn a_listing_by_state_stays_on_its_index() {
    let (db, t) = setup().await;
    let e = &db.engine;
    // 1,500 executions: 950 ended, 50 running, 500 waiting; planned with
    // their statistics.
    let news: Vec<_> = (0..1_500).map(|i| task(&i.to_string())).collect();
    for chunk in news.chunks(500) {
        e.create_batch(t, chunk).await.unwrap();
    }
    for round in 0..10 {
        let claimed = e.claim(&request(100)).await.unwrap();
        let ending = if round == 9 { 50 } else { 100 };
        let done: Vec<_> = claimed[..ending]
            .iter()
            .map(|c| (c.lease.clone(), &b"ok"[..]))
            .collect();
        e.complete_many(&done).await.unwrap();
    }
    let pg = db.analysed_backend("executions").await;
    for state in PublicState::ALL.into_iter().map(Some).chain([None]) {
        let filter = ExecutionFilter {
            state,
            limit: 50,
            newest_first: true,
            ..Default::default()
        };
        let plan = pg.explain_list(&filter).await.unwrap();
        let index = match state {
            Some(PublicState::Active) => "executions_lease_expiry_idx",
            Some(_) => "executions_state_idx",
            None => "executions_pkey",
        };
        assert!(plan.contains(index), "{state:?}: {plan}");
    }
}

/// Every lease change of one execution, oldest first: acquired, renewed,
/// revoked, reclaimed, released; none of another execution's; another
/// tenant's id is not found.
async fn lease_history_tells_each_lease_in_order(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let _other = e.create(t, task("y")).await.unwrap().execution_id;
    assert!(e.lease_history(t, id).await.unwrap().is_empty());

    let mut claimed = e.claim(&request(2)).await.unwrap();
    claimed.sort_by_key(|c| c.lease.execution_id != id);
    let first = claimed.remove(0);
    assert_eq!(first.lease.execution_id, id);
    // Longer than the claim's 30 s: a renewal that leaves the expiry where
    // it was (the same millisecond on SQLite) changes no lease, and tells
    // nothing.
    e.renew(&first.lease, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    e.revoke_lease(t, id).await.unwrap();
    let second = claim_one(e).await;
    e.complete(&second.lease, b"ok").await.unwrap();

    let history = e.lease_history(t, id).await.unwrap();
    let told: Vec<(i32, &str)> = history
        .iter()
        .map(|ev| (ev.attempt_index, ev.kind.as_str()))
        .collect();
    assert_eq!(
        told,
        [
            (1, "acquired"),
            (1, "renewed"),
            (1, "revoked"),
            (2, "reclaimed"),
            (2, "released")
        ]
    );
    assert!(history.iter().all(|ev| ev.execution_id == id));
    assert!(history
        .windows(2)
        .all(|w| w[0].created_at <= w[1].created_at));
    assert!(
        history[1].lease_expires_at.is_some(),
        "a renewal says until when"
    );

    let stranger = db.tenant("stranger").await;
    let err = e.lease_history(stranger, id).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err:?}");
}

/// Counting stops at the cap, so a tenant with a long history pays for at
/// most that many index entries a state: past it, the count says "more".
async fn the_overview_stops_counting_a_state_at_the_cap(store: Store) {
    use flowfabric::model::MAX_STATE_COUNT;
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let batch: Vec<NewExecution> = (0..1_000).map(|i| task(&i.to_string())).collect();
    for _ in 0..MAX_STATE_COUNT / 1_000 {
        e.create_batch(t, &batch).await.unwrap();
    }
    let at_cap = e.overview(t).await.unwrap().states;
    assert_eq!(at_cap.len(), 1);
    assert_eq!((at_cap[0].count, at_cap[0].more), (MAX_STATE_COUNT, false));
    e.create(t, task("one more")).await.unwrap();
    let past = e.overview(t).await.unwrap().states;
    assert_eq!(
        (past[0].state, past[0].count, past[0].more),
        (PublicState::Waiting, MAX_STATE_COUNT, true)
    );
}

on_both_backends!(
    a_listing_by_state_finds_running_waiting_and_ended,
    the_overview_stops_counting_a_state_at_the_cap,
    lease_history_tells_each_lease_in_order,
    attempts_list_each_lease_newest_first_and_stay_in_their_tenant,
    the_overview_counts_states_and_the_last_hours_outcomes,
    a_listing_pages_newest_first,
);
