//! The worker pool's lease handling: crashes, cancels, shutdown, concurrency.

use std::time::Duration;

use flowfabric::engine::{ScannerConfig, Scanners};
use flowfabric::model::PublicState;

use crate::{config, text, Env};
use flowfabric_tests::Store;

#[tokio::test]
async fn a_killed_worker_is_reclaimed_and_another_completes() {
    let env = Env::new().await;
    let scanners = Scanners::start(
        env.db.backend(),
        ScannerConfig {
            lease_expiry: Duration::from_millis(100),
            ..ScannerConfig::default()
        },
    );
    let mut short = config(1);
    short.lease_ttl = Duration::from_secs(2);
    let doomed = env.pool(short.clone());
    let id = env.submit("testkit", "stall-until:2", 0).await;
    let doomed_instance = first_attempt_worker(&env, id).await;
    drop(doomed); // a crash: no outcome recorded, renewals stop

    let rescuer = env.pool(short);
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "ok on attempt 2");
    assert_eq!(ex.reclaim_count, 1);
    let (state, worker): (String, String) = sqlx::query_as(
        "SELECT state, worker_instance FROM attempts WHERE execution_id = $1 AND attempt_index = 2",
    )
    .bind(id)
    .fetch_one(env.db.pg())
    .await
    .unwrap();
    assert_eq!(state, "succeeded");
    assert_ne!(worker, doomed_instance, "completed by the other pool");
    rescuer.shutdown().await;
    scanners.shutdown().await;
}

/// The worker instance that took the first attempt, once it has.
async fn first_attempt_worker(env: &Env, id: flowfabric::model::ExecutionId) -> String {
    for _ in 0..1_500 {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT worker_instance FROM attempts WHERE execution_id = $1 AND attempt_index = 1",
        )
        .bind(id)
        .fetch_optional(env.db.pg())
        .await
        .unwrap();
        if let Some(worker) = row {
            return worker;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("execution {id} was never claimed");
}

#[tokio::test]
async fn operator_cancel_stops_the_running_guest_at_once() {
    let env = Env::new().await;
    let mut cfg = config(1);
    // Neither renewal (every 20 s) nor the sandbox timeout (120 s) can stop the
    // guest within the bound below: only the revocation notification can.
    cfg.lease_ttl = Duration::from_secs(60);
    cfg.sandbox.timeout = Duration::from_secs(120);
    let pool = env.pool(cfg);
    let id = env.submit("testkit", "loop", 0).await;
    env.wait_state(id, PublicState::Active).await;
    assert!(env
        .db
        .engine
        .cancel(env.tenant, id, "operator")
        .await
        .unwrap());
    // The only slot frees up only if the looping guest was stopped.
    let next = env.submit("echo", "after cancel", 0).await;
    let ex = env
        .wait_terminal_within(next, Duration::from_secs(10))
        .await;
    assert_eq!(ex.state, PublicState::Completed);
    let cancelled = env.db.engine.get(env.tenant, id).await.unwrap();
    assert_eq!(cancelled.state, PublicState::Cancelled);
    assert_eq!(cancelled.cancellation_reason.as_deref(), Some("operator"));
    pool.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_and_releases_unfinished_work() {
    let env = Env::new().await;
    let mut cfg = config(1);
    cfg.drain_timeout = Duration::from_millis(200);
    let pool = env.pool(cfg);
    let id = env.submit("testkit", "loop", 0).await;
    env.wait_state(id, PublicState::Active).await;
    pool.shutdown().await;
    let ex = env.db.engine.get(env.tenant, id).await.unwrap();
    assert_eq!(ex.state, PublicState::Waiting, "released back to the queue");
    assert_eq!(ex.retry_count, 0, "a release is not a failure");
}

#[tokio::test]
async fn many_executions_run_exactly_once_across_pools() {
    let env = Env::new().await;
    let pools = [env.pool(config(4)), env.pool(config(4))];
    let ids = create_testkit(&env, (0..80).map(|i| format!("echo:{i}"))).await;
    for (i, id) in ids.iter().enumerate() {
        let ex = env.wait_terminal(*id).await;
        assert_eq!(text(&ex.result), i.to_string());
        assert_eq!(ex.attempt_index, 1);
    }
    assert_eq!(env.db.count("attempts").await, 80);
    assert_eq!(env.db.completion_events_written().await, 80);
    for pool in pools {
        pool.shutdown().await;
    }
}

/// A pool sizes its claims to its slots (16 a slot, at least 64), and the
/// engine refuses a claim larger than its `max_claim_batch`: the pool asks
/// for no more than the engine takes, so a small engine limit slows claims
/// down and never stops them.
#[tokio::test]
async fn claims_stay_within_the_engines_batch_limit() {
    assert_eq!(flowfabric::worker::default_claim_batch(1), 64);
    assert_eq!(flowfabric::worker::default_claim_batch(16), 256);
    assert_eq!(flowfabric::worker::default_claim_batch(500), 1_000);
    let env = Env::on_with(Store::Postgres, |limits| limits.max_claim_batch = 5).await;
    let pool = env.pool(config(16));
    let ids = create_testkit(&env, (0..40).map(|i| format!("echo:{i}"))).await;
    for (i, id) in ids.iter().enumerate() {
        let ex = env.wait_terminal(*id).await;
        assert_eq!(text(&ex.result), i.to_string());
    }
    pool.shutdown().await;
}

#[tokio::test]
async fn an_unknown_kind_fails_permanently() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    let id = env.submit("never-uploaded", "x", 3).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Failed);
    let failure = ex.last_failure.unwrap();
    assert!(
        failure
            .message
            .contains("no component is registered for kind `never-uploaded`"),
        "{}",
        failure.message
    );
    pool.shutdown().await;
}

