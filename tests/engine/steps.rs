//! The journal of durable steps through the engine, on both backends: only
//! the live lease records, a position is recorded once, a replayed record is
//! harmless, the caps refuse with nothing written, and listing is scoped to
//! the tenant.

use chrono::Utc;
use flowfabric::model::{NewStep, StepKind, StepOutcome};
use flowfabric::EngineError;
use flowfabric_tests::Store;

use crate::{claim_one, setup_on, task};

pub(crate) fn step(position: u32, name: &str, output: &[u8]) -> NewStep {
    NewStep {
        position,
        name: name.into(),
        outcome: StepOutcome::Completed(output.to_vec()),
        duration_ms: 3,
    }
}

async fn only_the_live_lease_records_and_each_position_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let old = claim_one(e).await;
    e.record_step(&old.lease, step(0, "charge", b"r1"))
        .await
        .unwrap();
    // The same call again (a retried host call) is harmless.
    e.record_step(&old.lease, step(0, "charge", b"r1"))
        .await
        .unwrap();

    // The lease is taken away; a new attempt holds the execution.
    e.revoke_lease(t, id).await.unwrap();
    let new = claim_one(e).await;
    assert_eq!(new.lease.attempt_index, 2);

    // Old and new race for the next position: only the new one records.
    let (stale, live) = tokio::join!(
        e.record_step(&old.lease, step(1, "ship", b"old")),
        e.record_step(&new.lease, step(1, "ship", b"new")),
    );
    assert!(
        matches!(stale, Err(EngineError::StaleLease { .. })),
        "{stale:?}"
    );
    live.unwrap();
    // A position already recorded (by the old attempt) is not overwritten.
    let taken = e
        .record_step(&new.lease, step(0, "charge", b"r2"))
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), "conflict", "{taken}");

    let journal = e.journal(&new.lease).await.unwrap();
    let seen: Vec<_> = journal
        .iter()
        .map(|s| {
            (
                s.position,
                s.name.as_str(),
                s.attempt_index,
                s.outcome.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, "charge", 1, StepOutcome::Completed(b"r1".to_vec())),
            (1, "ship", 2, StepOutcome::Completed(b"new".to_vec())),
        ]
    );
}

async fn caps_refuse_a_step_with_nothing_written(store: Store) {
    let (db, t) = crate::setup_with(store, |l| {
        l.max_steps_per_execution = 2;
        l.max_step_bytes = 100;
        l.max_journal_bytes_per_execution = 150;
    })
    .await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let too_big = e
        .record_step(&c.lease, step(0, "a", &[0; 101]))
        .await
        .unwrap_err();
    assert_eq!(too_big.kind(), "limit_exceeded");
    assert!(too_big.to_string().contains("max_step_bytes"), "{too_big}");
    e.record_step(&c.lease, step(0, "a", &[0; 100]))
        .await
        .unwrap();
    let over_journal = e
        .record_step(&c.lease, step(1, "b", &[0; 51]))
        .await
        .unwrap_err();
    assert!(
        over_journal
            .to_string()
            .contains("max_journal_bytes_per_execution"),
        "{over_journal}"
    );
    e.record_step(&c.lease, step(1, "b", &[0; 50]))
        .await
        .unwrap();
    let full = e
        .record_step(&c.lease, step(2, "c", b""))
        .await
        .unwrap_err();
    assert!(
        full.to_string().contains("max_steps_per_execution"),
        "{full}"
    );
    assert_eq!(e.journal(&c.lease).await.unwrap().len(), 2);
    // Refused records left no frames behind either: one per recorded step.
    let frames = e
        .read_frames(t, c.lease.execution_id, 1, 0, 100)
        .await
        .unwrap();
    assert_eq!(frames.iter().filter(|f| f.frame_type == "step").count(), 2);

    // A replay with a fresh journal starts the caps' counts again; one that
    // keeps the journal keeps them.
    e.complete(&c.lease, b"").await.unwrap();
    e.replay(t, id, false).await.unwrap();
    let fresh = claim_one(e).await;
    e.record_step(&fresh.lease, step(0, "a", &[0; 100]))
        .await
        .unwrap();
    e.record_step(&fresh.lease, step(1, "b", &[0; 50]))
        .await
        .unwrap();
    e.complete(&fresh.lease, b"").await.unwrap();
    e.replay(t, id, true).await.unwrap();
    let kept = claim_one(e).await;
    let still_full = e
        .record_step(&kept.lease, step(2, "c", b""))
        .await
        .unwrap_err();
    assert!(
        still_full.to_string().contains("max_steps_per_execution"),
        "{still_full}"
    );
}

async fn a_bad_step_name_is_refused(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    e.create(t, task("x")).await.unwrap();
    let c = claim_one(e).await;
    for name in ["", "a\u{0}b", &"n".repeat(129)] {
        let err = e
            .record_step(&c.lease, step(0, name, b""))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{name:?}");
    }
}

async fn sleeping_suspends_and_the_listing_is_the_tenants_own(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let wake_at = Utc::now() + chrono::TimeDelta::hours(1);
    let sleep = NewStep {
        position: 0,
        name: "sleep".into(),
        outcome: StepOutcome::Sleep { wake_at },
        duration_ms: 0,
    };
    e.sleep(&c.lease, Some(sleep), wake_at).await.unwrap();
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(ex.state, flowfabric::model::PublicState::Suspended);
    // The lease went with the suspension.
    assert!(e.record_step(&c.lease, step(1, "a", b"")).await.is_err());

    let listed = e.list_steps(t, id, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, StepKind::Sleep);
    assert_eq!(
        listed[0].wake_at.map(|w| w.timestamp_millis()),
        Some(wake_at.timestamp_millis())
    );
    let other = db.tenant("other").await;
    let hidden = e.list_steps(other, id, None, 10).await.unwrap_err();
    assert_eq!(hidden.kind(), "not_found");
}

on_both_backends!(
    only_the_live_lease_records_and_each_position_once,
    caps_refuse_a_step_with_nothing_written,
    a_bad_step_name_is_refused,
    sleeping_suspends_and_the_listing_is_the_tenants_own,
);
