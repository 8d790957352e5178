//! Stream modes (reference §6 streams: durable, durable-summary, best-effort).

use flowfabric::model::{StreamMode, BEST_EFFORT_WINDOW};
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

on_both_backends!(
    summary_frames_merge_into_one_document_per_attempt,
    best_effort_frames_keep_only_the_newest_window,
);
