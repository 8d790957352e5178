//! Suspension and signals (reference §6 "suspension and signals").

use flowfabric::backend::Sweep;
use flowfabric::model::STORED_RECORD_BYTES;
use flowfabric::model::{
    AttemptState, AttemptType, NewSignal, PublicState, ResumeCondition, SignalOutcome,
    SuspendOutcome, TenantLimits, TimeoutBehavior,
};
use flowfabric::EngineError;
use flowfabric_tests::Store;

use crate::{claim_one, setup_on, task};

fn signal(name: &str, payload: &str) -> NewSignal {
    NewSignal {
        name: name.into(),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: None,
    }
}

fn on(key: &str) -> ResumeCondition {
    ResumeCondition::Waitpoint { key: key.into() }
}

async fn a_signal_resumes_the_same_attempt_under_a_new_epoch(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let id = db
        .engine
        .create(tenant, task("a"))
        .await
        .unwrap()
        .execution_id;
    let first = claim_one(&db.engine).await;
    let wp = db
        .engine
        .create_waitpoint(&first.lease, "approval", None)
        .await
        .unwrap();
    let again = db
        .engine
        .create_waitpoint(&first.lease, "approval", None)
        .await
        .unwrap();
    assert_eq!(
        again.waitpoint.waitpoint_id, wp.waitpoint.waitpoint_id,
        "same key, same waitpoint"
    );
    let outcome = db
        .engine
        .suspend(&first.lease, on("approval"), None, TimeoutBehavior::Fail)
        .await
        .unwrap();
    assert_eq!(outcome, SuspendOutcome::Suspended);
    assert_eq!(
        db.engine.get(tenant, id).await.unwrap().state,
        PublicState::Suspended
    );
    // The lease went with the suspension.
    assert!(db.engine.complete(&first.lease, b"no").await.is_err());
    assert!(db
        .engine
        .claim(&crate::request(5))
        .await
        .unwrap()
        .is_empty());

    let (t, e, delivered) = db
        .engine
        .deliver_signal(&wp.token, signal("approve", "yes"))
        .await
        .unwrap();
    assert_eq!((t, e), (tenant, id));
    assert!(matches!(
        delivered,
        SignalOutcome::Accepted { resumed: true, .. }
    ));
    let resumed = claim_one(&db.engine).await;
    assert_eq!(resumed.attempt_type, AttemptType::Resume);
    assert_eq!(resumed.lease.attempt_index, first.lease.attempt_index);
    assert_eq!(resumed.lease.lease_epoch, first.lease.lease_epoch + 1);
    // The attempt's one row follows it: running again, under the new lease.
    let attempts = db.engine.attempts(tenant, id).await.unwrap();
    let rows: Vec<_> = attempts
        .iter()
        .map(|a| (a.attempt_index, a.attempt_type, a.lease_epoch, a.state))
        .collect();
    assert_eq!(
        rows,
        vec![(
            first.lease.attempt_index,
            AttemptType::Initial,
            resumed.lease.lease_epoch,
            AttemptState::Running
        )]
    );
    let seq = resumed.resumed_from.expect("a resume claim");
    let woke = db.engine.resume_signals(tenant, id, seq).await.unwrap();
    assert_eq!(woke.len(), 1);
    assert_eq!(
        (woke[0].name.as_str(), woke[0].payload.as_slice()),
        ("approve", &b"yes"[..])
    );
    db.engine.complete(&resumed.lease, b"done").await.unwrap();
    assert_eq!(db.count("attempts").await, 1, "one attempt, resumed");
}

