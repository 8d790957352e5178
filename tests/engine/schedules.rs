//! Schedules through the engine, on both backends: validation, exactly one
//! execution per fire time under concurrent scanners, the missed-tick and
//! overlap policies, pause, resume, trigger and tenant isolation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use flowfabric::model::{
    Cadence, ExecutionFilter, ExecutionId, MissedPolicy, NewSchedule, OverlapPolicy,
    ScheduledExecution, TenantId, FIRE_TIME_TAG, SCHEDULE_TAG,
};
use flowfabric::Engine;
use flowfabric_tests::Store;

use crate::{claim_one, setup_on};

pub(crate) fn every_second(
    name: &str,
    missed: MissedPolicy,
    overlap: OverlapPolicy,
) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cadence: Cadence::Interval { every_ms: 1_000 },
        jitter_ms: 0,
        missed,
        overlap,
        execution: ScheduledExecution {
            kind: "echo".into(),
            lane: "default".into(),
            input: b"tick".to_vec(),
            priority: 0,
            tags: BTreeMap::new(),
            policy: Default::default(),
            concurrency_key: None,
        },
    }
}

/// The executions each schedule created, by schedule id and fire time.
async fn fired(engine: &Engine, tenant: TenantId) -> HashMap<(String, String), Vec<ExecutionId>> {
    let mut filter = ExecutionFilter {
        limit: 1_000,
        ..Default::default()
    };
    filter.kind = Some("echo".into());
    let mut by_fire: HashMap<(String, String), Vec<ExecutionId>> = HashMap::new();
    for ex in engine.list(tenant, filter).await.unwrap() {
        let key = (
            ex.tags[SCHEDULE_TAG].clone(),
            ex.tags[FIRE_TIME_TAG].clone(),
        );
        by_fire.entry(key).or_default().push(ex.execution_id);
    }
    by_fire
}

async fn bad_schedules_are_refused_and_nothing_is_written(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let cron = |expression: &str, zone: &str| {
        let mut s = every_second("bad", MissedPolicy::Skip, OverlapPolicy::Allow);
        s.cadence = Cadence::Cron {
            expression: expression.into(),
            time_zone: zone.into(),
        };
        s
    };
    for (spec, field) in [
        (cron("0 25 * * *", "UTC"), "cadence.expression"),
        (cron("0 * * * *", "Atlantis/Lost"), "cadence.time_zone"),
        (cron("0 0 30 2 *", "UTC"), "cadence.expression"),
        (
            NewSchedule {
                cadence: Cadence::Interval { every_ms: 999 },
                ..every_second("x", MissedPolicy::Skip, OverlapPolicy::Allow)
            },
            "cadence.every_ms",
        ),
        (
            every_second("x", MissedPolicy::Backfill { max: 0 }, OverlapPolicy::Allow),
            "missed.max",
        ),
        (
            NewSchedule {
                name: "bad name!".into(),
                ..every_second("x", MissedPolicy::Skip, OverlapPolicy::Allow)
            },
            "name",
        ),
    ] {
        let err = e.create_schedule(t, spec).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(e.list_schedules(t, None, 10).await.unwrap().is_empty());

    e.create_schedule(
        t,
        every_second("once", MissedPolicy::Skip, OverlapPolicy::Allow),
    )
    .await
    .unwrap();
    let taken = e
        .create_schedule(
            t,
            every_second("once", MissedPolicy::Skip, OverlapPolicy::Allow),
        )
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), "conflict");
}

