//! Event streams (reference: subscriptions): completion, lease history and
//! signal delivery, read by cursor; the cursor never skips an event whose
//! transaction commits late; retention prunes old events.

use flowfabric::backend::Sweep;
use flowfabric::Engine;
use flowfabric_tests::Store;
use std::time::Duration;

use flowfabric::model::{
    ClaimedExecution, CompletionEvent, EventCursor, LeaseEvent, NewSignal, ResumeCondition,
    SignalEvent, SignalOutcome, StreamMode, TenantId, TimeoutBehavior,
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
        "INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome) \
         VALUES ($1, $2, 0, 'cancelled')",
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

fn kinds(events: &[LeaseEvent]) -> Vec<(&str, i64)> {
    events
        .iter()
        .map(|ev| (ev.kind.as_str(), ev.lease_epoch))
        .collect()
}

/// `n` new executions of tenant `t`, claimed in one claim.
async fn claim_batch(e: &Engine, t: TenantId, n: usize) -> Vec<ClaimedExecution> {
    let news: Vec<_> = (0..n).map(|i| task(&i.to_string())).collect();
    e.create_batch(t, &news).await.unwrap();
    let claimed = e.claim(&crate::request(n as u32)).await.unwrap();
    assert_eq!(claimed.len(), n);
    claimed
}

/// Completes every claimed execution in one batch.
async fn complete_all(e: &Engine, claimed: &[ClaimedExecution]) {
    let completions: Vec<_> = claimed
        .iter()
        .map(|c| (c.lease.clone(), &b"ok"[..]))
        .collect();
    for written in e.complete_many(&completions).await.unwrap() {
        written.unwrap();
    }
}

async fn batched_claims_and_completions_record_one_event_per_execution(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let claimed = claim_batch(e, t, 3).await;
    // Updates of the execution row that leave its lease alone record nothing.
    let first = &claimed[0].lease;
    e.append_frame(first, "log", StreamMode::Durable, b"x")
        .await
        .unwrap();
    e.set_progress(first, 50, "half").await.unwrap();
    complete_all(e, &claimed).await;

    let events = db.events::<LeaseEvent>(t).await;
    for c in &claimed {
        let mine: Vec<_> = events
            .iter()
            .filter(|ev| ev.execution_id == c.lease.execution_id)
            .map(|ev| (ev.kind.as_str(), ev.lease_epoch, ev.attempt_index))
            .collect();
        let (epoch, attempt) = (c.lease.lease_epoch, c.lease.attempt_index);
        assert_eq!(
            mine,
            [("acquired", epoch, attempt), ("released", epoch, attempt)]
        );
    }
    assert_eq!(events.len(), 6);
}

/// A claim of many executions records their acquisitions together (on
/// Postgres, one stored row a tenant); read in pages smaller than that,
/// every event still comes once, in order, with an id and cursor of its own,
/// and each execution's history finds its own.
async fn a_batch_of_lease_events_reads_back_one_event_at_a_time(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let claimed = claim_batch(e, t, 25).await;
    complete_all(e, &claimed).await;

    let all = db.events::<LeaseEvent>(t).await;
    assert_eq!(all.len(), 50);
    assert!(all.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert!(all.windows(2).all(|w| w[0].event_id < w[1].event_id));
    let mut paged = Vec::new();
    let mut after = EventCursor::START;
    loop {
        let page = e.lease_events(t, after, 4).await.unwrap();
        assert!(page.events.len() <= 4);
        let Some(last) = page.events.last() else {
            assert!(!page.pending);
            break;
        };
        after = last.cursor;
        paged.extend(page.events);
    }
    assert_eq!(paged, all, "pages of four deliver every event once");
    // A cursor from the middle of a statement's events resumes after it.
    let resumed = e.lease_events(t, all[10].cursor, 3).await.unwrap();
    assert_eq!(resumed.events, all[11..14]);

    for c in [&claimed[0], &claimed[24]] {
        let history = e.lease_history(t, c.lease.execution_id).await.unwrap();
        assert_eq!(
            kinds(&history),
            [
                ("acquired", c.lease.lease_epoch),
                ("released", c.lease.lease_epoch)
            ]
        );
        let from_stream: Vec<_> = all
            .iter()
            .filter(|ev| ev.execution_id == c.lease.execution_id)
            .cloned()
            .collect();
        assert_eq!(history, from_stream);
    }
    let stranger = db.tenant("stranger").await;
    let theirs = e.lease_history(stranger, claimed[0].lease.execution_id);
    assert!(matches!(
        theirs.await,
        Err(flowfabric::error::EngineError::NotFound { .. })
    ));
}

/// On Postgres a statement's lease changes are stored one row per tenant
/// (migration 0038), each tenant's events in its own row.
#[tokio::test]
async fn a_claims_lease_events_are_one_row_per_tenant() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let other = db.tenant("other").await;
    for tenant in [t, other] {
        let news: Vec<_> = (0..10).map(|i| task(&i.to_string())).collect();
        e.create_batch(tenant, &news).await.unwrap();
    }
    let claimed = e.claim(&crate::request(20)).await.unwrap();
    assert_eq!(claimed.len(), 20);
    let rows: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
        "SELECT tenant_id, cardinality(execution_ids) FROM lease_event_batches ORDER BY 1",
    )
    .fetch_all(db.pg())
    .await
    .unwrap();
    let mut expected = vec![(t.as_uuid(), 10), (other.as_uuid(), 10)];
    expected.sort();
    assert_eq!(rows, expected);
    for tenant in [t, other] {
        let events = db.events::<LeaseEvent>(tenant).await;
        assert_eq!(events.len(), 10);
        assert!(events.iter().all(|ev| ev.kind == "acquired"));
    }
}

/// Events in the table lease events were kept in before migration 0038
/// (written before it ran, or by a process of the previous build still
/// running) are read, followed and pruned beside the batches.
#[tokio::test]
async fn lease_events_of_the_previous_build_stay_readable() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let id = e.create(t, task("a")).await.unwrap().execution_id;
    sqlx::query(
        "INSERT INTO lease_events (tenant_id, execution_id, attempt_index, lease_epoch, kind, \
             lease_expires_at, phase) VALUES ($1, $2, 7, 70, 'acquired', now(), 'active')",
    )
    .bind(t)
    .bind(id)
    .execute(db.pg())
    .await
    .unwrap();
    let c = claim_one(e).await;
    e.complete(&c.lease, b"").await.unwrap();

    let epoch = c.lease.lease_epoch;
    let expected = [("acquired", 70), ("acquired", epoch), ("released", epoch)];
    let events = db.events::<LeaseEvent>(t).await;
    assert_eq!(kinds(&events), expected);
    assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor));
    let after_old = e.lease_events(t, events[0].cursor, 10).await.unwrap();
    assert_eq!(after_old.events, events[1..]);
    assert_eq!(kinds(&e.lease_history(t, id).await.unwrap()), expected);

    sqlx::query("UPDATE lease_events SET created_at = now() - interval '2 days'")
        .execute(db.pg())
        .await
        .unwrap();
    let day = Duration::from_secs(86_400);
    assert_eq!(db.backend().prune_events(day, 100).await.unwrap(), 1);
    assert_eq!(kinds(&db.events::<LeaseEvent>(t).await), expected[1..]);
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
        "UPDATE completion_events SET created_at = now() - interval '2 days' WHERE event_id <= $1",
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
    batched_claims_and_completions_record_one_event_per_execution,
    a_batch_of_lease_events_reads_back_one_event_at_a_time,
    an_operator_revokes_a_lease_and_the_execution_runs_again,
);
