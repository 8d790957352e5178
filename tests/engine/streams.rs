//! Stream modes (reference §6 streams: durable, durable-summary, best-effort).

use flowfabric::model::{
    ResumeCondition, StreamMode, SuspendOutcome, TenantLimits, TimeoutBehavior, BEST_EFFORT_WINDOW,
};
use flowfabric_tests::Store;
use serde_json::json;

use crate::{claim_one, setup_on, task};

async fn summary_frames_merge_into_one_document_per_attempt(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let patches = [
        json!({ "phase": "fetch", "counts": { "a": 1, "b": 2 }, "gone": true }),
        json!({ "counts": { "b": null, "c": 3 }, "gone": null }),
        json!({ "phase": "render", "note": "__ff_null__" }),
    ];
    for p in &patches {
        e.append_frame(
            &c.lease,
            "state",
            StreamMode::Summary,
            p.to_string().as_bytes(),
        )
        .await
        .unwrap();
    }
    let summary = e.read_summary(t, id, 1).await.unwrap();
    assert_eq!(
        summary.document,
        json!({ "phase": "render", "counts": { "a": 1, "c": 3 }, "note": null })
    );
    assert_eq!(summary.version, 3);
    // The patches are also in the stream, in order, for tailers.
    let frames = e.read_frames(t, id, 1, 0, 10).await.unwrap();
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.mode == StreamMode::Summary));

    // Not JSON objects: refused, and the document is unchanged.
    for bad in [&b"not json"[..], b"[1, 2]", b"7"] {
        let err = e
            .append_frame(&c.lease, "state", StreamMode::Summary, bad)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_input");
    }
    assert_eq!(e.read_summary(t, id, 1).await.unwrap().version, 3);

    // Fenced like every worker write.
    e.complete(&c.lease, b"").await.unwrap();
    let err = e
        .append_frame(&c.lease, "state", StreamMode::Summary, b"{\"late\": 1}")
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), "not_active" | "stale_lease"), "{err}");
    assert_eq!(e.read_summary(t, id, 1).await.unwrap().version, 3);
    assert_eq!(
        e.read_summary(t, id, 2).await.unwrap_err().kind(),
        "not_found"
    );
    let other = db.tenant("other").await;
    assert_eq!(
        e.read_summary(other, id, 1).await.unwrap_err().kind(),
        "not_found"
    );
}

async fn best_effort_frames_keep_only_the_newest_window(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    e.append_frame(&c.lease, "header", StreamMode::Durable, b"kept")
        .await
        .unwrap();
    let total = BEST_EFFORT_WINDOW + 50;
    for i in 0..total {
        e.append_frame(
            &c.lease,
            "tick",
            StreamMode::BestEffort,
            i.to_string().as_bytes(),
        )
        .await
        .unwrap();
    }
    let frames = e.read_frames(t, id, 1, 0, 1_000).await.unwrap();
    let ticks: Vec<_> = frames.iter().filter(|f| f.frame_type == "tick").collect();
    assert_eq!(ticks.len() as i64, BEST_EFFORT_WINDOW);
    assert_eq!(
        ticks.last().unwrap().payload,
        (total - 1).to_string().as_bytes()
    );
    assert_eq!(
        frames[0].frame_type, "header",
        "durable frames are never trimmed"
    );
}

/// Cap the tenant's frame bytes per attempt at `bytes`; one execution.
async fn with_frame_cap(
    e: &flowfabric::Engine,
    t: flowfabric::model::TenantId,
    bytes: u64,
) -> flowfabric::model::ExecutionId {
    let limits = TenantLimits {
        max_frame_bytes_per_attempt: Some(bytes),
        ..TenantLimits::default()
    };
    e.set_tenant_limits(t, limits).await.unwrap();
    e.create(t, task("x")).await.unwrap().execution_id
}