/// Kill the backend's LISTEN connection from the server side, as a network
/// cut or a restarted pooler would.
async fn kill_listener(env: &Env) -> u64 {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .execute(env.db.pg())
    .await
    .unwrap()
    .rows_affected()
}

#[tokio::test]
async fn work_keeps_flowing_when_the_notify_connection_is_cut() {
    let env = Env::new().await;
    let mut slow_poll = config(2);
    slow_poll.poll_interval = Duration::from_secs(2);
    let pool = env.pool(slow_poll);
    let first = env.submit("echo", "before", 0).await;
    assert_eq!(env.wait_terminal(first).await.state, PublicState::Completed);
    assert!(
        kill_listener(&env).await >= 1,
        "a LISTEN connection existed"
    );

    // Work submitted while the listener is gone still runs (polling), and the
    // listener reconnects by itself.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(env.submit("echo", &i.to_string(), 0).await);
    }
    for id in &ids {
        assert_eq!(env.wait_terminal(*id).await.state, PublicState::Completed);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_one(env.db.pg())
        .await
        .unwrap();
        if listening >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = env.submit("echo", "after", 0).await;
    assert_eq!(env.wait_terminal(after).await.state, PublicState::Completed);
    pool.shutdown().await;
}

/// How many of `ids` are `Active` (leased) right now.
async fn active_among(env: &Env, ids: &[flowfabric::model::ExecutionId]) -> usize {
    let mut active = 0;
    for id in ids {
        if env.db.engine.get(env.tenant, *id).await.unwrap().state == PublicState::Active {
            active += 1;
        }
    }
    active
}

// Several threads, as a worker process has: the pools' claims and the
// spinning guests' threads share two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_busy_with_long_runs_leaves_the_queue_to_other_pools() {
    let env = Env::new().await;
    let mut long = config(1);
    long.sandbox.timeout = Duration::from_secs(20);
    long.drain_timeout = Duration::from_millis(200);
    long.claim_ahead = Some(4);
    // Both queued before the pool starts, so its first claim comes back full:
    // a backlog, but of runs it knows nothing about yet.
    let a = env.submit("testkit", "loop", 0).await;
    let b = env.submit("testkit", "loop", 0).await;
    let first = env.pool(long.clone());
    env.wait_state(a, PublicState::Active).await;
    // The first pool's only slot is taken, so the second execution is left
    // for a pool with room, not claimed ahead behind a run of unknown length.
    let second = env.pool(long);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while active_among(&env, &[a, b]).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second pool never got the second execution"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a_worker = first_attempt_worker(&env, a).await;
    let b_workers: Vec<String> =
        sqlx::query_scalar("SELECT worker_instance FROM attempts WHERE execution_id = $1")
            .bind(b)
            .fetch_all(env.db.pg())
            .await
            .unwrap();
    assert_eq!(b_workers.len(), 1, "the busy pool never claimed it");
    assert_ne!(b_workers[0], a_worker, "run by the other pool");
    first.shutdown().await;
    second.shutdown().await;
}

/// Create `inputs` as `testkit` executions in one batch, without retries.
async fn create_testkit(
    env: &Env,
    inputs: impl IntoIterator<Item = String>,
) -> Vec<flowfabric::model::ExecutionId> {
    let news: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let mut new = flowfabric::model::NewExecution::new("testkit", input.into_bytes());
            new.policy.retry.max_retries = 0;
            new
        })
        .collect();
    env.db
        .engine
        .create_batch(env.tenant, &news)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.execution_id)
        .collect()
}

