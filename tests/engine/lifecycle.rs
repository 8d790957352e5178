use chrono::Utc;
use flowfabric::backend::Sweep;
use flowfabric::model::{
    AttemptType, Backoff, CompletionEvent, FailOutcome, Failure, FailureClass, NewExecution, Page,
    PublicState,
};
use flowfabric::EngineError;
use flowfabric_tests::Store;

use crate::{claim_none, claim_one, setup_on, task};

async fn create_claim_complete_lifecycle(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("hello")).await.unwrap().execution_id;
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Waiting);

    let c = claim_one(e).await;
    assert_eq!(c.lease.execution_id, id);
    assert_eq!((c.lease.attempt_index, c.lease.lease_epoch), (1, 1));
    assert_eq!(c.attempt_type, AttemptType::Initial);
    assert_eq!(c.input, b"hello");
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Active);

    e.complete(&c.lease, b"world").await.unwrap();
    let done = e.get(t, id).await.unwrap();
    assert_eq!(done.state, PublicState::Completed);
    assert_eq!(done.result.as_deref(), Some(&b"world"[..]));
    assert!(done.finished_at.is_some());

    let events = db.events::<CompletionEvent>(t).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].execution_id, events[0].outcome.as_str()),
        (id, "success")
    );
    claim_none(e).await;
}

async fn fail_with_retry_then_success(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("x");
    new.policy.retry.backoff = Backoff::Fixed { delay_ms: 60_000 };
    let id = e.create(t, new).await.unwrap().execution_id;

    let first = claim_one(e).await;
    let outcome = e
        .fail(&first.lease, Failure::new(FailureClass::Transient, "flaky"))
        .await
        .unwrap();
    let FailOutcome::RetryScheduled { retry_at: Some(at) } = outcome else {
        panic!("expected a scheduled retry, got {outcome:?}");
    };
    assert!(
        at > Utc::now() + chrono::Duration::seconds(50),
        "backoff honoured: {at}"
    );
    let ex = e.get(t, id).await.unwrap();
    assert_eq!((ex.state, ex.retry_count), (PublicState::Delayed, 1));
    assert_eq!(ex.last_failure.unwrap().message, "flaky");
    claim_none(e).await;

    db.make_due(id).await;
    assert_eq!(
        db.backend()
            .promote_delayed(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    let second = claim_one(e).await;
    assert_eq!(
        (second.lease.attempt_index, second.attempt_type),
        (2, AttemptType::Retry)
    );
    assert_eq!(second.lease.lease_epoch, 2);
    e.complete(&second.lease, b"ok").await.unwrap();
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Completed);
}

async fn fail_terminal_on_permanent_class_and_when_retries_run_out(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let outcome = e
        .fail(&c.lease, Failure::new(FailureClass::Permanent, "bad input"))
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::TerminalFailed);
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(ex.state, PublicState::Failed);
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::Permanent);
    let events = db.events::<CompletionEvent>(t).await;
    assert_eq!(events[0].outcome, "failed");

    let mut new = task("y");
    new.policy.retry.max_retries = 1;
    new.policy.retry.backoff = Backoff::Fixed { delay_ms: 0 };
    let id = e.create(t, new).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let outcome = e
        .fail(&c.lease, Failure::new(FailureClass::Trap, "boom"))
        .await
        .unwrap();
    assert!(matches!(outcome, FailOutcome::RetryScheduled { .. }));
    // A zero backoff is claimable at once, without waiting for the promoter.
    let c = claim_one(e).await;
    let outcome = e
        .fail(&c.lease, Failure::new(FailureClass::Trap, "boom"))
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::TerminalFailed);
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Failed);
}

async fn create_cancel_from_waiting(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    assert!(e.cancel(t, id, "not needed").await.unwrap());
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(ex.state, PublicState::Cancelled);
    assert_eq!(ex.cancellation_reason.as_deref(), Some("not needed"));
    assert!(
        !e.cancel(t, id, "again").await.unwrap(),
        "second cancel is a no-op"
    );
    claim_none(e).await;
}

async fn create_claim_cancel_from_active_fences_the_worker(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    assert!(e.cancel(t, id, "operator").await.unwrap());

    let err = e.complete(&c.lease, b"late").await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NotActive {
                state: PublicState::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    let err = e
        .renew(&c.lease, std::time::Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::NotActive { .. }), "{err}");
    assert_eq!(
        e.get(t, id).await.unwrap().result,
        None,
        "nothing of the late write landed"
    );
}