/// Sequence numbers and the byte cap count per attempt: a new attempt starts
/// both again, and a resumed attempt carries on where it suspended.
async fn frame_sequences_and_byte_totals_are_per_attempt(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = with_frame_cap(e, t, 100).await;
    let append = async |lease, bytes: usize| {
        e.append_frame(lease, "out", StreamMode::Durable, &vec![7; bytes])
            .await
    };

    let first = claim_one(e).await;
    assert_eq!(append(&first.lease, 40).await.unwrap(), 1);
    assert_eq!(append(&first.lease, 40).await.unwrap(), 2);
    let full = append(&first.lease, 40).await.unwrap_err();
    assert_eq!(full.kind(), "limit_exceeded", "{full}");
    assert!(full.to_string().contains("hold 80 bytes"), "{full}");

    e.revoke_lease(t, id).await.unwrap();
    let second = claim_one(e).await;
    assert_eq!(second.lease.attempt_index, 2);
    assert_eq!(append(&second.lease, 40).await.unwrap(), 1, "a new attempt");
    assert_eq!(append(&second.lease, 40).await.unwrap(), 2);
    e.create_waitpoint(&second.lease, "go", None).await.unwrap();
    let go = ResumeCondition::Waitpoint { key: "go".into() };
    let outcome = e.suspend(&second.lease, go, None, TimeoutBehavior::Fail);
    assert_eq!(outcome.await.unwrap(), SuspendOutcome::Suspended);
    e.resume(t, id).await.unwrap();

    let resumed = claim_one(e).await;
    assert_eq!(resumed.lease.attempt_index, 2);
    let full = append(&resumed.lease, 40).await.unwrap_err();
    assert!(full.to_string().contains("hold 80 bytes"), "{full}");
    assert_eq!(append(&resumed.lease, 20).await.unwrap(), 3, "carried on");
    // The stale lease of the suspended run writes nothing.
    assert!(append(&second.lease, 1).await.is_err());

    let seqs = |frames: Vec<flowfabric::model::Frame>| -> Vec<i64> {
        frames.iter().map(|f| f.seq).collect()
    };
    assert_eq!(seqs(e.read_frames(t, id, 1, 0, 10).await.unwrap()), [1, 2]);
    assert_eq!(
        seqs(e.read_frames(t, id, 2, 0, 10).await.unwrap()),
        [1, 2, 3]
    );
}

/// Frames written together take consecutive sequence numbers between the
/// frames written alone, count against the attempt's bytes as a whole (all
/// or none), and are fenced like any frame.
async fn frames_appended_together_are_one_write_all_or_none(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = with_frame_cap(e, t, 100).await;
    let c = claim_one(e).await;
    let one = async |payload: &[u8]| {
        e.append_frame(&c.lease, "out", StreamMode::Durable, payload)
            .await
    };
    assert_eq!(one(b"first").await.unwrap(), 1);
    let batch = [b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()];
    assert_eq!(e.append_frames(&c.lease, "http", &batch).await.unwrap(), 4);
    assert_eq!(one(b"last").await.unwrap(), 5);

    // 5 + 6 + 4 bytes held: 86 more would pass the 100.
    let over = [vec![1; 40], vec![2; 46]];
    let err = e.append_frames(&c.lease, "http", &over).await.unwrap_err();
    assert_eq!(err.kind(), "limit_exceeded", "{err}");
    let empty = e.append_frames(&c.lease, "http", &[]).await.unwrap_err();
    assert_eq!(empty.kind(), "invalid_input", "{empty}");

    let frames = e.read_frames(t, id, 1, 0, 20).await.unwrap();
    let written: Vec<(i64, &str, &[u8])> = frames
        .iter()
        .map(|f| (f.seq, f.frame_type.as_str(), f.payload.as_slice()))
        .collect();
    assert_eq!(
        written,
        [
            (1, "out", &b"first"[..]),
            (2, "http", b"a"),
            (3, "http", b"bb"),
            (4, "http", b"ccc"),
            (5, "out", b"last"),
        ],
        "nothing of the refused batch"
    );
    assert!(frames.iter().all(|f| f.mode == StreamMode::Durable));

    e.complete(&c.lease, b"").await.unwrap();
    let late = e.append_frames(&c.lease, "http", &batch).await.unwrap_err();
    assert!(
        matches!(late.kind(), "not_active" | "stale_lease"),
        "{late}"
    );
    assert_eq!(e.read_frames(t, id, 1, 0, 20).await.unwrap().len(), 5);
}

