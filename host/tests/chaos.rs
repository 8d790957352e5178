//! Chaos: worker processes are killed with SIGKILL at random moments while
//! executions with retries, frames and suspensions run, and restarted. At the
//! end every execution is terminal exactly once: none lost, no completion
//! event or successful attempt written twice, frames dense within each attempt.
//! Loopback only; stops by itself.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use flowfabric::model::{CompletionEvent, ExecutionId, NewExecution, NewSignal, PublicState};
use flowfabric_tests::{guest, runtime, TestDb};
use rand::Rng;

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");
const WORKERS: usize = 3;
/// SIGKILLs at most, one every 100-400 ms while executions remain.
const KILLS: usize = 30;

fn spawn_worker(database_url: &str, cache: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args([
            "worker",
            "--slots",
            "4",
            "--lease-ttl-ms",
            "1500",
            "--cache-dir",
        ])
        .arg(cache)
        .env("DATABASE_URL", database_url)
        // The same operator key everywhere: every worker opens the stored
        // waitpoint key, so a token minted by one verifies here.
        .env("FLOWFABRIC_CONFIG_KEYS", flowfabric_tests::TEST_CONFIG_KEYS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_duplicate_nothing() {
    let db = TestDb::new().await;
    let engine = db.engine.clone().with_sealing_keys(
        flowfabric::engine::SealingKeys::parse(flowfabric_tests::TEST_CONFIG_KEYS).unwrap(),
    );
    engine.load_waitpoint_keys().await.unwrap();
    let tenant = db.tenant("chaos").await;
    for kind in ["echo", "testkit"] {
        flowfabric::components::register(&engine, &runtime(), tenant, kind, &guest(kind))
            .await
            .unwrap();
    }
    // Long frame writers keep workers busy, so kills land mid-attempt.
    let inputs = [
        "frames:150",
        "fail-until:2",
        "wait:go",
        "frames:5",
        "echo:plain",
    ];
    let mut batch = Vec::new();
    for i in 0..300 {
        let mut new = NewExecution::new("testkit", inputs[i % inputs.len()].as_bytes().to_vec());
        new.policy.retry.max_retries = 5;
        new.policy.retry.backoff = flowfabric::model::Backoff::Fixed { delay_ms: 50 };
        batch.push(new);
    }
    let ids: Vec<_> = engine
        .create_batch(tenant, &batch)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.execution_id)
        .collect();

    let cache = flowfabric_tests::ScratchDir::new("chaos");
    // The killer works on its own clock, however long the checks below take.
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = tokio::spawn({
        let (url, cache, kills) = (
            db.pg_url().to_owned(),
            cache.path().to_owned(),
            kills.clone(),
        );
        async move {
            let mut workers: Vec<_> = (0..WORKERS).map(|_| spawn_worker(&url, &cache)).collect();
            while kills.load(Relaxed) < KILLS {
                let pause = rand::rng().random_range(100..400);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                let victim = rand::rng().random_range(0..WORKERS);
                workers[victim].start_kill().unwrap();
                let _ = workers[victim].wait().await;
                workers[victim] = spawn_worker(&url, &cache);
                kills.fetch_add(1, Relaxed);
            }
            workers
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        // Signal whatever waits.
        for waitpoint in suspended_tokens(&engine, tenant, &ids).await {
            let signal = NewSignal {
                name: "go".into(),
                payload: b"1".to_vec(),
                idempotency_key: Some(format!("go-{waitpoint}")),
            };
            let _ = engine.deliver_signal(&waitpoint, signal).await;
        }
        let terminal = terminal_count(&engine, tenant, &ids).await;
        if terminal == ids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {terminal} of {} terminal after 180 s and {} kills",
            ids.len(),
            kills.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop the killer where it is; its workers go with it (`kill_on_drop`).
    killer.abort();
    let _ = killer.await;
    let kills = kills.load(Relaxed);

    // Every execution ended the way its input says, exactly once.
    for id in &ids {
        let ex = engine.get(tenant, *id).await.unwrap();
        assert_eq!(
            ex.state,
            PublicState::Completed,
            "{id}: {:?}",
            ex.last_failure
        );
    }
    // As a follower of the tenant's completion stream reads them.
    let mut events: HashMap<ExecutionId, i64> = HashMap::new();
    for ev in db.events::<CompletionEvent>(tenant).await {
        *events.entry(ev.execution_id).or_default() += 1;
    }
    assert_eq!(
        events.len(),
        ids.len(),
        "one completion event per execution"
    );
    assert!(
        events.values().all(|&n| n == 1),
        "duplicated events: {events:?}"
    );
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts WHERE state = 'succeeded'")
            .fetch_one(db.pg())
            .await
            .unwrap();
    assert_eq!(succeeded, ids.len() as i64, "one successful attempt each");
    // Frames are dense 1..n within every attempt.
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT execution_id, attempt_index, max(seq) AS top, count(*) AS n \
         FROM frames GROUP BY 1, 2) f WHERE top <> n",
    )
    .fetch_one(db.pg())
    .await
    .unwrap();
    assert_eq!(gaps, 0, "frame sequences have gaps or duplicates");
    let reclaimed: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(reclaim_count), 0)::int8 FROM executions")
            .fetch_one(db.pg())
            .await
            .unwrap();
    // The kills did interrupt running attempts (busy workers, four slots each).
    assert!(reclaimed > 0, "no attempt was interrupted by {kills} kills");
    eprintln!(
        "chaos: {} executions, {kills} SIGKILLs, {reclaimed} attempts reclaimed, lost 0, \
         duplicated 0",
        ids.len()
    );
}

async fn terminal_count(
    engine: &flowfabric::Engine,
    tenant: flowfabric::model::TenantId,
    ids: &[flowfabric::model::ExecutionId],
) -> usize {
    let mut n = 0;
    for id in ids {
        if engine.get(tenant, *id).await.unwrap().state.is_terminal() {
            n += 1;
        }
    }
    n
}

/// Tokens of the open waitpoints of suspended executions.
async fn suspended_tokens(
    engine: &flowfabric::Engine,
    tenant: flowfabric::model::TenantId,
    ids: &[flowfabric::model::ExecutionId],
) -> Vec<String> {
    let mut tokens = Vec::new();
    for id in ids {
        if engine.get(tenant, *id).await.unwrap().state != PublicState::Suspended {
            continue;
        }
        for w in engine
            .list_waitpoints(tenant, *id, None, flowfabric::engine::MAX_WAITPOINT_PAGE)
            .await
            .unwrap()
        {
            if w.waitpoint.state != "closed" {
                tokens.push(w.token);
            }
        }
    }
    tokens
}