async fn concurrent_scanners_fire_each_time_exactly_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = db.engine.clone();
    for i in 0..20 {
        e.create_schedule(
            t,
            every_second(
                &format!("s{i}"),
                MissedPolicy::RunOnce,
                OverlapPolicy::Allow,
            ),
        )
        .await
        .unwrap();
    }
    // Two scanners race for about three seconds of fire times.
    let race = |backend: std::sync::Arc<dyn flowfabric::backend::Backend>| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(3_300);
        while tokio::time::Instant::now() < deadline {
            backend.fire_due_schedules(500).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::join!(race(db.backend()), race(db.backend()));
    let by_fire = fired(&e, t).await;
    assert!(
        by_fire.len() >= 20 * 2,
        "every schedule fired at least twice: {}",
        by_fire.len()
    );
    for (key, ids) in &by_fire {
        assert_eq!(ids.len(), 1, "fire time {key:?} created {ids:?}");
    }
    let per_schedule = by_fire.keys().fold(HashMap::new(), |mut m, (s, _)| {
        *m.entry(s.clone()).or_insert(0) += 1;
        m
    });
    assert_eq!(per_schedule.len(), 20);
}

async fn missed_fire_times_follow_the_policy(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let backfill = e
        .create_schedule(
            t,
            every_second(
                "backfill",
                MissedPolicy::Backfill { max: 2 },
                OverlapPolicy::Allow,
            ),
        )
        .await
        .unwrap();
    let once = e
        .create_schedule(
            t,
            every_second("once", MissedPolicy::RunOnce, OverlapPolicy::Allow),
        )
        .await
        .unwrap();
    // Nothing scans for a while: three fire times pass.
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    db.backend().fire_due_schedules(100).await.unwrap();
    let by_fire = fired(e, t).await;
    let count = |id: flowfabric::model::ScheduleId| {
        by_fire.keys().filter(|(s, _)| *s == id.to_string()).count()
    };
    assert_eq!(count(backfill.schedule_id), 2, "the newest two of three");
    assert_eq!(count(once.schedule_id), 1);
    let after = e.get_schedule(t, once.schedule_id).await.unwrap();
    assert!(after.next_fire_at > chrono::Utc::now() - chrono::TimeDelta::seconds(1));
}

async fn overlap_skip_waits_for_the_last_run_to_end(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let s = e
        .create_schedule(
            t,
            every_second("solo", MissedPolicy::RunOnce, OverlapPolicy::Skip),
        )
        .await
        .unwrap();
    let backend = db.backend();
    let fire_after = |ms: u64| {
        let backend = backend.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            backend.fire_due_schedules(100).await.unwrap()
        }
    };
    assert_eq!(fire_after(1_100).await, 1);
    // Still queued: the next fire time is skipped.
    assert_eq!(fire_after(1_000).await, 0);
    let c = claim_one(e).await;
    e.complete(&c.lease, b"done").await.unwrap();
    assert_eq!(fire_after(1_000).await, 1);
    let latest = e.get_schedule(t, s.schedule_id).await.unwrap();
    assert!(latest.last_execution_id.is_some());
}