// Several threads, as a worker process has: the pools' claims and the
// spinning guests' threads share two cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_claimed_ahead_behind_a_long_run_goes_back_for_other_pools() {
    let env = Env::new().await;
    let mut cfg = config(1);
    cfg.claim_ahead = Some(8);
    cfg.sandbox.timeout = Duration::from_secs(30);
    cfg.drain_timeout = Duration::from_millis(200);
    // Short runs first, so the pools claim ahead; then one run that does not
    // end, with more short ones behind it. Separate batches keep that order.
    let warm = create_testkit(&env, (0..40).map(|i| format!("echo:{i}"))).await;
    let long = create_testkit(&env, ["loop".to_owned()]).await[0];
    let behind = create_testkit(&env, (0..8).map(|i| format!("echo:behind {i}"))).await;
    let pools = [env.pool(cfg.clone()), env.pool(cfg)];
    for id in &warm {
        env.wait_terminal(*id).await;
    }
    // Whichever pool runs the long one, what it claimed ahead goes back, and
    // the other pool runs all of it while the long run goes on.
    for id in &behind {
        let ex = env.wait_terminal_within(*id, Duration::from_secs(10)).await;
        assert_eq!(ex.state, PublicState::Completed);
    }
    let ex = env.db.engine.get(env.tenant, long).await.unwrap();
    assert!(
        !ex.state.is_terminal(),
        "the long run is still going: {} {:?} attempt {}",
        ex.state,
        ex.last_failure,
        ex.attempt_index
    );
    for pool in pools {
        pool.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_releases_what_was_claimed_ahead() {
    let env = Env::new().await;
    let mut cfg = config(1);
    cfg.claim_ahead = Some(8);
    // A backlog of short runs: the pool keeps executions claimed ahead of its
    // slot the whole time, so some are ready, not running, when it stops.
    let ids = create_testkit(&env, (0..1_000).map(|i| format!("echo:{i}"))).await;
    let pool = env.pool(cfg);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while completed_among(&env).await < 50 {
        assert!(tokio::time::Instant::now() < deadline, "the pool is stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    pool.shutdown().await;
    let states: Vec<(String, i32)> = sqlx::query_as(
        "SELECT public_state, retry_count FROM executions WHERE execution_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(env.db.pg())
    .await
    .unwrap();
    assert!(states.len() == ids.len());
    for (state, retries) in &states {
        assert!(
            state == "completed" || state == "waiting",
            "{state}: nothing stays leased after shutdown"
        );
        assert_eq!(*retries, 0, "a release is not a failure");
    }
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attempts WHERE execution_id = ANY($1) AND state = 'delayed'",
    )
    .bind(&ids)
    .fetch_one(env.db.pg())
    .await
    .unwrap();
    assert!(released >= 1, "some were claimed ahead and released");
}

async fn completed_among(env: &Env) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM executions WHERE public_state = 'completed'")
        .fetch_one(env.db.pg())
        .await
        .unwrap()
}

/// The guest `bench pool` sets beside a peer's no-op job (`guests/noop`):
/// it runs through the pool and hands its input back, and imports nothing a
/// grant gives (no HTTP, configuration, files or sockets), so what it costs
/// is what any task costs; testkit imports every interface.
#[tokio::test]
async fn the_benchmarks_no_op_guest_runs_and_imports_no_capability() {
    let env = Env::new().await;
    let (noop, _) = flowfabric::components::register(
        &env.db.engine,
        &env.runtime,
        env.tenant,
        "noop",
        &flowfabric_tests::guest("noop"),
    )
    .await
    .unwrap();
    let imports = noop.imports.expect("recorded at upload");
    for capability in [
        "wasi:http/",
        "wasi:config/",
        "wasi:filesystem/",
        "wasi:sockets/",
    ] {
        assert!(
            !imports.iter().any(|i| i.starts_with(capability)),
            "{capability} in {imports:?}"
        );
    }
    let testkit = env
        .db
        .engine
        .backend()
        .latest_component(env.tenant, "testkit")
        .await
        .unwrap()
        .and_then(|v| v.imports)
        .expect("testkit's imports");
    assert!(
        imports.len() * 2 < testkit.len(),
        "{imports:?} against {testkit:?}"
    );

    let pool = env.pool(config(1));
    let id = env.submit("noop", "echo:7", 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "echo:7");
    pool.shutdown().await;
}
