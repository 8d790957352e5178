use flowfabric::backend::Sweep;
use std::time::Duration;

use flowfabric::engine::{sweep_tenants, ScannerConfig, Scanners};
use flowfabric::model::{
    AttemptState, AttemptType, Backoff, CompletionEvent, FailureClass, PublicState,
};
use flowfabric::EngineError;
use flowfabric_tests::Store;

use crate::{claim_none, claim_one, setup_on, task};

async fn reclaim_expired_lease_fences_the_old_holder(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let id = e.create(t, task("x")).await.unwrap().execution_id;
    let old = claim_one(e).await;
    assert_eq!(
        db.backend()
            .reclaim_expired_leases(Sweep::every_tenant(100))
            .await
            .unwrap(),
        0,
        "lease still live"
    );

    db.expire_lease(id).await;
    assert_eq!(
        db.backend()
            .reclaim_expired_leases(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    let ex = e.get(t, id).await.unwrap();
    assert_eq!((ex.state, ex.reclaim_count), (PublicState::Waiting, 1));

    let new = claim_one(e).await;
    assert_eq!((new.lease.attempt_index, new.lease.lease_epoch), (2, 2));
    assert_eq!(new.attempt_type, AttemptType::Reclaim);

    for err in [
        e.complete(&old.lease, b"stale").await.unwrap_err(),
        e.renew(&old.lease, Duration::from_secs(5))
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");
    }
    e.complete(&new.lease, b"fresh").await.unwrap();
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(ex.result.as_deref(), Some(&b"fresh"[..]));
}

async fn reclaim_cap_fails_the_execution(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("x");
    new.policy.timeouts.max_reclaim_count = 0;
    let id = e.create(t, new).await.unwrap().execution_id;
    claim_one(e).await;
    db.expire_lease(id).await;
    assert_eq!(
        db.backend()
            .reclaim_expired_leases(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(ex.state, PublicState::Failed);
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::LeaseExpired);
    claim_none(e).await;
}

async fn renew_extends_without_bumping_the_epoch(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    e.create(t, task("x")).await.unwrap();
    let c = claim_one(e).await;
    let until = e.renew(&c.lease, Duration::from_secs(600)).await.unwrap();
    assert!(until > c.lease_expires_at);
    let ex = e.get(t, c.lease.execution_id).await.unwrap();
    assert_eq!(ex.lease_epoch, 1);
    e.complete(&c.lease, b"").await.unwrap();
}

async fn attempt_timeout_fails_the_attempt_and_retries(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut new = task("slow");
    new.policy.timeouts.attempt_timeout_ms = Some(1);
    new.policy.retry.backoff = Backoff::Fixed { delay_ms: 0 };
    let id = e.create(t, new).await.unwrap().execution_id;
    let c = claim_one(e).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        db.backend()
            .fail_timed_out_attempts(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    let ex = e.get(t, id).await.unwrap();
    assert_eq!(ex.state, PublicState::Waiting);
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::Timeout);
    let err = e.complete(&c.lease, b"").await.unwrap_err();
    assert!(matches!(err, EngineError::StaleLease { .. }), "{err}");
    assert_eq!(claim_one(e).await.attempt_type, AttemptType::Retry);
}

/// No attempt timeout in the policy means none: an attempt that runs past
/// the longest timeout a policy may set is not timed out for it.
async fn an_attempt_without_a_timeout_never_times_out(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let open = e.create(t, task("open")).await.unwrap().execution_id;
    let open_lease = claim_one(e).await;
    let mut bounded = task("bounded");
    bounded.policy.timeouts.attempt_timeout_ms = Some(3_600_000);
    bounded.policy.retry.backoff = Backoff::Fixed { delay_ms: 0 };
    let bounded = e.create(t, bounded).await.unwrap().execution_id;
    claim_one(e).await;
    // A day past the longest attempt timeout a policy may set (seven days).
    let past_any_timeout = 8 * 24 * 3_600_000;
    db.age_attempt_timeouts(Duration::from_millis(past_any_timeout))
        .await;
    assert_eq!(
        db.backend()
            .fail_timed_out_attempts(Sweep::every_tenant(100))
            .await
            .unwrap(),
        1
    );
    assert_eq!(e.get(t, bounded).await.unwrap().state, PublicState::Waiting);
    assert_eq!(e.get(t, open).await.unwrap().state, PublicState::Active);
    e.complete(&open_lease.lease, b"done").await.unwrap();
}

async fn execution_deadline_expires_runnable_and_active(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let mut short = task("x");
    short.policy.timeouts.execution_deadline_ms = Some(1);
    let active = e.create(t, short.clone()).await.unwrap().execution_id;
    let held = claim_one(e).await;
    let kept = e.create(t, task("no deadline")).await.unwrap().execution_id;
    let kept_lease = claim_one(e).await;
    let waiting = e.create(t, short.clone()).await.unwrap().execution_id;
    // Another tenant's in the same pass: each id must end with its own tenant.
    let other = db.tenant("other").await;
    let others = e.create(other, short).await.unwrap().execution_id;

    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        db.backend()
            .expire_past_deadline(Sweep::every_tenant(100))
            .await
            .unwrap(),
        3
    );
    for id in [waiting, active] {
        assert_eq!(e.get(t, id).await.unwrap().state, PublicState::Expired);
    }
    assert_eq!(
        e.get(other, others).await.unwrap().state,
        PublicState::Expired
    );
    let attempts = e.attempts(t, active).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.state).collect::<Vec<_>>(),
        [AttemptState::Expired],
        "the running attempt ends expired"
    );
    assert_eq!(e.get(t, kept).await.unwrap().state, PublicState::Active);
    let err = e.complete(&held.lease, b"").await.unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NotActive {
                state: PublicState::Expired,
                ..
            }
        ),
        "{err}"
    );
    e.complete(&kept_lease.lease, b"").await.unwrap();
    let outcomes: Vec<_> = db
        .events::<CompletionEvent>(t)
        .await
        .into_iter()
        .map(|e| e.outcome)
        .collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "expired").count(), 2);
}

