//! How the event streams are stored: Postgres keeps a statement's lease
//! events, and its completion events, as one row per tenant of parallel
//! arrays (migrations 0038 and 0040) beside the tables of the builds before;
//! every event still reads back once, in order, with its own id and cursor.

use flowfabric::model::{
    ClaimedExecution, CompletionEvent, EventBatch, EventCursor, Failure, FailureClass, LeaseEvent,
    PublicState, StreamMode, TenantId,
};
use flowfabric::Engine;
use flowfabric_tests::Store;
use std::time::Duration;

use crate::events::kinds;
use crate::flows::{claim_all, create, edge, graph, member, no_retry, state};
use crate::{claim_one, setup, setup_on, task};

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
    read_back_one_at_a_time(
        &all,
        |ev: &LeaseEvent| (ev.cursor, ev.event_id),
        async |after, limit| e.lease_events(t, after, limit).await.unwrap(),
    )
    .await;

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

/// On Postgres a statement's lease changes (migration 0038) and its
/// completion events (0040) are stored one row per tenant, each tenant's
/// events in its own row: a claim of two tenants' work writes a lease row
/// each, their completion batch a completion row each.
#[tokio::test]
async fn a_statements_events_are_one_row_per_tenant() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let other = db.tenant("other").await;
    for tenant in [t, other] {
        let news: Vec<_> = (0..10).map(|i| task(&i.to_string())).collect();
        e.create_batch(tenant, &news).await.unwrap();
    }
    let mut expected = vec![(t.as_uuid(), 10), (other.as_uuid(), 10)];
    expected.sort();
    let rows_of = async |table: &str| -> Vec<(uuid::Uuid, i32)> {
        let sql = format!("SELECT tenant_id, cardinality(execution_ids) FROM {table} ORDER BY 1");
        sqlx::query_as(&sql).fetch_all(db.pg()).await.unwrap()
    };

    let claimed = e.claim(&crate::request(20)).await.unwrap();
    assert_eq!(claimed.len(), 20);
    assert_eq!(rows_of("lease_event_batches").await, expected);
    for tenant in [t, other] {
        let events = db.events::<LeaseEvent>(tenant).await;
        assert_eq!(events.len(), 10);
        assert!(events.iter().all(|ev| ev.kind == "acquired"));
    }

    complete_all(e, &claimed).await;
    assert_eq!(rows_of("completion_event_batches").await, expected);
    for tenant in [t, other] {
        assert_eq!(db.events::<CompletionEvent>(tenant).await.len(), 10);
    }
}

/// On Postgres an execution's timeline is found by the tenant and the moment
/// its executions were created (migration 0042), not by each execution: a
/// claim of work created together adds a key or two to the index, not one an
/// execution. Two tenants' executions created at the same moment, claimed and
/// ended in the same statements, share their tenant's keys, and each timeline
/// still holds its own events alone; the read stays on that index.
#[tokio::test]
async fn a_timeline_is_found_by_its_moment_and_holds_its_own_events() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let other = db.tenant("other").await;
    for tenant in [t, other] {
        let news: Vec<_> = (0..30).map(|i| task(&i.to_string())).collect();
        e.create_batch(tenant, &news).await.unwrap();
    }
    let claimed = e.claim(&crate::request(60)).await.unwrap();
    assert_eq!(claimed.len(), 60);
    complete_all(e, &claimed).await;

    let rows: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT cardinality(execution_ids), (SELECT count(DISTINCT k)::int4 \
             FROM unnest(flowfabric_execution_moments(tenant_id, execution_ids)) k) \
         FROM lease_event_batches",
    )
    .fetch_all(db.pg())
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "a row per tenant for the claim and the end");
    for (events, keys) in rows {
        assert_eq!(events, 30);
        assert!((1..=2).contains(&keys), "{keys} keys for {events} events");
    }
    for c in &claimed {
        let lease = &c.lease;
        let history = e.lease_history(lease.tenant_id, lease.execution_id);
        let history = history.await.unwrap();
        assert!(history
            .iter()
            .all(|ev| ev.execution_id == lease.execution_id));
        let expected = [
            ("acquired", lease.lease_epoch),
            ("released", lease.lease_epoch),
        ];
        assert_eq!(kinds(&history), expected);
    }

    // Enough history of another tenant that a scan of the table costs more.
    let stranger = db.tenant("stranger").await;
    sqlx::query(
        "INSERT INTO lease_event_batches (tenant_id, execution_ids, attempt_indexes, \
             lease_epochs, kinds, lease_expires_ats, phases) \
         SELECT $1, ARRAY[gen_random_uuid()], '{0}', '{1}', '{a}', ARRAY[now()], '{a}' \
         FROM generate_series(1, 5000)",
    )
    .bind(stranger)
    .execute(db.pg())
    .await
    .unwrap();
    let pg = db.analysed_backend("lease_event_batches").await;
    let plan = pg.explain_lease_history().await.unwrap();
    assert!(plan.contains("lease_event_batches_moment_idx"), "{plan}");
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

