//! Event streams (reference: subscriptions): completion, lease history and
//! signal delivery, read by cursor; the cursor never skips an event whose
//! transaction commits late; retention prunes old events.

use flowfabric::backend::Sweep;
use flowfabric_tests::Store;
use std::time::Duration;

use flowfabric::model::{
    CompletionEvent, EventCursor, LeaseEvent, NewSignal, ResumeCondition, SignalEvent,
    SignalOutcome, TimeoutBehavior,
};

use crate::{claim_one, setup, setup_on, task};

async fn completion_events_page_by_cursor_per_tenant(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    for i in 0..5 {
        e.create(t, task(&i.to_string())).await.unwrap();
    }
    for _ in 0..5 {
        let c = claim_one(e).await;
        e.complete(&c.lease, b"").await.unwrap();
    }
    let all = db.events::<CompletionEvent>(t).await;
    assert_eq!(all.len(), 5);
    let first = e.completion_events(t, EventCursor::START, 2).await.unwrap();
    assert_eq!(first.events, all[..2]);
    let rest = e
        .completion_events(t, first.events[1].cursor, 10)
        .await
        .unwrap();
    assert_eq!(rest.events, all[2..]);
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let other = db.tenant("other").await;
    assert!(db.events::<CompletionEvent>(other).await.is_empty());
}

/// The bug a plain `event_id > cursor` read has: event N+1 commits while the
/// transaction holding event N is still open; a reader that took N+1 then
/// never sees N. Here the reader is told to wait (`pending`) instead, and gets
/// both, in order, once the older transaction commits.
#[tokio::test]
async fn a_late_committing_event_is_not_skipped() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let early = e.create(t, task("early")).await.unwrap().execution_id;
    let late = e.create(t, task("late")).await.unwrap().execution_id;

    let mut open = db.pg().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO completion_event_batches (tenant_id, execution_ids, attempt_indexes, \
             outcomes, linked) VALUES ($1, ARRAY[$2::uuid], '{0}', '{c}', '{f}')",
    )
    .bind(t)
    .bind(early)
    .execute(&mut *open)
    .await
    .unwrap();
    let c = claim_one(e).await;
    e.complete(&c.lease, b"").await.unwrap();

    let withheld = e
        .completion_events(t, EventCursor::START, 10)
        .await
        .unwrap();
    assert!(withheld.events.is_empty(), "{withheld:?}");
    assert!(
        withheld.pending,
        "the committed event waits for the open one"
    );

    open.commit().await.unwrap();
    let ids: Vec<_> = db
        .events::<CompletionEvent>(t)
        .await
        .into_iter()
        .map(|ev| ev.execution_id)
        .collect();
    assert_eq!(ids, [early, c.lease.execution_id]);
    assert_ne!(early, late);
}

pub(crate) fn kinds(events: &[LeaseEvent]) -> Vec<(&str, i64)> {
    events
        .iter()
        .map(|ev| (ev.kind.as_str(), ev.lease_epoch))
        .collect()
}

async fn lease_history_records_every_lease_change(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("a")).await.unwrap().execution_id;

    // Acquired, renewed, then lost to expiry and reclaimed by another claim.
    let first = claim_one(e).await;
    e.renew(&first.lease, Duration::from_secs(5)).await.unwrap();
    db.expire_lease(id).await;
    assert_eq!(
        db.backend()
            .reclaim_expired_leases(Sweep::every_tenant(10))
            .await
            .unwrap(),
        1
    );
    let second = claim_one(e).await;
    // A stale renew changes nothing and records nothing.
    assert!(e.renew(&first.lease, Duration::from_secs(5)).await.is_err());
    e.complete(&second.lease, b"").await.unwrap();

    let mut events = db.events::<LeaseEvent>(t).await;
    if store == Store::Postgres {
        // `expire_lease` moves the expiry with a statement of the test's own;
        // the Postgres lease-event trigger records that as a renewal, as it
        // would any change of expiry. SQLite records lease events in the
        // backend, which the test's statement bypasses.
        assert_eq!(kinds(&events[2..3]), [("renewed", first.lease.lease_epoch)]);
        events.remove(2);
    }
    let e1 = first.lease.lease_epoch;
    assert_eq!(
        kinds(&events),
        [
            ("acquired", e1),
            ("renewed", e1),
            ("expired", e1),
            ("reclaimed", e1 + 1),
            ("released", e1 + 1),
        ]
    );
    assert!(events.iter().all(|ev| ev.execution_id == id));
    assert_eq!(events[0].phase, "active");
    assert!(events[0].lease_expires_at.is_some());
    assert_eq!(events[2].phase, "runnable");
    assert_eq!(events[4].phase, "terminal");
    assert_eq!(events[4].lease_expires_at, None);

    // An operator cancel under a live lease revokes it.
    let other = e.create(t, task("b")).await.unwrap().execution_id;
    let held = claim_one(e).await;
    assert_eq!(held.lease.execution_id, other);
    assert!(e.cancel(t, other, "operator").await.unwrap());
    let events = db.events::<LeaseEvent>(t).await;
    let tail: Vec<_> = events
        .iter()
        .filter(|ev| ev.execution_id == other)
        .collect();
    assert_eq!(
        tail.iter().map(|ev| ev.kind.as_str()).collect::<Vec<_>>(),
        ["acquired", "revoked"]
    );

    let stranger = db.tenant("stranger").await;
    assert!(db.events::<LeaseEvent>(stranger).await.is_empty());
}