on_both_backends!(
    frames_appended_together_are_one_write_all_or_none,
    summary_frames_merge_into_one_document_per_attempt,
    best_effort_frames_keep_only_the_newest_window,
    frame_sequences_and_byte_totals_are_per_attempt,
);

/// A frame written while a revoke of its lease is under way waits for the
/// revoke and is refused: the lease is checked on the execution's row, locked
/// by the frame's statement, not read from before the revoke committed.
#[tokio::test]
async fn a_frame_racing_a_revoke_waits_for_it_and_is_refused_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    e.append_frame(&c.lease, "out", StreamMode::Durable, b"before")
        .await
        .unwrap();
    let mut revoke = db.pg().begin().await.unwrap();
    sqlx::query(
        "UPDATE executions SET lease_epoch = lease_epoch + 1 \
         WHERE tenant_id = $1 AND execution_id = $2",
    )
    .bind(t)
    .bind(id)
    .execute(&mut *revoke)
    .await
    .unwrap();
    let revoke_commits = async {
        crate::wait_for_a_lock_wait(&db).await;
        revoke.commit().await.unwrap();
    };
    let (late, ()) = tokio::join!(
        e.append_frame(&c.lease, "out", StreamMode::Durable, b"late"),
        revoke_commits
    );
    let err = late.expect_err("a frame after the revoke");
    assert_eq!(err.kind(), "stale_lease", "{err}");
    let frames = e.read_frames(t, id, 1, 0, 10).await.unwrap();
    assert_eq!(frames.len(), 1, "only the frame from before the revoke");
}

/// A frame notifies `flowfabric_updates` only for an execution a live
/// stream follows: every listening process reads each notification in a
/// transaction of its own, so one nobody follows would cost the server for
/// nothing. Following it (`Engine::updates`) marks it first, so its next
/// frame, and a step's, notifies.
#[tokio::test]
async fn only_followed_executions_frames_notify_on_postgres() {
    let (db, t) = crate::setup().await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(db.pg())
        .await
        .unwrap();
    listener.listen("flowfabric_updates").await.unwrap();
    e.append_frame(&c.lease, "out", StreamMode::Durable, b"unfollowed")
        .await
        .unwrap();
    assert_eq!(heard(&mut listener).await, None, "nobody follows it");

    let _updates = e.updates(t, id).await.unwrap();
    e.append_frame(&c.lease, "out", StreamMode::Durable, b"followed")
        .await
        .unwrap();
    assert_eq!(
        heard(&mut listener).await,
        Some(format!("{t}:{id}")),
        "a follower marked it"
    );
    e.append_frames(&c.lease, "out", &[b"a".to_vec(), b"b".to_vec()])
        .await
        .unwrap();
    assert_eq!(heard(&mut listener).await, Some(format!("{t}:{id}")));
    e.record_step(&c.lease, crate::steps::step(0, "charge", b"done"))
        .await
        .unwrap();
    assert_eq!(
        heard(&mut listener).await,
        Some(format!("{t}:{id}")),
        "a step is a frame too"
    );

    let stranger = db.tenant("stranger").await;
    let refused = e.updates(stranger, id).await.map(|_| ());
    assert_eq!(
        refused.map_err(|e| e.kind()),
        Err("not_found"),
        "another tenant's execution cannot be followed"
    );
    let missing = flowfabric::model::ExecutionId::new();
    assert!(e.updates(t, missing).await.is_err(), "nor a missing one");
    let (marked,): (i64,) = sqlx::query_as("SELECT count(*) FROM followed_executions")
        .fetch_one(db.pg())
        .await
        .unwrap();
    assert_eq!(marked, 1, "only the followed execution is marked");

    let other = e.create(t, task("y")).await.unwrap().execution_id;
    let d = claim_one(e).await;
    assert_eq!(d.lease.execution_id, other);
    e.append_frame(&d.lease, "out", StreamMode::Durable, b"theirs")
        .await
        .unwrap();
    assert_eq!(heard(&mut listener).await, None, "another, unfollowed");
}

/// The payload of the next notification within half a second, if any.
async fn heard(listener: &mut sqlx::postgres::PgListener) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_millis(500), listener.recv())
        .await
        .ok()
        .map(|n| n.unwrap().payload().to_owned())
}
