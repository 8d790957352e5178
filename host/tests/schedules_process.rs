//! Schedules across processes: two `serve` processes on one Postgres fire
//! 200 schedules every second, one of them is SIGKILLed midway and started
//! again, and every fire time of every schedule has exactly one execution,
//! none missing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowfabric::model::{
    Cadence, ExecutionFilter, MissedPolicy, NewSchedule, OverlapPolicy, ScheduledExecution,
    FIRE_TIME_TAG, SCHEDULE_TAG,
};
use flowfabric_tests::{guest, runtime, ServedProcess, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");
const SCHEDULES: usize = 200;

fn every_second(i: usize) -> NewSchedule {
    NewSchedule {
        name: format!("tick-{i}"),
        cadence: Cadence::Interval { every_ms: 1_000 },
        jitter_ms: 0,
        // Whatever the scanners fall behind by is created, not dropped.
        missed: MissedPolicy::Backfill { max: 100 },
        overlap: OverlapPolicy::Allow,
        execution: ScheduledExecution {
            kind: "echo".into(),
            lane: "default".into(),
            input: b"tick".to_vec(),
            priority: 0,
            tags: Default::default(),
            policy: Default::default(),
            concurrency_key: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serves_fire_every_time_once_through_a_sigkill() {
    let db = TestDb::new().await;
    let engine = db.engine.clone();
    let tenant = db.tenant("ticks").await;
    flowfabric::components::register(&engine, &runtime(), tenant, "echo", &guest("echo"))
        .await
        .unwrap();
    let cache = flowfabric_tests::ScratchDir::new("schedules-kill");
    let args = [
        "--slots",
        "4",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let first = ServedProcess::start(BIN, db.pg_url(), "admin", &args).await;
    let _second = ServedProcess::start(BIN, db.pg_url(), "admin", &args).await;
    let mut ids = Vec::new();
    for i in 0..SCHEDULES {
        let made = engine
            .create_schedule(tenant, every_second(i))
            .await
            .unwrap();
        ids.push(made.schedule_id);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut process = first.process;
    process.start_kill().unwrap();
    let _ = process.wait().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _again = ServedProcess::start(BIN, db.pg_url(), "admin", &args).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    for id in &ids {
        engine.pause_schedule(tenant, *id, true).await.unwrap();
    }

    // Every (schedule, fire time) once, and each schedule's fire times a
    // second apart from its first to its last: none doubled, none lost.
    let mut fires: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = engine
            .list(
                tenant,
                ExecutionFilter {
                    after,
                    limit: 1_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.execution_id);
        for ex in &page {
            let at: DateTime<Utc> = ex.tags[FIRE_TIME_TAG].parse().unwrap();
            fires
                .entry(ex.tags[SCHEDULE_TAG].clone())
                .or_default()
                .push(at);
        }
    }
    assert_eq!(fires.len(), SCHEDULES, "every schedule fired");
    let mut total = 0;
    for (schedule, mut times) in fires {
        times.sort();
        let distinct: BTreeSet<_> = times.iter().collect();
        assert_eq!(distinct.len(), times.len(), "{schedule} fired a time twice");
        for pair in times.windows(2) {
            let gap = (pair[1] - pair[0]).num_milliseconds();
            assert_eq!(gap, 1_000, "{schedule} lost a fire time after {}", pair[0]);
        }
        assert!(times.len() >= 20, "{schedule} fired only {}", times.len());
        total += times.len();
    }
    assert!(total >= SCHEDULES * 20, "{total} fires");
}
