//! Postgres stops at once (every connection drops, as in a crash) and comes
//! back while a worker pool runs executions. The engine's pool, the worker pool
//! and the scanners reconnect by themselves; every execution, submitted before
//! or after the restart, ends completed, with exactly one completion event.
//! Runs on a cluster of its own; loopback only; stops by itself.

use std::collections::HashSet;
use std::time::Duration;

use flowfabric::engine::{Limits, ScannerConfig, Scanners};
use flowfabric::model::{CompletionEvent, ExecutionId, NewExecution, PublicState, TenantId};
use flowfabric::worker::{WorkerConfig, WorkerPool};
use flowfabric::Engine;
use flowfabric_tests::{guest, runtime, Cluster, TestDb};

/// Create `n` executions in batches, retrying while the server is still coming back.
async fn create(engine: &Engine, tenant: TenantId, n: usize) -> Vec<ExecutionId> {
    let mut ids = Vec::new();
    while ids.len() < n {
        ids.extend(create_batch(engine, tenant, 100.min(n - ids.len())).await);
    }
    ids
}

async fn create_batch(engine: &Engine, tenant: TenantId, n: usize) -> Vec<ExecutionId> {
    let batch: Vec<NewExecution> = (0..n)
        .map(|_| NewExecution::new("testkit", b"frames:3".to_vec()))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match engine.create_batch(tenant, &batch).await {
            Ok(created) => return created.into_iter().map(|c| c.execution_id).collect(),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never accepted: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_postgres_restart_mid_run_loses_nothing() {
    let cluster = Cluster::start_private().await;
    let db = TestDb::on_server(&cluster.url(), Limits::default()).await;
    let tenant = db.tenant("acme").await;
    flowfabric::components::register(&db.engine, &runtime(), tenant, "testkit", &guest("testkit"))
        .await
        .unwrap();
    let scanners = Scanners::start(
        db.backend(),
        ScannerConfig {
            lease_expiry: Duration::from_millis(200),
            ..ScannerConfig::default()
        },
    );
    let pool = WorkerPool::start(
        db.engine.clone(),
        runtime(),
        WorkerConfig {
            slots: 4,
            lease_ttl: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
            ..WorkerConfig::default()
        },
    );

    let mut ids = create(&db.engine, tenant, 400).await;
    // Restart with work in flight: some done, most not.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done_before = loop {
        let done = db.events::<CompletionEvent>(tenant).await.len();
        if done >= 10 {
            break done;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    cluster.restart(Duration::from_millis(500)).await;
    assert!(done_before < ids.len(), "the restart came with work left");
    ids.extend(create(&db.engine, tenant, 100).await);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut pending: HashSet<ExecutionId> = ids.iter().copied().collect();
    while !pending.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} executions never ended after the restart",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        for id in pending.clone() {
            if let Ok(ex) = db.engine.get(tenant, id).await {
                if ex.state.is_terminal() {
                    assert_eq!(
                        ex.state,
                        PublicState::Completed,
                        "{id}: {:?}",
                        ex.last_failure
                    );
                    pending.remove(&id);
                }
            }
        }
    }
    let events = db.events::<CompletionEvent>(tenant).await;
    let ended: HashSet<ExecutionId> = events.iter().map(|e| e.execution_id).collect();
    assert_eq!(
        events.len(),
        ids.len(),
        "one completion event per execution"
    );
    assert_eq!(ended, ids.iter().copied().collect());
    let reclaimed = events.iter().filter(|e| e.attempt_index > 1).count();
    eprintln!(
        "postgres restart: {} executions, {done_before} done before it, {reclaimed} finished on a \
         later attempt, lost 0, duplicated 0",
        ids.len()
    );
    pool.shutdown().await;
    scanners.shutdown().await;
}