async fn cancel_by_worker_is_terminal_and_replay_safe(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    e.cancel_by_worker(&c.lease, "gave up").await.unwrap();
    e.cancel_by_worker(&c.lease, "gave up").await.unwrap();
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Cancelled);
}

async fn delay_execution_releases_the_lease_until_due(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    e.delay(&c.lease, Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Delayed);
    claim_none(e).await;
    let err = e.complete(&c.lease, b"").await.unwrap_err();
    assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");

    db.make_due(id).await;
    assert_eq!(
        db.backend()
            .promote_delayed(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    let again = claim_one(e).await;
    assert_eq!(
        (again.lease.attempt_index, again.attempt_type),
        (2, AttemptType::Delayed)
    );
}

async fn delay_until_at_creation(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("later");
    new.delay_until = Some(Utc::now() + chrono::Duration::hours(1));
    let id = e.create(t, new).await.unwrap().execution_id;
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Delayed);
    claim_none(e).await;
    assert_eq!(
        db.backend()
            .promote_delayed(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0,
        "not due yet"
    );
}

async fn change_priority_reorders_waiting_work_only(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let first = e.create(t, task("a")).await.unwrap().execution_id;
    let second = e.create(t, task("b")).await.unwrap().execution_id;
    e.change_priority(t, second, 10).await.unwrap();
    assert_eq!(e.get(t, second).await.unwrap().priority, 10);
    let c = claim_one(e).await;
    assert_eq!(c.lease.execution_id, second);

    let err = e.change_priority(t, second, 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NotRunnable {
                state: PublicState::Active,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(claim_one(e).await.lease.execution_id, first);
}

async fn terminal_op_replay_is_idempotent_for_the_same_handle(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    e.complete(&c.lease, b"r").await.unwrap();
    e.complete(&c.lease, b"r").await.unwrap();
    assert_eq!(
        db.events::<CompletionEvent>(t).await.len(),
        1,
        "one event, not two"
    );
    let err = e
        .fail(&c.lease, Failure::new(FailureClass::Transient, "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NotActive {
                state: PublicState::Completed,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Completed);

    // fail replayed: terminal stays terminal, a scheduled retry reads as one.
    e.create(t, task("y")).await.unwrap();
    let c = claim_one(e).await;
    let f = Failure::new(FailureClass::Permanent, "no");
    assert_eq!(
        e.fail(&c.lease, f.clone()).await.unwrap(),
        FailOutcome::TerminalFailed
    );
    assert_eq!(
        e.fail(&c.lease, f).await.unwrap(),
        FailOutcome::TerminalFailed
    );

    e.create(t, task("z")).await.unwrap();
    let c = claim_one(e).await;
    let f = Failure::new(FailureClass::Transient, "again");
    assert!(matches!(
        e.fail(&c.lease, f.clone()).await.unwrap(),
        FailOutcome::RetryScheduled { retry_at: Some(_) }
    ));
    assert_eq!(
        e.fail(&c.lease, f).await.unwrap(),
        FailOutcome::RetryScheduled { retry_at: None }
    );
}

async fn idempotent_create_returns_the_first_execution(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("x");
    new.idempotency_key = Some("order-17".into());
    let first = e.create(t, new.clone()).await.unwrap();
    assert!(first.created);
    let again = e.create(t, new.clone()).await.unwrap();
    assert_eq!(
        (again.execution_id, again.created),
        (first.execution_id, false)
    );

    // Keys are per tenant.
    let other = db.tenant("globex").await;
    assert!(e.create(other, new.clone()).await.unwrap().created);

    // In a batch: an existing key and a fresh one.
    let mut fresh = task("y");
    fresh.idempotency_key = Some("order-18".into());
    let batch = e.create_batch(t, &[new.clone(), fresh]).await.unwrap();
    assert_eq!(
        (batch[0].execution_id, batch[0].created),
        (first.execution_id, false)
    );
    assert!(batch[1].created);
    assert_eq!(db.count("executions").await, 3);

    let err = e.create_batch(t, &[new.clone(), new]).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput { .. }), "{err}");
}

async fn idempotency_key_is_reusable_after_its_window(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("x");
    new.idempotency_key = Some("k".into());
    new.policy.dedup_window_ms = Some(1);
    let first = e.create(t, new.clone()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = e.create(t, new).await.unwrap();
    assert!(second.created);
    assert_ne!(second.execution_id, first.execution_id);
}

async fn replay_runs_an_ended_execution_again_up_to_its_cap(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let mut new = task("again");
    new.policy.max_replays = Some(1);
    let id = db.engine.create(tenant, new).await.unwrap().execution_id;
    let err = db.engine.replay(tenant, id, false).await.unwrap_err();
    assert!(
        err.to_string().contains("only an execution that ended"),
        "{err}"
    );

    let first = claim_one(&db.engine).await;
    db.engine.complete(&first.lease, b"one").await.unwrap();
    assert_eq!(db.engine.replay(tenant, id, false).await.unwrap(), 1);
    let replayed = db.engine.get(tenant, id).await.unwrap();
    assert_eq!(replayed.state, PublicState::Waiting);
    assert_eq!((replayed.result, replayed.finished_at), (None, None));

    let second = claim_one(&db.engine).await;
    assert_eq!(second.attempt_type, AttemptType::Replay);
    assert_eq!(second.lease.attempt_index, 2);
    // The first attempt retrying its own completion is still acknowledged
    // (terminal ops are idempotent) and writes nothing.
    db.engine.complete(&first.lease, b"late").await.unwrap();
    db.engine.complete(&second.lease, b"two").await.unwrap();
    let done = db.engine.get(tenant, id).await.unwrap();
    assert_eq!(done.result.as_deref(), Some(&b"two"[..]));
    assert_eq!(db.completion_events_written().await, 2);

    let err = db.engine.replay(tenant, id, false).await.unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("limit"), "{err}");
    let other = db.tenant("other").await;
    assert!(matches!(
        db.engine.replay(other, id, false).await,
        Err(EngineError::NotFound { .. })
    ));
}

/// Lanes list the tenant's unfinished executions by phase, page by page, and
/// never another tenant's.
async fn lanes_count_unfinished_executions_by_phase(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let in_lane = |lane: &str| NewExecution {
        lane: lane.into(),
        ..task("x")
    };
    for lane in ["alpha", "alpha", "beta", "gamma"] {
        e.create(t, in_lane(lane)).await.unwrap();
    }
    let mut alpha = crate::request(1);
    alpha.lanes = vec!["alpha".into()];
    let running = e.claim(&alpha).await.unwrap().remove(0);
    let mut gamma = crate::request(1);
    gamma.lanes = vec!["gamma".into()];
    let done = e.claim(&gamma).await.unwrap().remove(0);
    e.complete(&done.lease, b"ok").await.unwrap();
    let other = db.tenant("other").await;
    e.create(other, in_lane("omega")).await.unwrap();

    let store = e.backend();
    let lanes = store.lane_counts(t, Page::new(None, 100)).await.unwrap();
    let counts: Vec<_> = lanes
        .iter()
        .map(|l| (l.lane.as_str(), l.queued, l.running, l.suspended))
        .collect();
    // gamma's only execution ended, and omega is another tenant's.
    assert_eq!(counts, [("alpha", 1, 1, 0), ("beta", 1, 0, 0)]);

    let first = store.lane_counts(t, Page::new(None, 1)).await.unwrap();
    assert_eq!(first.len(), 1);
    let rest = store
        .lane_counts(t, Page::new(Some(first[0].lane.as_str()), 1))
        .await
        .unwrap();
    assert_eq!(rest[0].lane, "beta");
    assert!(store
        .lane_counts(t, Page::new(Some("beta"), 1))
        .await
        .unwrap()
        .is_empty());

    e.complete(&running.lease, b"ok").await.unwrap();
    let lanes = store.lane_counts(t, Page::new(None, 100)).await.unwrap();
    assert_eq!((lanes[0].queued, lanes[0].running), (1, 0));
}

on_both_backends!(
    create_claim_complete_lifecycle,
    lanes_count_unfinished_executions_by_phase,
    fail_with_retry_then_success,
    fail_terminal_on_permanent_class_and_when_retries_run_out,
    create_cancel_from_waiting,
    create_claim_cancel_from_active_fences_the_worker,
    cancel_by_worker_is_terminal_and_replay_safe,
    delay_execution_releases_the_lease_until_due,
    delay_until_at_creation,
    change_priority_reorders_waiting_work_only,
    terminal_op_replay_is_idempotent_for_the_same_handle,
    idempotent_create_returns_the_first_execution,
    idempotency_key_is_reusable_after_its_window,
    replay_runs_an_ended_execution_again_up_to_its_cap,
);
