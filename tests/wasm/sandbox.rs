//! What a guest cannot do, and how each way of failing is classified.

use std::time::Duration;

use flowfabric::model::{FailureClass, PublicState};
use flowfabric_tests::{on_both_backends, Store};

use crate::{config, text, Env};

#[tokio::test]
async fn echo_round_trips_with_progress_and_frames() {
    let env = Env::new().await;
    let pool = env.pool(config(2));
    let id = env.submit("echo", "hello, wasm", 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "hello, wasm");
    let frames = env.first_attempt_frames(id, 100).await;
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].seq, frames[0].frame_type.as_str()), (1, "echo"));
    assert_eq!(frames[0].payload, b"hello, wasm");
    let progress: (Option<i16>, Option<String>) = sqlx::query_as(
        "SELECT progress_percent, progress_message FROM executions WHERE execution_id = $1",
    )
    .bind(id)
    .fetch_one(env.db.pg())
    .await
    .unwrap();
    assert_eq!(progress, (Some(50), Some("echoing".into())));
    pool.shutdown().await;
}

#[tokio::test]
async fn transient_failure_retries_then_succeeds() {
    let env = Env::new().await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "fail-until:3", 5).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(text(&ex.result), "ok on attempt 3");
    assert_eq!((ex.attempt_index, ex.retry_count), (3, 2));
    pool.shutdown().await;
}

#[tokio::test]
async fn permanent_failure_is_terminal_at_once() {
    let env = Env::new().await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "permanent", 5).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Failed);
    let failure = ex.last_failure.unwrap();
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(
        failure.message.contains("can never succeed"),
        "{}",
        failure.message
    );
    assert_eq!(ex.attempt_index, 1, "not retried");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_panic_is_a_trap_and_the_worker_keeps_serving() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    let id = env.submit("testkit", "panic", 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Failed);
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::Trap);
    let next = env.submit("echo", "still here", 0).await;
    assert_eq!(text(&env.wait_terminal(next).await.result), "still here");
    pool.shutdown().await;
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    let env = Env::new().await;
    let mut cfg = config(1);
    cfg.sandbox.timeout = Duration::from_millis(300);
    let pool = env.pool(cfg);
    let id = env.submit("testkit", "loop", 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Failed);
    let failure = ex.last_failure.unwrap();
    assert_eq!(failure.class, FailureClass::Timeout, "{}", failure.message);
    let next = env.submit("echo", "after the loop", 0).await;
    assert_eq!(env.wait_terminal(next).await.state, PublicState::Completed);
    pool.shutdown().await;
}

#[tokio::test]
async fn the_policy_attempt_timeout_bounds_the_sandbox() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    let mut new = flowfabric::model::NewExecution::new("testkit", b"loop".to_vec());
    new.policy.retry.max_retries = 0;
    new.policy.timeouts.attempt_timeout_ms = Some(200);
    let id = env
        .db
        .engine
        .create(env.tenant, new)
        .await
        .unwrap()
        .execution_id;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::Timeout);
    pool.shutdown().await;
}

#[tokio::test]
async fn a_memory_bomb_fails_cleanly_and_the_worker_keeps_serving() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    let small = env.submit("testkit", "alloc:8", 0).await;
    assert_eq!(env.wait_terminal(small).await.state, PublicState::Completed);
    let bomb = env.submit("testkit", "alloc:512", 0).await;
    let ex = env.wait_terminal(bomb).await;
    assert_eq!(ex.state, PublicState::Failed);
    let failure = ex.last_failure.unwrap();
    assert_eq!(
        failure.class,
        FailureClass::OutOfMemory,
        "{}",
        failure.message
    );
    let next = env.submit("echo", "alive", 0).await;
    assert_eq!(env.wait_terminal(next).await.state, PublicState::Completed);
    pool.shutdown().await;
}

