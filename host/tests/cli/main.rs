//! The `flowfabric` binary itself: a worker process that serves and drains on
//! SIGTERM, one-line errors with a non-zero exit code, every command parsed,
//! and the remote commands against `flowfabric serve` in a process of its own.

mod grants;
mod journey;
mod parse;
mod served;

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
    let cache = flowfabric_tests::ScratchDir::new("cli");
    let mut worker = tokio::process::Command::new(BIN)
        .args(["worker", "--slots", "2", "--cache-dir"])
        .arg(cache.path())
        .env("DATABASE_URL", db.pg_url())
        .env("FLOWFABRIC_CONFIG_KEYS", flowfabric_tests::TEST_CONFIG_KEYS)
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
    let done = db.wait_terminal(tenant, id, Duration::from_secs(30)).await;
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

/// The operator's waitpoint-key commands against an embedded database:
/// seed, list, rotate; a second seed with another secret fails and changes
/// nothing, and no output ever holds the secret.
#[test]
fn signing_keys_are_seeded_listed_and_rotated_from_the_cli() {
    let dir = flowfabric_tests::ScratchDir::new("signing-keys");
    std::fs::create_dir_all(dir.path()).unwrap();
    let url = format!("sqlite:{}", dir.path().join("ff.db").display());
    let secret_file = dir.path().join("secret");
    let secret = "a-secret-the-operator-kept-elsewhere-0123456789";
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let other_file = dir.path().join("other");
    std::fs::write(&other_file, "x".repeat(40)).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("DATABASE_URL", &url)
            .env("FLOWFABRIC_CONFIG_KEYS", flowfabric_tests::TEST_CONFIG_KEYS)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(secret), "{text}");
        (out.status.success(), text)
    };
    assert!(cli(&["migrate"]).0);
    let seed = |file: &std::path::Path| {
        cli(&[
            "signing-keys",
            "seed",
            "--kid",
            "legacy",
            "--secret-file",
            file.to_str().unwrap(),
        ])
    };
    let (ok, text) = seed(&secret_file);
    assert!(ok && text.contains("seeded `legacy`"), "{text}");
    let (ok, text) = seed(&secret_file);
    assert!(
        ok && text.contains("already stored with this secret"),
        "{text}"
    );
    let (ok, text) = seed(&other_file);
    assert!(!ok && text.starts_with("error: "), "{text}");
    assert!(text.contains("different secret"), "{text}");

    let (ok, text) = cli(&["signing-keys", "rotate", "--grace-hours", "24"]);
    assert!(ok, "{text}");
    let (ok, list) = cli(&["signing-keys", "list"]);
    assert!(ok, "{list}");
    let rows: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{list}");
    assert!(
        rows[0].starts_with("legacy") && rows[0].contains("signing"),
        "{list}"
    );
    assert!(rows[1].contains("pending"), "{list}");
    let (ok, text) = cli(&["signing-keys", "rotate", "--grace-hours", "100000"]);
    assert!(
        !ok && text.contains("--grace-hours must be at most"),
        "{text}"
    );
}