fn signal(name: &str, key: Option<&str>) -> NewSignal {
    NewSignal {
        name: name.into(),
        payload: b"p".to_vec(),
        idempotency_key: key.map(str::to_owned),
    }
}

async fn signal_delivery_records_buffered_resumed_and_duplicate(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("a")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let first = e.create_waitpoint(&c.lease, "one", None).await.unwrap();
    let second = e.create_waitpoint(&c.lease, "two", None).await.unwrap();
    let condition = ResumeCondition::AllOf {
        keys: vec!["one".into(), "two".into()],
    };
    e.suspend(&c.lease, condition, None, TimeoutBehavior::Fail)
        .await
        .unwrap();

    let (_, _, buffered) = e
        .deliver_signal(&first.token, signal("a", Some("k1")))
        .await
        .unwrap();
    let (_, _, duplicate) = e
        .deliver_signal(&first.token, signal("a", Some("k1")))
        .await
        .unwrap();
    let (_, _, resumed) = e
        .deliver_signal(&second.token, signal("b", None))
        .await
        .unwrap();
    let SignalOutcome::Accepted {
        signal_id: first_id,
        resumed: false,
    } = buffered
    else {
        panic!("{buffered:?}")
    };
    assert_eq!(
        duplicate,
        SignalOutcome::Duplicate {
            signal_id: first_id
        }
    );
    assert!(matches!(
        resumed,
        SignalOutcome::Accepted { resumed: true, .. }
    ));

    let events = db.events::<SignalEvent>(t).await;
    let seen: Vec<_> = events
        .iter()
        .map(|ev| (ev.effect.as_str(), ev.name.as_str(), ev.waitpoint_id))
        .collect();
    assert_eq!(
        seen,
        [
            ("buffered", "a", first.waitpoint.waitpoint_id),
            ("duplicate", "a", first.waitpoint.waitpoint_id),
            ("resumed", "b", second.waitpoint.waitpoint_id),
        ]
    );
    assert_eq!(
        events[1].signal_id, first_id,
        "the duplicate names the original"
    );
    assert!(events.iter().all(|ev| ev.execution_id == id));

    // A refused delivery (the waitpoint closed with the resume) records nothing.
    assert!(e
        .deliver_signal(&first.token, signal("late", None))
        .await
        .is_err());
    assert_eq!(db.events::<SignalEvent>(t).await.len(), 3);
}

async fn a_timeout_auto_resume_is_a_signal_event(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    e.create(t, task("a")).await.unwrap();
    let c = claim_one(e).await;
    e.suspend(
        &c.lease,
        ResumeCondition::TimeoutOnly,
        Some(60_000),
        TimeoutBehavior::AutoResume,
    )
    .await
    .unwrap();
    db.expire_suspension_timeouts().await;
    assert_eq!(
        db.backend()
            .time_out_suspensions(Sweep::every_tenant(10))
            .await
            .unwrap(),
        1
    );
    let events = db.events::<SignalEvent>(t).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].effect.as_str(), events[0].name.as_str()),
        ("resumed", "timeout")
    );
    assert!(events[0].waitpoint_id.as_uuid().is_nil());
}

