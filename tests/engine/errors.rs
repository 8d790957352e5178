//! Bad input gets a typed error naming what is wrong, and writes nothing.

use flowfabric::backend::Sweep;
use flowfabric::model::{Backoff, Failure, FailureClass, LeaseHandle};
use flowfabric::EngineError;
use flowfabric_tests::Store;
use uuid::Uuid;

use crate::{claim_one, request, setup_on, task};

async fn oversized_payload_is_rejected_and_nothing_written(store: Store) {
    let (db, t) = setup_on(store).await;
    let limit = db.engine.limits().max_input_bytes;
    let new = flowfabric::model::NewExecution::new("echo", vec![0u8; limit + 1]);
    let err = db.engine.create(t, new).await.unwrap_err();
    assert!(
        matches!(err, EngineError::PayloadTooLarge { field: "input", .. }),
        "{err}"
    );
    assert_eq!(err.kind(), "payload_too_large");
    assert_eq!(db.count("executions").await, 0);

    // A bad row anywhere in a batch rejects the whole batch.
    let mut bad = task("x");
    bad.kind = "has spaces".into();
    let err = db
        .engine
        .create_batch(t, &[task("ok"), bad])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("executions[1].kind"), "{err}");
    assert_eq!(db.count("executions").await, 0);
}

async fn malformed_policy_is_rejected_with_its_field(store: Store) {
    let (db, t) = setup_on(store).await;
    let mut new = task("x");
    new.policy.retry.backoff = Backoff::Exponential {
        initial_delay_ms: 1_000,
        max_delay_ms: 10,
        multiplier: 2.0,
        jitter: true,
    };
    let err = db.engine.create(t, new).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("policy.retry.backoff.initial_delay_ms"),
        "{err}"
    );
    let mut new = task("x");
    new.policy.timeouts.attempt_timeout_ms = Some(0);
    assert!(matches!(
        db.engine.create(t, new).await,
        Err(EngineError::InvalidInput { .. })
    ));
    let mut new = task("x");
    new.priority = 1_000_000;
    assert!(matches!(
        db.engine.create(t, new).await,
        Err(EngineError::InvalidInput { .. })
    ));
    assert_eq!(db.count("executions").await, 0);
    assert_eq!(db.count("idempotency_keys").await, 0);
}

async fn unknown_ids_are_not_found(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let ghost = flowfabric::model::ExecutionId::new();
    for err in [
        e.get(t, ghost).await.map(|_| ()).unwrap_err(),
        e.cancel(t, ghost, "x").await.map(|_| ()).unwrap_err(),
        e.change_priority(t, ghost, 1).await.unwrap_err(),
        e.complete(
            &LeaseHandle {
                tenant_id: t,
                execution_id: ghost,
                attempt_index: 1,
                lease_id: Uuid::new_v4(),
                lease_epoch: 1,
            },
            b"",
        )
        .await
        .unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                EngineError::NotFound {
                    what: "execution",
                    ..
                }
            ),
            "{err}"
        );
    }
    let err = e
        .create(flowfabric::model::TenantId::new(), task("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NotFound { what: "tenant", .. }),
        "{err}"
    );
    assert_eq!(db.count("executions").await, 0);
}

async fn another_tenants_execution_is_not_found(store: Store) {
    let (db, t) = setup_on(store).await;
    let other = db.tenant("intruder").await;
    let id = db
        .engine
        .create(t, task("secret"))
        .await
        .unwrap()
        .execution_id;
    let err = db.engine.get(other, id).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { .. }), "{err}");
    assert!(matches!(
        db.engine.cancel(other, id, "x").await,
        Err(EngineError::NotFound { .. })
    ));
    let c = claim_one(&db.engine).await;
    let forged = LeaseHandle {
        tenant_id: other,
        ..c.lease.clone()
    };
    assert!(matches!(
        db.engine.complete(&forged, b"").await,
        Err(EngineError::NotFound { .. })
    ));
    db.engine.complete(&c.lease, b"").await.unwrap();
}

async fn forged_or_stale_handles_change_nothing(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let c = claim_one(e).await;
    let wrong_lease = LeaseHandle {
        lease_id: Uuid::new_v4(),
        ..c.lease.clone()
    };
    let wrong_epoch = LeaseHandle {
        lease_epoch: 7,
        ..c.lease.clone()
    };
    for forged in [wrong_lease, wrong_epoch] {
        let err = e.complete(&forged, b"x").await.unwrap_err();
        assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");
        let err = e
            .fail(&forged, Failure::new(FailureClass::Permanent, "x"))
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");
    }
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(
        (ex.state, ex.result),
        (flowfabric::model::PublicState::Active, None)
    );
    e.complete(&c.lease, b"real").await.unwrap();
}

async fn bad_claim_requests_are_rejected(store: Store) {
    let (db, _) = setup_on(store).await;
    let mut r = request(0);
    assert!(matches!(
        db.engine.claim(&r).await,
        Err(EngineError::InvalidInput { .. })
    ));
    r.limit = 1;
    r.lanes.clear();
    assert!(matches!(
        db.engine.claim(&r).await,
        Err(EngineError::InvalidInput { .. })
    ));
    let r = flowfabric::model::ClaimRequest {
        lease_ttl: std::time::Duration::ZERO,
        ..request(1)
    };
    assert!(matches!(
        db.engine.claim(&r).await,
        Err(EngineError::InvalidInput { .. })
    ));
}

async fn frames_and_progress_are_fenced_by_the_lease(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let old = claim_one(e).await;
    assert_eq!(
        e.append_frame(
            &old.lease,
            "item",
            flowfabric::model::StreamMode::Durable,
            b"1"
        )
        .await
        .unwrap(),
        1
    );
    db.expire_lease(id).await;
    db.backend()
        .reclaim_expired_leases(Sweep::every_tenant(10))
        .await
        .unwrap();
    let new = claim_one(e).await;

    let err = e
        .append_frame(
            &old.lease,
            "item",
            flowfabric::model::StreamMode::Durable,
            b"late",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");
    let err = e.set_progress(&old.lease, 99, "late").await.unwrap_err();
    assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");

    // The new attempt's stream starts at 1 and holds nothing of the old holder.
    assert_eq!(
        e.append_frame(
            &new.lease,
            "item",
            flowfabric::model::StreamMode::Durable,
            b"2"
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(db.count("frames").await, 2);
    let old_frames = e.read_frames(t, id, 1, 0, 10).await.unwrap();
    assert_eq!(
        old_frames
            .iter()
            .map(|f| f.payload.clone())
            .collect::<Vec<_>>(),
        [b"1".to_vec()]
    );
    let progress = e.get(t, id).await.unwrap().progress_percent;
    assert_eq!(progress, None, "the stale progress did not land");

    let big = vec![0u8; e.limits().max_frame_bytes + 1];
    let err = e
        .append_frame(
            &new.lease,
            "item",
            flowfabric::model::StreamMode::Durable,
            &big,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::PayloadTooLarge { field: "frame", .. }),
        "{err}"
    );
}

on_both_backends!(
    frames_and_progress_are_fenced_by_the_lease,
    oversized_payload_is_rejected_and_nothing_written,
    malformed_policy_is_rejected_with_its_field,
    unknown_ids_are_not_found,
    another_tenants_execution_is_not_found,
    forged_or_stale_handles_change_nothing,
    bad_claim_requests_are_rejected,
);
