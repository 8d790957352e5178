//! The `flowfabric` binary itself: a worker process that serves and drains on
//! SIGTERM, and one-line errors with a non-zero exit code.

use std::process::{Command, Stdio};
use std::time::Duration;

use flowfabric::model::{NewExecution, PublicState};
use flowfabric_tests::{guest, runtime, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");

#[tokio::test]
async fn worker_process_runs_executions_and_drains_on_sigterm() {
    let db = TestDb::new().await;
    let tenant = db.tenant("acme").await;
    flowfabric::components::register(&db.engine, &runtime(), tenant, "echo", &guest("echo"))
        .await
        .unwrap();
    let cache = std::env::temp_dir().join(format!("ff-cli-{}", uuid::Uuid::now_v7().simple()));
    let mut worker = tokio::process::Command::new(BIN)
        .args(["worker", "--slots", "2", "--cache-dir"])
        .arg(&cache)
        .env("DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");

    let id = db
        .engine
        .create(
            tenant,
            NewExecution::new("echo", b"from a process".to_vec()),
        )
        .await
        .unwrap()
        .execution_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let ex = db.engine.get(tenant, id).await.unwrap();
        if ex.state.is_terminal() {
            break ex;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker process never ran it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.state, PublicState::Completed);
    assert_eq!(done.result.as_deref(), Some(&b"from a process"[..]));

    let pid = worker.id().expect("worker pid").to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "drained and exited cleanly: {status}");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn errors_are_one_line_with_a_non_zero_exit() {
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", "not a url"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}
