//! Filtered event reads: only the events that match (by execution, kind,
//! lane, outcome), and a filter that matches nothing in a window still moves
//! the cursor on.

use flowfabric_tests::Store;
use std::time::Duration;

use flowfabric::engine::MAX_EVENT_PAGE;
use flowfabric::model::{
    CompletionEvent, EventCursor, EventFilter, ExecutionId, Failure, FailureClass, LeaseEvent,
    NewExecution, SignalEvent,
};

use crate::{request, setup_on, task};

/// A filtered read once nothing is held back: the outbox withholds events
/// while any older transaction on the server runs (other tests' included).
async fn settled<E: flowfabric::engine::Subscription>(
    e: &flowfabric::Engine,
    t: flowfabric::model::TenantId,
    after: EventCursor,
    limit: u32,
    filter: &EventFilter,
) -> flowfabric::engine::FilteredBatch<E> {
    for _ in 0..500 {
        let page = e.read_events::<E>(t, after, limit, filter).await.unwrap();
        if !page.pending {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("events still pending after 10 s");
}

/// Ends an execution of `kind` in `lane` with `end`, returning its id.
async fn ended(
    db: &flowfabric_tests::TestDb,
    t: flowfabric::model::TenantId,
    kind: &str,
    lane: &str,
    end: &str,
) -> ExecutionId {
    let e = &db.engine;
    let mut new = NewExecution::new(kind, b"x".to_vec());
    new.lane = lane.into();
    let id = e.create(t, new).await.unwrap().execution_id;
    let mut req = request(1);
    req.lanes = vec![lane.into()];
    let claimed = e.claim(&req).await.unwrap().remove(0);
    assert_eq!(claimed.lease.execution_id, id);
    match end {
        "success" => e.complete(&claimed.lease, b"").await.unwrap(),
        "failed" => {
            let failure = Failure::new(FailureClass::Permanent, "no");
            e.fail(&claimed.lease, failure).await.unwrap();
        }
        _ => e.cancel_by_worker(&claimed.lease, "enough").await.unwrap(),
    }
    id
}

async fn filtered_reads_keep_only_matching_events(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut ids = Vec::new();
    for (kind, lane, end) in [
        ("mail", "default", "success"),
        ("mail", "bulk", "failed"),
        ("render", "bulk", "success"),
        ("mail", "default", "cancelled"),
        ("render", "default", "failed"),
    ] {
        ids.push((ended(&db, t, kind, lane, end).await, kind, lane, end));
    }
    let other = db.tenant("other").await;
    ended(&db, other, "mail", "default", "success").await;

    let filtered = |f: EventFilter| async move {
        let page = settled::<CompletionEvent>(e, t, EventCursor::START, 100, &f).await;
        assert!(!page.more, "everything fits one window");
        page.events
            .iter()
            .map(|ev| ev.execution_id)
            .collect::<Vec<_>>()
    };
    let expect = |keep: &dyn Fn(&str, &str, &str) -> bool| {
        ids.iter()
            .filter(|(_, k, l, o)| keep(k, l, o))
            .map(|(id, ..)| *id)
            .collect::<Vec<_>>()
    };
    let by_kind = EventFilter {
        kind: Some("mail".into()),
        ..Default::default()
    };
    assert_eq!(filtered(by_kind).await, expect(&|k, _, _| k == "mail"));
    let by_lane_and_outcome = EventFilter {
        lane: Some("bulk".into()),
        outcome: Some("success".into()),
        ..Default::default()
    };
    assert_eq!(
        filtered(by_lane_and_outcome).await,
        expect(&|_, l, o| l == "bulk" && o == "success")
    );
    let by_execution = EventFilter {
        execution: Some(ids[3].0),
        ..Default::default()
    };
    assert_eq!(filtered(by_execution).await, vec![ids[3].0]);
    let nothing = EventFilter {
        kind: Some("absent".into()),
        ..Default::default()
    };
    assert_eq!(filtered(nothing).await, Vec::<ExecutionId>::new());

    // A page of one match hands back that match's cursor; the next read
    // goes on from there.
    let failed = EventFilter {
        outcome: Some("failed".into()),
        ..Default::default()
    };
    let first = settled::<CompletionEvent>(e, t, EventCursor::START, 1, &failed).await;
    assert_eq!(first.events.len(), 1);
    assert!(first.more);
    assert_eq!(first.next, first.events[0].cursor);
    let second = settled::<CompletionEvent>(e, t, first.next, 10, &failed).await;
    let both: Vec<_> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|ev| ev.execution_id)
        .collect();
    assert_eq!(both, expect(&|_, _, o| o == "failed"));

    // Lease and signal streams filter on their own outcome words.
    let released = EventFilter {
        outcome: Some("released".into()),
        ..Default::default()
    };
    let leases = settled::<LeaseEvent>(e, t, EventCursor::START, 100, &released).await;
    assert!(!leases.events.is_empty());
    assert!(leases.events.iter().all(|ev| ev.kind == "released"));

    // A filter no event of the stream can meet is refused, naming the field.
    for (filter, field) in [
        (
            EventFilter {
                outcome: Some("completed".into()),
                ..Default::default()
            },
            "outcome",
        ),
        (
            EventFilter {
                kind: Some("bad kind!".into()),
                ..Default::default()
            },
            "kind",
        ),
        (
            EventFilter {
                lane: Some(String::new()),
                ..Default::default()
            },
            "lane",
        ),
    ] {
        let err = e
            .read_events::<CompletionEvent>(t, EventCursor::START, 10, &filter)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = e
        .read_events::<SignalEvent>(t, EventCursor::START, 10, &released)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("resumed, buffered, duplicate"),
        "{err}"
    );
}

/// A filter that matches nothing in a whole window still moves the cursor on,
/// so a subscriber is never stuck rereading the same events.
async fn a_filtered_read_scans_one_window_and_moves_on(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let batch: Vec<_> = (0..MAX_EVENT_PAGE + 5)
        .map(|i| task(&i.to_string()))
        .collect();
    for chunk in batch.chunks(500) {
        e.create_batch(t, chunk).await.unwrap();
    }
    while !e.claim(&request(500)).await.unwrap().is_empty() {}
    let target = ended(&db, t, "needle", "default", "success").await;
    let needle = EventFilter {
        execution: Some(target),
        ..Default::default()
    };
    let first = settled::<LeaseEvent>(e, t, EventCursor::START, 10, &needle).await;
    assert!(first.events.is_empty());
    assert!(first.more, "the window ran out before the end");
    assert_ne!(first.next, EventCursor::START);
    let second = settled::<LeaseEvent>(e, t, first.next, 10, &needle).await;
    let kinds: Vec<_> = second.events.iter().map(|ev| ev.kind.as_str()).collect();
    assert_eq!(kinds, ["acquired", "released"]);
    assert!(!second.more);
}

on_both_backends!(
    filtered_reads_keep_only_matching_events,
    a_filtered_read_scans_one_window_and_moves_on,
);