async fn overlap_cancel_previous_replaces_the_running_one(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    e.create_schedule(
        t,
        every_second(
            "latest",
            MissedPolicy::RunOnce,
            OverlapPolicy::CancelPrevious,
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(db.backend().fire_due_schedules(100).await.unwrap(), 1);
    // The first run holds a lease when the next fire time comes.
    let first = claim_one(e).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(db.backend().fire_due_schedules(100).await.unwrap(), 1);
    let old = e.get(t, first.lease.execution_id).await.unwrap();
    assert_eq!(old.state, flowfabric::model::PublicState::Cancelled);
    assert_eq!(
        old.cancellation_reason.as_deref(),
        Some(flowfabric::model::SUPERSEDED)
    );
    // Its lease went with it: the old run can record nothing more.
    assert!(e.complete(&first.lease, b"late").await.is_err());
    assert_eq!(fired(e, t).await.len(), 2);
}

async fn pause_resume_trigger_delete_and_tenancy(store: Store) {
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let s = e
        .create_schedule(
            t,
            every_second("ops", MissedPolicy::RunOnce, OverlapPolicy::Allow),
        )
        .await
        .unwrap();
    assert_eq!(s.upcoming(3).len(), 3);
    let paused = e.pause_schedule(t, s.schedule_id, true).await.unwrap();
    assert!(paused.paused);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(db.backend().fire_due_schedules(100).await.unwrap(), 0);

    // Triggered by hand while paused; its execution says so.
    let created = e.trigger_schedule(t, s.schedule_id).await.unwrap();
    let ex = e.get(t, created.execution_id).await.unwrap();
    assert_eq!(ex.tags[SCHEDULE_TAG], s.schedule_id.to_string());
    assert_eq!(ex.input, b"tick");

    let resumed = e.pause_schedule(t, s.schedule_id, false).await.unwrap();
    assert!(!resumed.paused && resumed.next_fire_at > chrono::Utc::now());

    // Another tenant sees none of it.
    let other = db.tenant("other").await;
    assert_eq!(
        e.get_schedule(other, s.schedule_id)
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
    assert!(!e.delete_schedule(other, s.schedule_id).await.unwrap());
    assert!(e.list_schedules(other, None, 10).await.unwrap().is_empty());

    assert!(e.delete_schedule(t, s.schedule_id).await.unwrap());
    assert_eq!(
        e.get_schedule(t, s.schedule_id).await.unwrap_err().kind(),
        "not_found"
    );
    // Its executions stay.
    assert!(e.get(t, created.execution_id).await.is_ok());
}

/// Through the scanner, a cron schedule in a named zone fires at the right
/// instants across both daylight-saving changes of 2026 in Berlin: the
/// skipped 02:30 of 29 March fires at the first instant after the change
/// (03:00 CEST), and the 02:30 that 25 October has twice fires once.
async fn cron_fires_once_per_local_time_across_daylight_saving(store: Store) {
    use chrono::{DateTime, TimeZone, Utc};
    let (db, t) = setup_on(store).await;
    let e = &db.engine;
    let utc = |m, d, h, min| Utc.with_ymd_and_hms(2026, m, d, h, min, 0).unwrap();
    let cases = [
        // 02:30 CET on the 28th, the gap on the 29th, 02:30 CEST on the 30th.
        (
            "spring",
            "30 2 28-30 3 *",
            utc(3, 28, 1, 30),
            [utc(3, 28, 1, 30), utc(3, 29, 1, 0), utc(3, 30, 0, 30)],
        ),
        // 02:30 CEST on the 24th, the first 02:30 of the 25th (still CEST),
        // 02:30 CET on the 26th.
        (
            "autumn",
            "30 2 24-26 10 *",
            utc(10, 24, 0, 30),
            [utc(10, 24, 0, 30), utc(10, 25, 0, 30), utc(10, 26, 1, 30)],
        ),
    ];
    for (name, expression, first, expected) in cases {
        let mut spec = every_second(
            name,
            MissedPolicy::Backfill { max: 10 },
            OverlapPolicy::Allow,
        );
        spec.cadence = Cadence::Cron {
            expression: expression.into(),
            time_zone: "Europe/Berlin".into(),
        };
        let s = e.create_schedule(t, spec).await.unwrap();
        // The host has been down since before the change: the scanner
        // backfills every fire time since.
        db.rewind_schedule(s.schedule_id, first).await;
        db.backend().fire_due_schedules(100).await.unwrap();
        let mut times: Vec<DateTime<Utc>> = fired(e, t)
            .await
            .into_keys()
            .filter(|(id, _)| *id == s.schedule_id.to_string())
            .map(|(_, at)| at.parse().unwrap())
            .collect();
        times.sort();
        assert_eq!(times, expected, "{name}");
        let after = e.get_schedule(t, s.schedule_id).await.unwrap();
        assert!(after.next_fire_at > Utc::now(), "{name}: next year's");
    }
}

on_both_backends!(
    cron_fires_once_per_local_time_across_daylight_saving,
    bad_schedules_are_refused_and_nothing_is_written,
    concurrent_scanners_fire_each_time_exactly_once,
    missed_fire_times_follow_the_policy,
    overlap_skip_waits_for_the_last_run_to_end,
    overlap_cancel_previous_replaces_the_running_one,
    pause_resume_trigger_delete_and_tenancy,
);