/// `all`, a stream's every event (more than 14), is in cursor and id
/// order; read from the start in pages of four, every event comes once
/// (and no more than `all` in all: a read that never moves on fails rather
/// than loops); a cursor from the middle of a statement's events resumes
/// after it.
async fn read_back_one_at_a_time<E: Clone + PartialEq + std::fmt::Debug>(
    all: &[E],
    position: impl Fn(&E) -> (EventCursor, i64),
    read: impl AsyncFn(EventCursor, u32) -> EventBatch<E>,
) {
    assert!(all.windows(2).all(|w| position(&w[0]) < position(&w[1])));
    assert!(all
        .windows(2)
        .all(|w| position(&w[0]).1 < position(&w[1]).1));
    let mut paged = Vec::new();
    let mut after = EventCursor::START;
    loop {
        let page = read(after, 4).await;
        assert!(page.events.len() <= 4);
        let Some(last) = page.events.last() else {
            assert!(!page.pending);
            break;
        };
        after = position(last).0;
        paged.extend(page.events);
        assert!(paged.len() <= all.len(), "{} events read", paged.len());
    }
    assert_eq!(paged, all, "pages of four deliver every event once");
    let resumed = read(position(&all[10]).0, 3).await;
    assert_eq!(resumed.events, all[11..14]);
}

/// A completion batch records its executions' completion events together
/// (on Postgres, one stored row a tenant); read in pages smaller than that,
/// every event comes once, in order, with its own id, cursor and outcome.
async fn a_batch_of_completion_events_reads_back_one_event_at_a_time(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let claimed = claim_batch(e, t, 25).await;
    complete_all(e, &claimed).await;

    let all = db.events::<CompletionEvent>(t).await;
    assert_eq!(all.len(), 25);
    let mut ended: Vec<_> = all.iter().map(|ev| ev.execution_id).collect();
    let mut expected: Vec<_> = claimed.iter().map(|c| c.lease.execution_id).collect();
    ended.sort();
    expected.sort();
    assert_eq!(ended, expected, "each execution once");
    let first_attempt = claimed[0].lease.attempt_index;
    assert!(all
        .iter()
        .all(|ev| (ev.outcome.as_str(), ev.attempt_index) == ("success", first_attempt)));
    read_back_one_at_a_time(
        &all,
        |ev: &CompletionEvent| (ev.cursor, ev.event_id),
        async |after, limit| e.completion_events(t, after, limit).await.unwrap(),
    )
    .await;
    let stranger = db.tenant("stranger").await;
    assert!(db.events::<CompletionEvent>(stranger).await.is_empty());
}

/// Completion events in the table of the builds before migration 0040
/// are read, followed and pruned beside the rows of events; one inserted
/// there still resolves its flow (its trigger stays).
#[tokio::test]
async fn completion_events_of_the_previous_build_stay_readable() {
    let (db, t) = setup().await;
    let e = &db.engine;
    let old = e.create(t, task("old")).await.unwrap().execution_id;
    sqlx::query(
        "INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome) \
         VALUES ($1, $2, 0, 'cancelled')",
    )
    .bind(t)
    .bind(old)
    .execute(db.pg())
    .await
    .unwrap();
    let c = claim_one(e).await;
    e.complete(&c.lease, b"").await.unwrap();

    let events = db.events::<CompletionEvent>(t).await;
    let seen: Vec<_> = events
        .iter()
        .map(|ev| (ev.execution_id, ev.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [(old, "cancelled"), (c.lease.execution_id, "success")]
    );
    let after_old = e.completion_events(t, events[0].cursor, 10).await.unwrap();
    assert_eq!(after_old.events, events[1..]);

    sqlx::query("UPDATE completion_events SET created_at = now() - interval '2 days'")
        .execute(db.pg())
        .await
        .unwrap();
    let day = Duration::from_secs(86_400);
    let pruned = db.backend().prune_events(day, 100).await.unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(db.events::<CompletionEvent>(t).await, events[1..]);
}

/// The outbox's trigger resolves flows from rows of events: upstreams that
/// end in one completion batch run their join; an upstream's failure skips
/// its downstream, an event the flow's own resolution writes.
async fn flows_resolve_from_a_batch_of_completion_events(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let members = vec![
        member("a"),
        member("b"),
        member("join"),
        no_retry(member("c")),
        member("d"),
    ];
    let edges = vec![edge("a", "join"), edge("b", "join"), edge("c", "d")];
    let f = create(e, t, graph(members, edges)).await;
    let mut roots = claim_all(e).await;
    assert_eq!(roots.len(), 3);
    let upstreams = [
        roots.remove(&f.members["a"]).unwrap(),
        roots.remove(&f.members["b"]).unwrap(),
    ];
    complete_all(e, &upstreams).await;
    let c = roots.remove(&f.members["c"]).unwrap();
    e.fail(&c.lease, Failure::new(FailureClass::Permanent, "boom"))
        .await
        .unwrap();
    assert_eq!(state(e, t, f.members["d"]).await, PublicState::Skipped);
    let join = claim_all(e).await;
    assert_eq!(join.keys().collect::<Vec<_>>(), [&f.members["join"]]);

    let ended: Vec<_> = db
        .events::<CompletionEvent>(t)
        .await
        .into_iter()
        .map(|ev| (ev.execution_id, ev.outcome))
        .collect();
    let key = |id| {
        f.members
            .iter()
            .find(|(_, m)| **m == id)
            .unwrap()
            .0
            .as_str()
    };
    let mut seen: Vec<_> = ended.iter().map(|(id, o)| (key(*id), o.as_str())).collect();
    seen[..2].sort();
    assert_eq!(
        seen,
        [
            ("a", "success"),
            ("b", "success"),
            ("c", "failed"),
            ("d", "skipped")
        ]
    );
}

on_both_backends!(
    a_batch_of_completion_events_reads_back_one_event_at_a_time,
    flows_resolve_from_a_batch_of_completion_events,
    batched_claims_and_completions_record_one_event_per_execution,
    a_batch_of_lease_events_reads_back_one_event_at_a_time,
);