#[tokio::test]
async fn retention_prunes_only_old_events() {
    let (db, t) = setup().await;
    let e = &db.engine;
    for i in 0..3 {
        e.create(t, task(&i.to_string())).await.unwrap();
        let c = claim_one(e).await;
        e.complete(&c.lease, b"").await.unwrap();
    }
    let events = db.events::<CompletionEvent>(t).await;
    // Age the first two completions (and every lease event) by two days.
    for sql in [
        "UPDATE completion_event_batches SET created_at = now() - interval '2 days' \
         WHERE event_id <= $1",
        "UPDATE lease_event_batches SET created_at = now() - interval '2 days' \
         WHERE $1::bigint IS NOT NULL",
    ] {
        sqlx::query(sql)
            .bind(events[1].event_id)
            .execute(db.pg())
            .await
            .unwrap();
    }
    let lease_events: i64 = sqlx::query_scalar(
        "SELECT sum(cardinality(execution_ids))::bigint FROM lease_event_batches",
    )
    .fetch_one(db.pg())
    .await
    .unwrap();
    assert_eq!(lease_events, 6, "three claims and three completions");
    let day = Duration::from_secs(86_400);
    assert_eq!(
        db.backend().prune_events(day * 3, 100).await.unwrap(),
        0,
        "nothing older than three days"
    );
    let pruned = db.backend().prune_events(day, 100).await.unwrap();
    assert_eq!(pruned as i64, 2 + lease_events);
    let left = db.events::<CompletionEvent>(t).await;
    assert_eq!(left, events[2..]);
    assert!(db.events::<LeaseEvent>(t).await.is_empty());
}

async fn an_operator_revokes_a_lease_and_the_execution_runs_again(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("a")).await.unwrap().execution_id;
    let first = claim_one(e).await;
    let mut revocations = e.revocations().await.unwrap();
    assert_eq!(
        e.revoke_lease(t, id).await.unwrap(),
        first.lease.attempt_index
    );
    // The worker is told at once, and its lease is fenced out.
    let told = tokio::time::timeout(Duration::from_secs(5), revocations.recv())
        .await
        .expect("a revocation within 5 s")
        .unwrap();
    assert_eq!(told, id);
    let late = e.complete(&first.lease, b"late").await;
    assert!(
        matches!(late, Err(flowfabric::EngineError::StaleLease { reason, .. })
            if reason.contains("revoked")),
        "{late:?}"
    );
    // Not active any more: a second revoke is refused and changes nothing.
    assert!(matches!(
        e.revoke_lease(t, id).await,
        Err(flowfabric::EngineError::NotActive { .. })
    ));
    let again = claim_one(e).await;
    assert_eq!(again.attempt_type, flowfabric::model::AttemptType::Reclaim);
    assert_eq!(again.lease.attempt_index, first.lease.attempt_index + 1);
    e.complete(&again.lease, b"ok").await.unwrap();

    let kinds: Vec<_> = db
        .events::<LeaseEvent>(t)
        .await
        .into_iter()
        .map(|ev| ev.kind)
        .collect();
    assert_eq!(kinds, ["acquired", "revoked", "reclaimed", "released"]);
    // Another tenant cannot revoke it, nor learn it exists.
    let other = db.tenant("other").await;
    assert!(matches!(
        e.revoke_lease(other, id).await,
        Err(flowfabric::EngineError::NotFound { .. })
    ));
}

/// A tenant's event wake-ups reach only its own followers: another tenant's
/// claims and completions, however many, wake none of them; its own do.
async fn event_wakeups_reach_only_their_tenants_followers(store: Store) {
    let (db, a) = setup_on(store).await;
    let e = &db.engine;
    let b = db.tenant("b").await;
    let mut follows_a = e.event_wakeups(a).await.unwrap();
    for i in 0..20 {
        e.create(b, task(&i.to_string())).await.unwrap();
    }
    for _ in 0..20 {
        let c = claim_one(e).await;
        e.complete(&c.lease, b"").await.unwrap();
    }
    assert_eq!(db.events::<CompletionEvent>(b).await.len(), 20);
    // Time for b's notifications to come round on Postgres.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        follows_a.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty),
        "b's events woke a's follower"
    );

    e.create(a, task("a")).await.unwrap();
    let c = claim_one(e).await;
    e.complete(&c.lease, b"").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), follows_a.recv())
        .await
        .expect("a's own events wake its follower")
        .unwrap();
}

on_both_backends!(
    event_wakeups_reach_only_their_tenants_followers,
    signal_delivery_records_buffered_resumed_and_duplicate,
    a_timeout_auto_resume_is_a_signal_event,
    completion_events_page_by_cursor_per_tenant,
    lease_history_records_every_lease_change,
    an_operator_revokes_a_lease_and_the_execution_runs_again,
);
