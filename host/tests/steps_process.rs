//! Durable steps and timers across process deaths: a worker SIGKILLed after a
//! step records is replaced, and the reclaiming attempt does not repeat the
//! step; a durable sleep outlives a restart of `serve` and wakes on time.
//! Side effects are POSTs to a loopback counter the test runs.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowfabric::model::{
    CapabilityCeiling, ComponentGrant, ExecutionId, NewExecution, PublicState, StepKind, TenantId,
};
use flowfabric::Engine;
use flowfabric_tests::{guest, runtime, ServedProcess, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");

/// A loopback server that echoes what is POSTed to it and counts the calls.
async fn counter() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/effect",
        axum::routing::post(move |body: axum::body::Bytes| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                body
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/effect"), hits)
}

/// A tenant whose testkit may reach loopback HTTP.
async fn tenant_with_testkit(engine: &Engine, db: &TestDb) -> TenantId {
    let tenant = db.tenant("steps").await;
    flowfabric::components::register(engine, &runtime(), tenant, "testkit", &guest("testkit"))
        .await
        .unwrap();
    let ceiling = CapabilityCeiling {
        http_allow: vec!["http://127.0.0.1:*".into()],
        http_allow_cidrs: vec!["127.0.0.0/8".into()],
        ..Default::default()
    };
    engine.set_ceiling(tenant, &ceiling).await.unwrap();
    let grant = ComponentGrant {
        http: vec!["http://127.0.0.1:*".into()],
        ..Default::default()
    };
    engine.put_grant(tenant, "testkit", &grant).await.unwrap();
    tenant
}

fn spawn_worker(database_url: &str, cache: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args([
            "worker",
            "--slots",
            "2",
            "--lease-ttl-ms",
            "1000",
            "--cache-dir",
        ])
        .arg(cache)
        .env("DATABASE_URL", database_url)
        .env("FLOWFABRIC_CONFIG_KEYS", flowfabric_tests::TEST_CONFIG_KEYS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker")
}

async fn submit(engine: &Engine, tenant: TenantId, input: &str) -> ExecutionId {
    let mut new = NewExecution::new("testkit", input.as_bytes().to_vec());
    new.policy.retry.max_retries = 3;
    engine.create(tenant, new).await.unwrap().execution_id
}

/// Poll until `done` says yes, for at most 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_recorded_before_a_sigkill_is_not_repeated_by_the_reclaim() {
    let db = TestDb::new().await;
    let engine = db.engine.clone();
    let tenant = tenant_with_testkit(&engine, &db).await;
    let (url, hits) = counter().await;
    let cache = flowfabric_tests::ScratchDir::new("steps-kill");
    // Attempt 1 records `a`, then spins until it loses its lease; the
    // reclaiming attempt 2 goes on to `b`.
    let id = submit(
        &engine,
        tenant,
        &format!("steps:post:a:{url};stall-until:2;post:b:{url}"),
    )
    .await;
    let mut worker = spawn_worker(db.pg_url(), cache.path());
    until("step a is recorded", || async {
        !engine
            .list_steps(tenant, id, None, 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    let _replacement = spawn_worker(db.pg_url(), cache.path());
    let ex = db.wait_terminal(tenant, id, Duration::from_secs(30)).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(ex.attempt_index, 2);
    assert_eq!(
        String::from_utf8_lossy(ex.result.as_deref().unwrap()),
        "a=a,b=b"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2, "a once, b once");
    let steps = engine.list_steps(tenant, id, None, 10).await.unwrap();
    let recorded: Vec<_> = steps
        .iter()
        .map(|s| (s.name.as_str(), s.attempt_index))
        .collect();
    assert_eq!(recorded, [("a", 1), ("b", 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_sleep_survives_a_restart_of_serve() {
    let db = TestDb::new().await;
    let engine = db.engine.clone();
    let tenant = tenant_with_testkit(&engine, &db).await;
    let cache = flowfabric_tests::ScratchDir::new("steps-restart");
    let args = [
        "--slots",
        "2",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let first = ServedProcess::start(BIN, db.pg_url(), "admin", &args).await;
    let id = submit(&engine, tenant, "steps:step:a;sleep:2000;step:b").await;
    until("the execution sleeps", || async {
        engine.get(tenant, id).await.unwrap().state == PublicState::Suspended
    })
    .await;
    let mut process = first.process;
    process.start_kill().unwrap();
    let _ = process.wait().await;

    // Nothing of the sleep lived in the process: a new one wakes it.
    let _second = ServedProcess::start(BIN, db.pg_url(), "admin", &args).await;
    let ex = db.wait_terminal(tenant, id, Duration::from_secs(30)).await;
    assert_eq!(ex.state, PublicState::Completed, "{:?}", ex.last_failure);
    assert_eq!(
        String::from_utf8_lossy(ex.result.as_deref().unwrap()),
        "a=a@1,slept=2000,b=b@1"
    );
    let steps = engine.list_steps(tenant, id, None, 10).await.unwrap();
    assert_eq!(steps[1].kind, StepKind::Sleep);
    let wake_at = steps[1].wake_at.unwrap();
    let finished = ex.finished_at.unwrap();
    assert!(finished >= wake_at, "woke early: {finished} < {wake_at}");
    // The scanner checks suspensions every 500 ms; claiming and running the
    // rest of the guest takes well under the remaining slack.
    let late = (finished - wake_at).num_milliseconds();
    assert!(late < 3_000, "woke {late} ms after its time");
}