async fn supervised_scanners_promote_delayed_work(store: Store) {
    // The test's runtime has one thread, so the passes' metrics land in a
    // recorder of this thread's own.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let (db, t) = setup_on(store).await;
    let config = ScannerConfig {
        delayed: Duration::from_millis(50),
        ..ScannerConfig::default()
    };
    let scanners = Scanners::start(db.backend(), config);
    let mut new = task("soon");
    new.delay_until = Some(chrono::Utc::now() + chrono::Duration::milliseconds(200));
    let id = db.engine.create(t, new).await.unwrap().execution_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if db.engine.get(t, id).await.unwrap().state == PublicState::Waiting {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never promoted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scanners.shutdown().await;
    claim_one(&db.engine).await;
    let text = metrics.render();
    let promoted = r#"flowfabric_scanner_rows_total{pass="delayed_promoter"} 1"#;
    assert!(text.contains(promoted), "{text}");
}

/// A task whose attempts time out after a minute and are retried at once.
fn timed_task() -> flowfabric::model::NewExecution {
    let mut timed = task("x");
    timed.policy.timeouts.attempt_timeout_ms = Some(60_000);
    timed.policy.retry.backoff = Backoff::Fixed { delay_ms: 0 };
    timed
}

/// A scanner pass over every tenant that one tenant's row breaks (here a
/// trigger refuses updates of two of four tenants' executions) still moves
/// every other tenant's due rows, and reports the failure: run over every
/// tenant at once, then, when that fails, one tenant at a time.
async fn one_tenants_row_does_not_stop_a_pass_for_the_others(store: Store) {
    let (db, _) = setup_on(store).await;
    let e = &db.engine;
    let backend = db.backend();
    // Made in this order so that each name sorts, and lists, both ways round.
    let names = ["a-poisoned", "b-fine", "c-poisoned", "d-fine"];
    let mut running = Vec::new();
    for name in names {
        let t = db.tenant(name).await;
        let leased = e.create(t, task("x")).await.unwrap().execution_id;
        let timed = e.create(t, timed_task()).await.unwrap().execution_id;
        running.push((name, t, leased, timed));
    }
    let claimed = e.claim(&crate::request(10)).await.unwrap();
    assert_eq!(claimed.len(), 2 * names.len());
    for (_, _, leased, _) in &running {
        db.expire_lease(*leased).await;
    }
    db.age_attempt_timeouts(Duration::from_secs(120)).await;
    db.refuse_execution_updates(&["a-poisoned", "c-poisoned"])
        .await;

    let leases = sweep_tenants(backend.as_ref(), 100, |s| backend.reclaim_expired_leases(s));
    let failed = leases.await.unwrap_err();
    assert!(
        failed.to_string().contains("refused by the test"),
        "{failed}"
    );
    let attempts = sweep_tenants(backend.as_ref(), 100, |s| {
        backend.fail_timed_out_attempts(s)
    });
    let failed = attempts.await.unwrap_err();
    assert!(
        failed.to_string().contains("refused by the test"),
        "{failed}"
    );
    for (name, t, leased, timed) in running {
        let moved = !name.ends_with("poisoned");
        for (what, id) in [("expired lease", leased), ("timed-out attempt", timed)] {
            let state = e.get(t, id).await.unwrap().state;
            assert_eq!(
                state == PublicState::Waiting,
                moved,
                "{name}'s {what}: {state:?}"
            );
        }
    }
}

/// A pass narrowed to one tenant (what a failed pass is retried as) moves
/// that tenant's due rows and none of another's; the pass over every tenant
/// then moves the rest.
async fn a_sweep_for_one_tenant_moves_only_its_rows(store: Store) {
    let (db, _) = setup_on(store).await;
    let e = &db.engine;
    let backend = db.backend();
    let mut due = Vec::new();
    for name in ["one", "other"] {
        let t = db.tenant(name).await;
        let leased = e.create(t, task("x")).await.unwrap().execution_id;
        let timed = e.create(t, timed_task()).await.unwrap().execution_id;
        let mut later = task("x");
        later.delay_until = Some(chrono::Utc::now() + chrono::Duration::hours(1));
        let delayed = e.create(t, later).await.unwrap().execution_id;
        due.push((t, leased, timed, delayed));
    }
    assert_eq!(e.claim(&crate::request(10)).await.unwrap().len(), 4);
    for (_, leased, _, delayed) in &due {
        db.expire_lease(*leased).await;
        db.make_due(*delayed).await;
    }
    db.age_attempt_timeouts(Duration::from_secs(120)).await;

    let one = due[0].0;
    let only_one = Sweep {
        limit: 100,
        tenant: Some(one),
    };
    for round in [only_one, Sweep::every_tenant(100)] {
        assert_eq!(backend.reclaim_expired_leases(round).await.unwrap(), 1);
        assert_eq!(backend.fail_timed_out_attempts(round).await.unwrap(), 1);
        assert_eq!(backend.promote_delayed(round).await.unwrap(), 1);
        let moved = |t| round.tenant.is_none() || t == one;
        for &(t, leased, timed, delayed) in &due {
            for id in [leased, timed, delayed] {
                let state = e.get(t, id).await.unwrap().state;
                assert_eq!(state == PublicState::Waiting, moved(t), "{t}: {state:?}");
            }
        }
    }
}

/// Every pass a failure is retried with, narrowed to one tenant, is a
/// statement each backend accepts (with nothing due, it changes nothing).
async fn every_pass_can_be_narrowed_to_one_tenant(store: Store) {
    let (db, t) = setup_on(store).await;
    let b = db.backend();
    let one = Sweep {
        limit: 10,
        tenant: Some(t),
    };
    let passes = [
        ("lease expiry", b.reclaim_expired_leases(one).await),
        ("delays", b.promote_delayed(one).await),
        ("attempt timeouts", b.fail_timed_out_attempts(one).await),
        ("deadlines", b.expire_past_deadline(one).await),
        ("suspension timeouts", b.time_out_suspensions(one).await),
        ("sibling cancels", b.cancel_pending_siblings(one).await),
        ("parents", b.wake_waiting_parents(one).await),
        ("budget resets", b.reset_due_budgets(one).await),
        ("held keys", b.release_held_keys(one).await),
    ];
    for (pass, ran) in passes {
        assert_eq!(ran.unwrap_or_else(|e| panic!("{pass}: {e}")), 0, "{pass}");
    }
}

on_both_backends!(
    reclaim_expired_lease_fences_the_old_holder,
    reclaim_cap_fails_the_execution,
    renew_extends_without_bumping_the_epoch,
    attempt_timeout_fails_the_attempt_and_retries,
    an_attempt_without_a_timeout_never_times_out,
    execution_deadline_expires_runnable_and_active,
    supervised_scanners_promote_delayed_work,
    one_tenants_row_does_not_stop_a_pass_for_the_others,
    a_sweep_for_one_tenant_moves_only_its_rows,
    every_pass_can_be_narrowed_to_one_tenant,
);