#[tokio::test]
async fn files_network_and_environment_are_denied() {
    let env = Env::new().await;
    let pool = env.pool(config(4));
    // A real listener, so a refusal can only come from the sandbox.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cases = [
        ("open:/etc/passwd".to_string(), "denied"),
        ("open:Cargo.toml".to_string(), "denied"),
        (format!("connect:{addr}"), "denied"),
    ];
    for (input, expected) in cases {
        let id = env.submit("testkit", &input, 0).await;
        let ex = env.wait_terminal(id).await;
        assert_eq!(
            ex.state,
            PublicState::Completed,
            "{input}: {:?}",
            ex.last_failure
        );
        assert!(
            text(&ex.result).starts_with(expected),
            "{input}: {}",
            text(&ex.result)
        );
    }
    let id = env.submit("testkit", "env", 0).await;
    assert_eq!(
        text(&env.wait_terminal(id).await.result),
        "",
        "empty environment"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn stdout_stderr_logs_and_frames_are_captured_in_order() {
    let env = Env::new().await;
    let pool = env.pool(config(2));
    let id = env.submit("testkit", "frames:5", 0).await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(text(&ex.result), "frames=5");
    let frames = env.first_attempt_frames(id, 100).await;
    let types: Vec<&str> = frames.iter().map(|f| f.frame_type.as_str()).collect();
    assert_eq!(types, ["log", "item", "item", "item", "item", "item"]);
    let seqs: Vec<i64> = frames.iter().map(|f| f.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    let id = env.submit("testkit", "print:hi there", 0).await;
    env.wait_terminal(id).await;
    let frames = env.first_attempt_frames(id, 100).await;
    let by_type: Vec<(&str, &[u8])> = frames
        .iter()
        .map(|f| (f.frame_type.as_str(), f.payload.as_slice()))
        .collect();
    assert_eq!(
        by_type,
        [
            ("stdout", &b"hi there\n"[..]),
            ("stderr", &b"err: hi there\n"[..])
        ]
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn task_info_reaches_the_guest() {
    let env = Env::new().await;
    let pool = env.pool(config(1));
    let id = env.submit("testkit", "info", 0).await;
    let out = text(&env.wait_terminal(id).await.result);
    assert!(out.contains(&format!("execution={id}")), "{out}");
    assert!(
        out.contains("kind=testkit\nattempt=1\nretries=0\nhealthy=true"),
        "{out}"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn a_tenants_ceilings_tighten_the_workers_sandbox() {
    let env = Env::new().await;
    let other = env.db.tenant("roomy").await;
    flowfabric::components::register(
        &env.db.engine,
        &env.runtime,
        other,
        "testkit",
        &flowfabric_tests::guest("testkit"),
    )
    .await
    .unwrap();
    let ceilings = flowfabric::model::TenantLimits {
        max_memory_mib: Some(16),
        max_task_timeout_ms: Some(300),
        ..Default::default()
    };
    env.db
        .engine
        .set_tenant_limits(env.tenant, ceilings)
        .await
        .unwrap();
    // The worker allows 64 MiB and 10 s; this tenant gets 16 MiB and 300 ms.
    let pool = env.pool(config(2));
    let alloc = env.submit("testkit", "alloc:32", 0).await;
    let spin = env.submit("testkit", "loop", 0).await;
    let alloc = env
        .wait_terminal(alloc)
        .await
        .last_failure
        .expect("alloc fails");
    assert_eq!(alloc.class, FailureClass::OutOfMemory, "{}", alloc.message);
    let spin = env
        .wait_terminal(spin)
        .await
        .last_failure
        .expect("loop fails");
    assert_eq!(spin.class, FailureClass::Timeout, "{}", spin.message);

    // Another tenant on the same worker keeps the worker's own limits.
    let mut roomy = flowfabric::model::NewExecution::new("testkit", b"alloc:32".to_vec());
    roomy.policy.retry.max_retries = 0;
    let id = env
        .db
        .engine
        .create(other, roomy)
        .await
        .unwrap()
        .execution_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ex = env.db.engine.get(other, id).await.unwrap();
        if ex.state.is_terminal() {
            assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.shutdown().await;
}

/// Progress is written a few times a second at most, by a writer of the
/// attempt's own: a report made early in a long run shows while the run
/// goes on, and the last report of a run comes with its completion.
async fn progress_shows_during_a_run_and_the_last_report_with_its_end(store: Store) {
    let env = Env::on(store).await;
    let pool = env.pool(config(1));
    let id = env.submit("testkit", "progress-sleep:3000", 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let running = loop {
        let ex = env.db.engine.get(env.tenant, id).await.expect("get");
        if ex.progress_percent.is_some() || ex.state.is_terminal() {
            break ex;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress shown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(running.state, PublicState::Active, "shown while it runs");
    assert_eq!(
        (
            running.progress_percent,
            running.progress_message.as_deref()
        ),
        (Some(10), Some("started"))
    );
    let done = env.wait_terminal(id).await;
    assert_eq!(
        done.state,
        PublicState::Completed,
        "{:?}",
        done.last_failure
    );
    assert_eq!(
        (done.progress_percent, done.progress_message.as_deref()),
        (Some(90), Some("finishing")),
        "the last report, written with the result"
    );
    pool.shutdown().await;
}

on_both_backends!(progress_shows_during_a_run_and_the_last_report_with_its_end);
