//! The embedded backend under a crash: `flowfabric serve` on a SQLite file is
//! killed with SIGKILL while its worker pool drains a backlog, then started
//! again on the same file. Every execution must end exactly once, with one
//! completion event each, and none may be lost. The test process opens the
//! same file to submit and to check, so two processes share it throughout.
//! Loopback only; stops by itself.

use std::collections::HashSet;
use std::time::Duration;

use flowfabric::engine::Limits;
use flowfabric::model::{CompletionEvent, NewExecution};
use flowfabric_tests::{guest, runtime, ServedProcess, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");
const EXECUTIONS: usize = 1_500;

async fn serve(db: &TestDb, cache: &std::path::Path) -> ServedProcess {
    ServedProcess::start(
        BIN,
        &format!("sqlite:{}", db.sqlite_path().display()),
        flowfabric_tests::server::ADMIN_TOKEN,
        &[
            "--slots",
            "4",
            // Leases the killed process held come back within seconds.
            "--lease-ttl-ms",
            "2000",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    )
    .await
}

async fn completions(db: &TestDb, tenant: flowfabric::model::TenantId) -> Vec<CompletionEvent> {
    db.events::<CompletionEvent>(tenant).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_on_sqlite_loses_nothing_and_ends_everything_once() {
    let db = TestDb::sqlite(Limits::default()).await;
    let tenant = db.tenant("crash").await;
    flowfabric::components::register(&db.engine, &runtime(), tenant, "testkit", &guest("testkit"))
        .await
        .unwrap();
    let backlog: Vec<NewExecution> = (0..EXECUTIONS)
        .map(|i| NewExecution::new("testkit", format!("frames:{}", i % 3 + 1).into_bytes()))
        .collect();
    for chunk in backlog.chunks(db.engine.limits().max_batch) {
        db.engine.create_batch(tenant, chunk).await.unwrap();
    }
    let cache = flowfabric_tests::ScratchDir::new("crash");

    // Kill the server once it is well into the backlog.
    let mut served = serve(&db, cache.path()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let before_kill = loop {
        let done = completions(&db, tenant).await.len();
        if done >= EXECUTIONS / 4 {
            break done;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} done after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    served.process.start_kill().unwrap();
    served.process.wait().await.unwrap();
    assert!(
        before_kill < EXECUTIONS,
        "the backlog must outlast the kill for the test to mean anything"
    );

    // A new process on the same file finishes the rest.
    let _restarted = serve(&db, cache.path()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let events = loop {
        let events = completions(&db, tenant).await;
        if events.len() >= EXECUTIONS {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {EXECUTIONS} ended after the restart",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Once each: no execution lost, none ended twice.
    let ids: HashSet<_> = events.iter().map(|e| e.execution_id).collect();
    assert_eq!((events.len(), ids.len()), (EXECUTIONS, EXECUTIONS));
    assert!(events.iter().all(|e| e.outcome == "success"), "{events:?}");
    assert_eq!(db.count("completion_events").await, EXECUTIONS as i64);
}