async fn early_signals_are_buffered_and_satisfy_the_suspend_at_once(store: Store) {
    let (db, tenant) = setup_on(store).await;
    db.engine.create(tenant, task("a")).await.unwrap();
    let claimed = claim_one(&db.engine).await;
    let wp = db
        .engine
        .create_waitpoint(&claimed.lease, "callback", None)
        .await
        .unwrap();
    let (_, _, early) = db
        .engine
        .deliver_signal(&wp.token, signal("done", "42"))
        .await
        .unwrap();
    assert!(matches!(
        early,
        SignalOutcome::Accepted { resumed: false, .. }
    ));
    let outcome = db
        .engine
        .suspend(&claimed.lease, on("callback"), None, TimeoutBehavior::Fail)
        .await
        .unwrap();
    let SuspendOutcome::AlreadySatisfied(signals) = outcome else {
        panic!("expected the buffered signal to satisfy it: {outcome:?}");
    };
    assert_eq!(signals[0].payload, b"42");
    // Still running under the same lease.
    db.engine.complete(&claimed.lease, b"ok").await.unwrap();
    // The waitpoint closed with the satisfied suspension.
    let err = db
        .engine
        .deliver_signal(&wp.token, signal("done", "again"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
}

async fn all_of_waits_for_every_waitpoint_and_duplicates_are_deduplicated(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let id = db
        .engine
        .create(tenant, task("a"))
        .await
        .unwrap()
        .execution_id;
    let claimed = claim_one(&db.engine).await;
    let a = db
        .engine
        .create_waitpoint(&claimed.lease, "a", None)
        .await
        .unwrap();
    let b = db
        .engine
        .create_waitpoint(&claimed.lease, "b", None)
        .await
        .unwrap();
    let all = ResumeCondition::AllOf {
        keys: vec!["a".into(), "b".into()],
    };
    db.engine
        .suspend(&claimed.lease, all, None, TimeoutBehavior::Fail)
        .await
        .unwrap();
    let keyed = |payload: &str| NewSignal {
        idempotency_key: Some("a-1".into()),
        ..signal("a", payload)
    };
    let (_, _, first) = db
        .engine
        .deliver_signal(&a.token, keyed("x"))
        .await
        .unwrap();
    let SignalOutcome::Accepted {
        signal_id,
        resumed: false,
    } = first
    else {
        panic!("{first:?}");
    };
    let (_, _, dup) = db
        .engine
        .deliver_signal(&a.token, keyed("y"))
        .await
        .unwrap();
    assert_eq!(dup, SignalOutcome::Duplicate { signal_id });
    assert_eq!(
        db.engine.get(tenant, id).await.unwrap().state,
        PublicState::Suspended
    );
    let (_, _, last) = db
        .engine
        .deliver_signal(&b.token, signal("b", ""))
        .await
        .unwrap();
    assert!(matches!(
        last,
        SignalOutcome::Accepted { resumed: true, .. }
    ));
    assert_eq!(db.count("signals").await, 2);
    let resumed = claim_one(&db.engine).await;
    let woke = db
        .engine
        .resume_signals(tenant, id, resumed.resumed_from.unwrap())
        .await
        .unwrap();
    let names: Vec<_> = woke.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
}

async fn racing_signals_resume_exactly_once(store: Store) {
    let (db, tenant) = setup_on(store).await;
    db.engine.create(tenant, task("a")).await.unwrap();
    let claimed = claim_one(&db.engine).await;
    let wp = db
        .engine
        .create_waitpoint(&claimed.lease, "k", None)
        .await
        .unwrap();
    db.engine
        .suspend(&claimed.lease, on("k"), None, TimeoutBehavior::Fail)
        .await
        .unwrap();
    let deliveries = (0..8).map(|i| {
        let engine = db.engine.clone();
        let token = wp.token.clone();
        tokio::spawn(async move {
            engine
                .deliver_signal(&token, signal("s", &i.to_string()))
                .await
        })
    });
    let mut resumed = 0;
    let mut refused = 0;
    for d in futures::future::join_all(deliveries).await {
        match d.unwrap() {
            Ok((_, _, SignalOutcome::Accepted { resumed: true, .. })) => resumed += 1,
            Err(EngineError::Conflict(_)) => refused += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!((resumed, refused), (1, 7));
    assert_eq!(db.engine.claim(&crate::request(10)).await.unwrap().len(), 1);
}

async fn suspension_timeouts_fail_cancel_expire_or_auto_resume(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let behaviours = [
        (TimeoutBehavior::Fail, PublicState::Failed),
        (TimeoutBehavior::Cancel, PublicState::Cancelled),
        (TimeoutBehavior::Expire, PublicState::Expired),
        (TimeoutBehavior::AutoResume, PublicState::Waiting),
    ];
    let mut ids = Vec::new();
    for (behaviour, _) in behaviours {
        let id = db
            .engine
            .create(tenant, task("a"))
            .await
            .unwrap()
            .execution_id;
        let claimed = claim_one(&db.engine).await;
        db.engine
            .suspend(
                &claimed.lease,
                ResumeCondition::TimeoutOnly,
                Some(60_000),
                behaviour,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    assert_eq!(
        db.backend()
            .time_out_suspensions(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0,
        "not due yet"
    );
    db.expire_suspension_timeouts().await;
    assert_eq!(
        db.backend()
            .time_out_suspensions(Sweep::every_tenant(100))
            .await
            .unwrap(),
        4
    );
    for (id, (_, expected)) in ids.iter().zip(behaviours) {
        let ex = db.engine.get(tenant, *id).await.unwrap();
        assert_eq!(ex.state, expected, "{:?}", ex.last_failure);
    }
    let resumed = claim_one(&db.engine).await;
    let woke = db
        .engine
        .resume_signals(
            tenant,
            resumed.lease.execution_id,
            resumed.resumed_from.unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(woke[0].name, "timeout");
    // Terminal outcomes wrote completion events; the resumed one did not.
    assert_eq!(db.completion_events_written().await, 3);
}

async fn operators_resume_and_cancel_suspended_executions(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let id = db
        .engine
        .create(tenant, task("a"))
        .await
        .unwrap()
        .execution_id;
    let err = db.engine.resume(tenant, id).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Conflict(_)),
        "not suspended: {err}"
    );
    let claimed = claim_one(&db.engine).await;
    let wp = db
        .engine
        .create_waitpoint(&claimed.lease, "k", None)
        .await
        .unwrap();
    db.engine
        .suspend(
            &claimed.lease,
            ResumeCondition::OperatorOnly,
            None,
            TimeoutBehavior::Fail,
        )
        .await
        .unwrap();
    let other = db.tenant("other").await;
    assert!(matches!(
        db.engine.resume(other, id).await,
        Err(EngineError::NotFound { .. })
    ));
    db.engine.resume(tenant, id).await.unwrap();
    let resumed = claim_one(&db.engine).await;
    assert!(db
        .engine
        .resume_signals(tenant, id, resumed.resumed_from.unwrap())
        .await
        .unwrap()
        .is_empty());
    // Suspend again, then cancel: signals are refused afterwards.
    db.engine
        .suspend(
            &resumed.lease,
            ResumeCondition::OperatorOnly,
            None,
            TimeoutBehavior::Fail,
        )
        .await
        .unwrap();
    assert!(db
        .engine
        .cancel(tenant, id, "no longer needed")
        .await
        .unwrap());
    let err = db
        .engine
        .deliver_signal(&wp.token, signal("late", ""))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Conflict(_)), "{err}");
}

async fn bad_suspensions_and_tokens_are_refused_and_change_nothing(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let id = db
        .engine
        .create(tenant, task("a"))
        .await
        .unwrap()
        .execution_id;
    let claimed = claim_one(&db.engine).await;
    for (condition, timeout) in [
        (ResumeCondition::TimeoutOnly, None),
        (
            ResumeCondition::Count {
                n: 3,
                keys: vec!["a".into()],
            },
            None,
        ),
        (ResumeCondition::AllOf { keys: vec![] }, None),
        (on("bad key"), None),
        (on("k"), Some(0)),
    ] {
        let err = db
            .engine
            .suspend(
                &claimed.lease,
                condition.clone(),
                timeout,
                TimeoutBehavior::Fail,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, EngineError::InvalidInput { .. }),
            "{condition:?}: {err}"
        );
    }
    assert_eq!(
        db.engine.get(tenant, id).await.unwrap().state,
        PublicState::Active
    );
    let wp = db
        .engine
        .create_waitpoint(&claimed.lease, "k", None)
        .await
        .unwrap();
    let mut forged = wp.token.clone();
    let flipped = if forged.ends_with('0') { "1" } else { "0" };
    forged.replace_range(forged.len() - 1.., flipped);
    for bad in [forged.as_str(), "wpt_x", ""] {
        let err = db
            .engine
            .deliver_signal(bad, signal("s", ""))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_token", "{bad}");
    }
    assert_eq!(db.count("signals").await, 0);
}

/// Suspending on a pending waitpoint that expired is refused, typed: no
/// signal can reach it any more, so the suspension would never resume
/// through it. One that took a signal before it expired still counts.
async fn suspending_on_an_expired_waitpoint_is_refused(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(tenant, task("a")).await.unwrap().execution_id;
    let held = claim_one(e).await;
    let lapsed = e
        .create_waitpoint(&held.lease, "lapsed", Some(1))
        .await
        .unwrap();
    let signalled = e
        .create_waitpoint(&held.lease, "signalled", Some(300))
        .await
        .unwrap();
    e.deliver_signal(&signalled.token, signal("early", "1"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let refused = e
        .suspend(&held.lease, on("lapsed"), None, TimeoutBehavior::Fail)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), "waitpoint_expired", "{refused}");
    assert!(refused.to_string().contains("lapsed"), "{refused}");
    assert_eq!(e.get(tenant, id).await.unwrap().state, PublicState::Active);
    let err = e.deliver_signal(&lapsed.token, signal("late", "2")).await;
    assert!(err.is_err(), "an expired waitpoint takes no signal");

    // Buffered before it expired: the suspension is satisfied at once.
    let outcome = e
        .suspend(&held.lease, on("signalled"), None, TimeoutBehavior::Fail)
        .await
        .unwrap();
    assert!(
        matches!(outcome, SuspendOutcome::AlreadySatisfied(ref s) if s.len() == 1),
        "{outcome:?}"
    );
}

/// An execution keeps at most so many signals: past the cap a delivery is
/// refused and nothing is kept, while a duplicate of one it kept is still
/// answered as such. Signals' payloads count as the tenant's stored bytes.
async fn signals_are_bounded_per_execution(store: Store) {
    let (db, tenant) = crate::setup_with(store, |l| l.max_signals_per_execution = 3).await;
    let e = &db.engine;
    e.create(tenant, task("a")).await.unwrap();
    let claimed = claim_one(e).await;
    let wp = e.create_waitpoint(&claimed.lease, "w", None).await.unwrap();
    let keyed = NewSignal {
        idempotency_key: Some("first".into()),
        ..signal("s", "0123456789")
    };
    e.deliver_signal(&wp.token, keyed.clone()).await.unwrap();
    for payload in ["0123456789", "0123456789"] {
        e.deliver_signal(&wp.token, signal("s", payload))
            .await
            .unwrap();
    }
    let refused = e
        .deliver_signal(&wp.token, signal("s", "more"))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), "limit_exceeded", "{refused}");
    assert!(
        refused.to_string().contains("max_signals_per_execution"),
        "{refused}"
    );
    assert_eq!(db.count("signals").await, 3, "nothing more kept");
    let (_, _, again) = e.deliver_signal(&wp.token, keyed).await.unwrap();
    assert!(
        matches!(again, SignalOutcome::Duplicate { .. }),
        "{again:?}"
    );
    // The input and the three payloads, and those four records.
    let input = "a".len() as u64;
    assert_eq!(
        e.backend().stored_bytes(tenant).await.unwrap(),
        input + 30 + 4 * STORED_RECORD_BYTES
    );
}

/// A signal sent again with its idempotency key (a client retrying after a
/// timeout) is answered `duplicate` even once the tenant is at its storage
/// quota, as it would be below it; a new signal is refused with the quota,
/// with or without a key, and nothing more is kept.
async fn a_resent_signal_is_a_duplicate_at_the_storage_quota(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let e = &db.engine;
    e.create(tenant, task("a")).await.unwrap();
    let claimed = claim_one(e).await;
    let wp = e.create_waitpoint(&claimed.lease, "w", None).await.unwrap();
    let keyed = |key: &str, payload: &str| NewSignal {
        idempotency_key: Some(key.into()),
        ..signal("s", payload)
    };
    let (_, _, first) = e
        .deliver_signal(&wp.token, keyed("once", "0123456789"))
        .await
        .unwrap();
    let SignalOutcome::Accepted { signal_id, .. } = first else {
        panic!("{first:?}");
    };
    // The quota is what the tenant stores now: the input and the payload,
    // and their two records.
    let at_quota = TenantLimits {
        max_stored_bytes: Some(11 + 2 * STORED_RECORD_BYTES),
        ..TenantLimits::default()
    };
    e.set_tenant_limits(tenant, at_quota).await.unwrap();
    let (_, _, again) = e
        .deliver_signal(&wp.token, keyed("once", "0123456789"))
        .await
        .expect("a resent signal is answered");
    assert!(
        matches!(again, SignalOutcome::Duplicate { signal_id: s } if s == signal_id),
        "{again:?}"
    );
    for new in [keyed("other", "x"), signal("s", "x")] {
        let refused = e.deliver_signal(&wp.token, new).await.unwrap_err();
        assert_eq!(refused.kind(), "quota_exceeded", "{refused}");
    }
    assert_eq!(db.count("signals").await, 1, "nothing more kept");
}

on_both_backends!(
    a_resent_signal_is_a_duplicate_at_the_storage_quota,
    signals_are_bounded_per_execution,
    suspending_on_an_expired_waitpoint_is_refused,
    a_signal_resumes_the_same_attempt_under_a_new_epoch,
    early_signals_are_buffered_and_satisfy_the_suspend_at_once,
    all_of_waits_for_every_waitpoint_and_duplicates_are_deduplicated,
    racing_signals_resume_exactly_once,
    suspension_timeouts_fail_cancel_expire_or_auto_resume,
    operators_resume_and_cancel_suspended_executions,
    bad_suspensions_and_tokens_are_refused_and_change_nothing,
);
