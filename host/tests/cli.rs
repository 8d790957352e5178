//! The `flowfabric` binary itself: a worker process that serves and drains on
//! SIGTERM, and one-line errors with a non-zero exit code.

use std::process::{Command, Stdio};
use std::time::Duration;

use flowfabric::model::{NewExecution, PublicState};
use flowfabric_tests::{guest, runtime, ServedProcess, TestDb};

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

/// `flowfabric serve` in a process of its own, and the remote commands
/// against it, as a user would run them.
struct Served {
    process: tokio::process::Child,
    url: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _db: TestDb,
    dir: flowfabric_tests::ScratchDir,
}

const ADMIN: &str = "cli-test-admin";

impl Served {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let dir = flowfabric_tests::ScratchDir::new("cli");
        std::fs::create_dir_all(dir.path()).unwrap();
        let cache = dir.path().join("cache");
        let served = ServedProcess::start(
            BIN,
            db.pg_url(),
            ADMIN,
            &["--slots", "2", "--cache-dir", cache.to_str().unwrap()],
        )
        .await;
        Self {
            process: served.process,
            url: served.url,
            log: served.log,
            _db: db,
            dir,
        }
    }

    /// Run the CLI against this server; returns (success, stdout, stderr).
    fn cli(&self, key: Option<&str>, args: &[&str]) -> (bool, String, String) {
        self.cli_with_input(key, args, b"")
    }

    /// [`Served::cli`] with `input` on standard input.
    fn cli_with_input(
        &self,
        key: Option<&str>,
        args: &[&str],
        input: &[u8],
    ) -> (bool, String, String) {
        use std::io::Write;
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("FLOWFABRIC_URL", &self.url)
            .env("FLOWFABRIC_ADMIN_TOKEN", ADMIN)
            .env_remove("FLOWFABRIC_API_KEY");
        if let Some(key) = key {
            command.env("FLOWFABRIC_API_KEY", key);
        }
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_string_lossy().into_owned()
    }
}

fn one_line_error(what: &str, (ok, _, stderr): &(bool, String, String)) {
    assert!(!ok, "{what}: should fail");
    assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
}

#[tokio::test]
async fn remote_commands_drive_a_served_installation() {
    let mut served = Served::start().await;
    let (ok, out, err) = served.cli(None, &["tenant", "create", "acme", "--json"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = created["api_key"]["token"].as_str().unwrap().to_owned();
    let key = Some(key.as_str());
    let (ok, out, _) = served.cli(None, &["tenant", "list"]);
    assert!(ok && out.contains("acme"), "{out}");
    let tenant_id = created["tenant"]["tenant_id"].as_str().unwrap().to_owned();
    let (ok, out, err) = served.cli(
        None,
        &["tenant", "limits", &tenant_id, "--max-running", "64"],
    );
    assert!(ok && out.contains("max_running = 64"), "{out}{err}");
    let (ok, out, err) = served.cli(None, &["tenant", "limits", &tenant_id]);
    assert!(
        ok && !out.contains("max_running"),
        "limits are replaced: {out}{err}"
    );

    for kind in ["echo", "testkit"] {
        let file = served.write(&format!("{kind}.wasm"), &guest(kind));
        let (ok, out, err) = served.cli(key, &["component", "upload", kind, &file]);
        assert!(ok, "{err}");
        assert!(out.starts_with(&format!("uploaded {kind} v1")), "{out}");
    }
    let (_, out, _) = served.cli(key, &["component", "list"]);
    assert!(out.contains("echo") && out.contains("testkit"), "{out}");
    // An old version, deprecated then purged; the newest stays.
    for kind in ["echo", "testkit"] {
        let file = served.write(&format!("{kind}.wasm"), &guest(kind));
        let (ok, _, err) = served.cli(key, &["component", "upload", "spare", &file]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = served.cli(key, &["component", "deprecate", "spare", "1"]);
    assert!(ok && out.contains("deprecated spare v1"), "{out}{err}");
    let (ok, out, err) = served.cli(key, &["component", "purge", "spare", "1"]);
    assert!(ok && out.contains("purged spare v1"), "{out}{err}");
    one_line_error(
        "purging the newest version",
        &served.cli(key, &["component", "purge", "spare", "2"]),
    );

    // run: frames on stderr, the result alone on stdout.
    let (ok, out, err) = served.cli(key, &["run", "testkit", "--input-text", "frames:2"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "frames=2");
    assert!(err.contains("item: 0") && err.contains("item: 1"), "{err}");
    let (ok, out, _) = served.cli(key, &["run", "echo", "--input", r#"{"a":1}"#]);
    assert!(ok);
    assert_eq!(out.trim(), r#"{"a":1}"#);
    // A failed run exits non-zero; after the progress lines it followed, the
    // error is one line, last.
    let (ok, _, err) = served.cli(key, &["run", "testkit", "--input-text", "permanent"]);
    assert!(!ok);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: execution ") && last.contains(" failed: "),
        "{err}"
    );

    assert_eq!(err.matches("error: ").count(), 1, "{err}");

    // Durable steps: listed by `get --steps`, kept by `replay --keep-steps`.
    let (ok, out, err) = served.cli(
        key,
        &[
            "run",
            "testkit",
            "--input-text",
            "steps:step:a;step:b",
            "--detach",
        ],
    );
    assert!(ok, "{err}");
    let stepped = out.trim().to_owned();
    let listed = wait_for_steps(&served, key, &stepped).await;
    assert!(
        listed
            .lines()
            .any(|l| l.contains(" a ") && l.contains("completed")),
        "{listed}"
    );
    let (ok, out, err) = served.cli(key, &["replay", &stepped, "--keep-steps"]);
    assert!(ok && out.contains("(replay 1)"), "{out}{err}");
    let (_, out, _) = served.cli(key, &["get", &stepped, "--steps", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "the journal was kept: {out}");
    assert_eq!(
        (
            steps[1]["name"].as_str(),
            steps[1]["attempt_index"].as_i64()
        ),
        (Some("b"), Some(1))
    );

    // Schedules: a bad cron expression is one line naming the field; a good
    // one lists its next fire times; an interval fires on its own.
    let refused = served.cli(
        key,
        &["schedule", "create", "bad", "echo", "--cron", "0 25 * * *"],
    );
    one_line_error("a bad cron expression", &refused);
    assert!(refused.2.contains("cadence.expression"), "{}", refused.2);
    // The API's error body, read as the API writes it: kind and status.
    assert!(
        refused.2.contains("(invalid_input, HTTP 400)"),
        "{}",
        refused.2
    );
    let (ok, out, err) = served.cli(
        key,
        &[
            "schedule",
            "create",
            "nightly",
            "echo",
            "--cron",
            "0 3 * * *",
            "--time-zone",
            "Europe/Berlin",
        ],
    );
    assert!(
        ok && out.contains("(Europe/Berlin)") && out.contains("next"),
        "{out}{err}"
    );
    let (ok, out, err) = served.cli(
        key,
        &[
            "schedule",
            "create",
            "tick",
            "echo",
            "--every-ms",
            "1000",
            "--input",
            "7",
            "--missed",
            "backfill:3",
            "--overlap",
            "cancel-previous",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(r#""cancel_previous""#) && out.contains(r#""backfill""#),
        "the policies given are the schedule's: {out}"
    );
    let tick: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tick_id = tick["schedule_id"].as_str().unwrap().to_owned();
    let tag = format!("flowfabric.schedule:{tick_id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = served.cli(key, &["list", "--tag", &tag, "--json"]);
        let page: serde_json::Value = serde_json::from_str(&out).unwrap();
        if !page["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the schedule never fired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, _) = served.cli(key, &["schedule", "pause", &tick_id]);
    assert!(ok && out.contains("paused"), "{out}");
    let (ok, out, _) = served.cli(key, &["schedule", "trigger", &tick_id]);
    assert!(ok && out.trim().len() == 36, "{out}");
    let (ok, out, _) = served.cli(key, &["schedule", "rm", &tick_id]);
    assert!(ok && out.contains("deleted"), "{out}");
    one_line_error(
        "a deleted schedule",
        &served.cli(key, &["schedule", "get", &tick_id]),
    );

    // Concurrency limits: a bad number is one line naming the field; a good
    // limit lists; keyed runs run and show their key; rm deletes.
    let refused = served.cli(
        key,
        &["concurrency", "set", "kind", "echo", "--max-running", "0"],
    );
    one_line_error("a zero limit", &refused);
    assert!(refused.2.contains("max_running"), "{}", refused.2);
    let (ok, out, err) = served.cli(
        key,
        &[
            "concurrency",
            "set",
            "kind",
            "echo",
            "--max-running",
            "1",
            "--max-starts",
            "50",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "kind echo: 1 running per key, 50 starts per 1000 ms"
    );
    let (ok, out, _) = served.cli(key, &["concurrency", "list"]);
    assert!(ok && out.contains("kind echo: 1 running per key"), "{out}");
    for customer in ["c1", "c1", "c2"] {
        let (ok, out, err) = served.cli(
            key,
            &["run", "echo", "--input", "1", "--concurrency-key", customer],
        );
        assert!(ok, "{out}{err}");
    }
    let (ok, out, err) = served.cli(key, &["run", "echo", "--concurrency-key", "c3", "--detach"]);
    assert!(ok, "{err}");
    let (_, shown, _) = served.cli(key, &["get", out.trim()]);
    assert!(shown.contains("key       c3"), "{shown}");
    let (ok, out, _) = served.cli(key, &["concurrency", "rm", "kind", "echo"]);
    assert!(ok && out.contains("deleted"), "{out}");
    one_line_error(
        "a deleted limit",
        &served.cli(key, &["concurrency", "rm", "kind", "echo"]),
    );

    // submit from JSON lines, then list, get, tail, cancel.
    let lines = (0..3)
        .map(|i| format!(r#"{{"kind": "echo", "input": {i}, "tags": {{"from": "file"}}}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    let file = served.write("batch.jsonl", lines.as_bytes());
    let (ok, out, err) = served.cli(key, &["submit", &file, "--json"]);
    assert!(ok, "{err}");
    let submitted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(submitted["created"], 3);
    let bad = served.write("bad.jsonl", b"{\"kind\": \"echo\"}\nnot json\n");
    let refused = served.cli(key, &["submit", &bad]);
    one_line_error("a malformed line", &refused);
    assert!(refused.2.contains(":2:"), "names the line: {}", refused.2);
    // A line the API would refuse (a misspelt field) is found before
    // anything is sent, even when earlier lines go in batches of their own.
    let typo = served.write(
        "typo.jsonl",
        b"{\"kind\": \"echo\", \"tags\": {\"from\": \"typo\"}}\n{\"kind\": \"echo\", \"prority\": 1}\n",
    );
    let refused = served.cli(key, &["submit", &typo, "--batch-size", "1"]);
    one_line_error("a misspelt field", &refused);
    assert!(refused.2.contains(":2:"), "names the line: {}", refused.2);
    assert!(
        refused.2.contains("prority"),
        "names the field: {}",
        refused.2
    );
    let (ok, out, _) = served.cli(key, &["list", "--tag", "from:typo", "--json"]);
    assert!(ok);
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        0,
        "nothing was sent"
    );

    let (ok, out, _) = served.cli(key, &["list", "--tag", "from:file", "--json"]);
    assert!(ok);
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let id = submitted["ids"][0].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = served.cli(key, &["get", &id]);
        if out.contains("completed") {
            assert!(out.contains("result    0"), "{out}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out, _) = served.cli(key, &["tail", &id]);
    assert!(ok);
    assert!(out.trim_end().ends_with("-- completed --"), "{out}");
    one_line_error(
        "cancel a completed execution",
        &served.cli(key, &["cancel", &id]),
    );
    let (ok, out, err) = served.cli(key, &["replay", &id]);
    assert!(ok && out.contains("(replay 1)"), "{out}{err}");

    // A flow from a file: a chain that passes each result on.
    let flow = r#"{"name": "peel", "members": [
        {"key": "a", "execution": {"kind": "echo", "input": "hi"}},
        {"key": "b", "execution": {"kind": "echo"}}],
        "edges": [{"from": "a", "to": "b", "pass_result": true}]}"#;
    let file = served.write("flow.json", flow.as_bytes());
    let (ok, out, err) = served.cli(key, &["flow", "create", &file, "--json"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flow_id = created["flow_id"].as_str().unwrap().to_owned();
    let b = created["members"]["b"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = served.cli(key, &["flow", "get", &flow_id]);
        if out.contains(" completed:") {
            assert!(
                out.contains("a -> b: satisfied (passes its result)"),
                "{out}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, out, _) = served.cli(key, &["get", &b]);
    assert!(out.contains(r#"result    hi"#), "{out}");
    let (ok, out, _) = served.cli(key, &["flow", "list"]);
    assert!(ok && out.contains("peel"), "{out}");
    let (ok, out, err) = served.cli(key, &["suspended"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ID "), "{out}");
    one_line_error(
        "a limit past the page",
        &served.cli(key, &["suspended", "--limit", "0"]),
    );
    let (ok, out, err) = served.cli(key, &["flow", "edges", &flow_id, "--from", "a"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("a -> b  "), "{out}");
    let cycle = served.write("cycle.json", br#"{"edges": [{"from": "b", "to": "b"}]}"#);
    one_line_error(
        "a self edge",
        &served.cli(key, &["flow", "extend", &flow_id, &cycle]),
    );

    // Event streams: the completions so far, then lease history as JSON lines.
    let (ok, out, err) = served.cli(key, &["events", "completions", "--limit", "1000"]);
    assert!(ok, "{err}");
    assert!(out.contains(&id) && out.contains(": success"), "{out}");
    assert!(err.starts_with("next: --after "), "{err}");
    let (ok, out, _) = served.cli(key, &["events", "leases", "--json"]);
    assert!(ok);
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["items"][0]["kind"], "acquired", "{page}");
    one_line_error(
        "a bad cursor",
        &served.cli(key, &["events", "signals", "--after", "yesterday"]),
    );
    let (ok, out, err) = served.cli(
        key,
        &[
            "events",
            "completions",
            "--execution",
            &id,
            "--outcome",
            "success",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.lines().count() >= 1
            && out
                .lines()
                .all(|l| l.contains(&id) && l.contains(": success")),
        "only that execution's ends: {out}"
    );
    one_line_error(
        "an outcome completions never have",
        &served.cli(key, &["events", "completions", "--outcome", "completed"]),
    );

    // Budgets: create, list with usage, reset; bad limits fail before sending.
    let (ok, out, err) = served.cli(
        key,
        &[
            "budget",
            "create",
            "calls",
            "--limit",
            "calls=10/8",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let budget: serde_json::Value = serde_json::from_str(&out).unwrap();
    let budget_id = budget["budget_id"].as_str().unwrap().to_owned();
    let (ok, out, _) = served.cli(key, &["budget", "list"]);
    assert!(
        ok && out.contains(&budget_id) && out.contains("calls"),
        "{out}"
    );
    let (ok, out, _) = served.cli(key, &["budget", "reset", &budget_id]);
    assert!(ok && out.contains("used            0"), "{out}");
    let adjust = [
        "budget",
        "adjust",
        &budget_id,
        "--dimension",
        "calls",
        "--delta",
        "7",
        "--reason",
        "imported from the old system",
    ];
    let (ok, out, err) = served.cli(key, &adjust);
    assert!(ok && out.contains("used            7"), "{out}{err}");
    let (ok, out, err) = served.cli(key, &["budget", "adjustments", &budget_id]);
    assert!(
        ok && out.contains("+7 -> 7") && out.contains("imported from"),
        "{out}{err}"
    );
    one_line_error(
        "an adjustment without a reason",
        &served.cli(
            key,
            &[
                "budget",
                "adjust",
                &budget_id,
                "--dimension",
                "calls",
                "--delta",
                "1",
                "--reason",
                "",
            ],
        ),
    );
    let (ok, out, err) = served.cli(key, &["budget", "rm", &budget_id]);
    assert!(ok && out.contains("deleted budget"), "{out}{err}");
    one_line_error(
        "a budget already deleted",
        &served.cli(key, &["budget", "rm", &budget_id]),
    );
    one_line_error(
        "a malformed limit",
        &served.cli(key, &["budget", "create", "x", "--limit", "calls"]),
    );
    one_line_error(
        "a scope the API refuses",
        &served.cli(
            key,
            &[
                "budget", "create", "x", "--scope", "lane:", "--limit", "c=1",
            ],
        ),
    );

    // Wrong or missing credentials, and an unreachable server.
    one_line_error("no key", &served.cli(None, &["list"]));
    one_line_error("bad key", &served.cli(Some("ffk_nope"), &["list"]));
    let unknown = uuid::Uuid::now_v7().to_string();
    one_line_error("unknown id", &served.cli(key, &["get", &unknown]));

    let pid = served.process.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), served.process.wait())
        .await
        .expect("the server exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let unreachable = served.cli(key, &["list"]);
    one_line_error("server gone", &unreachable);
    assert!(unreachable.2.contains("cannot reach"), "{}", unreachable.2);
}

#[test]
fn every_command_parses_without_panicking() {
    // clap checks a derived struct against its definition only when a command
    // is parsed for real (a subcommand flag named like a global one panics
    // then, not at `--help`): run each one far enough to fail cleanly.
    let id = "00000000-0000-7000-8000-000000000000";
    let commands: &[&[&str]] = &[
        &["serve", "--listen", "127.0.0.1:0"],
        &["worker"],
        &["migrate"],
        &["dev"],
        &["tenant", "create", "x"],
        &["tenant", "list"],
        &["component", "upload", "k", "f"],
        &["component", "list"],
        &["run", "k"],
        &["submit", "/nonexistent"],
        &["get", id],
        &["get", id, "--steps"],
        &["list"],
        &["cancel", id],
        &["replay", id],
        &["replay", id, "--keep-steps"],
        &["replay", id, "--revive-dependents"],
        &["schedule", "create", "s", "k", "--every-ms", "1000"],
        &["schedule", "list"],
        &["schedule", "get", id],
        &["schedule", "pause", id],
        &["schedule", "resume", id],
        &["schedule", "trigger", id],
        &["schedule", "rm", id],
        &["concurrency", "set", "kind", "k", "--max-running", "1"],
        &["concurrency", "list"],
        &["concurrency", "rm", "lane", "l"],
        &["run", "k", "--concurrency-key", "c"],
        &["revoke-lease", id],
        &["tail", id],
        &["flow", "create", "/nonexistent"],
        &["flow", "extend", id, "/nonexistent"],
        &["flow", "get", id],
        &["flow", "list"],
        &["flow", "cancel", id],
        &["events"],
        &["events", "leases", "--follow"],
        &["flow", "edges", "f", "--from", "a", "--to", "b"],
        &["suspended", "--kind", "k", "--lane", "l", "--limit", "5"],
        &[
            "budget",
            "adjust",
            "b",
            "--dimension",
            "d",
            "--delta",
            "-5",
            "--reason",
            "r",
        ],
        &["budget", "adjustments", "b", "--limit", "5"],
        &[
            "events",
            "leases",
            "--execution",
            "00000000-0000-0000-0000-000000000001",
            "--kind",
            "k",
            "--lane",
            "l",
            "--outcome",
            "renewed",
        ],
        &["budget", "create", "b", "--limit", "calls=5"],
        &[
            "grant",
            "set",
            "k",
            "--http",
            "https://x.com",
            "--config",
            "A",
        ],
        &["grant", "show", "k"],
        &["grant", "list"],
        &["grant", "rm", "k"],
        &["config", "set", "A", "--value", "v"],
        &["config", "set", "A", "--secret"],
        &["config", "list"],
        &["config", "rm", "A"],
        &[
            "tenant",
            "capabilities",
            id,
            "--set",
            "--http-allow",
            "https://x.com",
            "--config",
        ],
        &[
            "reseal-config",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
        ],
        &["signing-keys", "list"],
        &["signing-keys", "rotate", "--grace-hours", "1"],
        &[
            "signing-keys",
            "seed",
            "--kid",
            "k",
            "--secret-file",
            "/nonexistent",
        ],
        &["budget", "list"],
        &["budget", "get", id],
        &["budget", "reset", id],
        &["bench", "engine"],
        &["bench", "wasm"],
        &["bench", "signal"],
        &["bench", "flow"],
        &["bench", "schedules"],
        &["bench", "ui"],
        &["new", "Bad_Name", "--lang", "python"],
        &["bench", "languages", "--guests", "/nonexistent"],
        &["bench", "http", "--guests", "/nonexistent"],
    ];
    // All at once: the database commands each wait out a connect timeout.
    let running: Vec<_> = commands
        .iter()
        .map(|command| {
            Command::new(BIN)
                .args(*command)
                .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .env("FLOWFABRIC_URL", "http://127.0.0.1:1")
                .env("FLOWFABRIC_API_KEY", "ffk_x")
                .env("FLOWFABRIC_ADMIN_TOKEN", "x")
                .env("FLOWFABRIC_CONFIG_KEYS", flowfabric_tests::TEST_CONFIG_KEYS)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (command, child) in commands.iter().zip(running) {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?} cannot succeed here");
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            stderr
                .lines()
                .last()
                .unwrap_or_default()
                .starts_with("error: "),
            "{command:?}: {stderr}"
        );
    }
}

/// A loopback upstream for the grants test: `/auth` answers 200 only to the
/// bearer token `expected`, 401 otherwise.
async fn auth_upstream(expected: &'static str) -> u16 {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/auth",
        axum::routing::get(move |headers: HeaderMap| async move {
            let presented = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if presented == format!("Bearer {expected}") {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

// Multi-threaded: the upstream must answer while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_secrets_through_the_cli_and_the_secret_never_shows() {
    const SECRET: &str = "sekrit-value-4711-do-not-leak";
    let port = auth_upstream(SECRET).await;
    let served = Served::start().await;
    let (ok, out, err) = served.cli(None, &["tenant", "create", "acme", "--json"]);
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = created["api_key"]["token"].as_str().unwrap().to_owned();
    let key = Some(key.as_str());
    let tenant = created["tenant"]["tenant_id"].as_str().unwrap().to_owned();
    let file = served.write("testkit.wasm", &guest("testkit"));
    let (ok, out, err) = served.cli(key, &["component", "upload", "testkit", &file]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("wasi:http/outgoing-handler") && l.contains("NOT GRANTED")),
        "upload shows the ungranted import: {out}"
    );

    // Nothing may be granted until the operator raises the ceiling.
    let origin = format!("http://127.0.0.1:{port}");
    let grant = [
        "grant",
        "set",
        "testkit",
        "--http",
        &origin,
        "--config",
        "API_TOKEN",
        "--scratch-bytes",
        "65536",
    ];
    let refused = served.cli(key, &grant);
    one_line_error("grant over the ceiling", &refused);
    assert!(
        refused.2.contains("outside what the operator allows"),
        "{}",
        refused.2
    );
    let (ok, out, err) = served.cli(
        None,
        &[
            "tenant",
            "capabilities",
            &tenant,
            "--set",
            "--http-allow",
            "http://127.0.0.1:*",
            "--allow-cidr",
            "127.0.0.0/8",
            "--config",
            "--scratch-bytes",
            "1048576",
        ],
    );
    assert!(ok && out.contains("127.0.0.0/8"), "{out}{err}");
    let (ok, out, err) = served.cli(key, &grant);
    assert!(
        ok && out.contains(&origin) && out.contains("API_TOKEN") && out.contains("65536 bytes"),
        "{out}{err}"
    );

    // The secret comes from stdin and is never echoed; a plain value is.
    let (ok, out, err) = served.cli_with_input(
        key,
        &["config", "set", "API_TOKEN", "--secret"],
        SECRET.as_bytes(),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = served.cli(key, &["config", "set", "REGION", "--value", "eu-west-1"]);
    assert!(ok, "{err}");
    let (ok, listed, err) = served.cli(key, &["config", "list"]);
    assert!(
        ok && listed.contains("eu-west-1") && listed.contains("(hidden)"),
        "{listed}{err}"
    );
    let (_, listed_json, _) = served.cli(key, &["config", "list", "--json"]);

    // The guest presents the secret to the upstream, which accepts it.
    let url = format!("{origin}/auth");
    let (ok, run, err) = served.cli(
        key,
        &[
            "run",
            "testkit",
            "--input-text",
            &format!("http-auth:API_TOKEN:{url}"),
        ],
    );
    assert!(ok && run.contains("status=200"), "{run}{err}");
    let id = run
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .map(str::to_owned);
    let mut shown = vec![out, listed, listed_json, run, err];
    if let Some(id) = id {
        for args in [
            vec!["get", &id],
            vec!["get", &id, "--json"],
            vec!["tail", &id],
        ] {
            let (_, out, err) = served.cli(key, &args);
            shown.extend([out, err]);
        }
    }
    let (_, events, _) = served.cli(key, &["events", "completions", "--json"]);
    shown.push(events);
    shown.push(served.log.lock().unwrap().clone());
    for text in &shown {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }

    // The grant's scratch directory, through the whole path.
    let scratch = ["run", "testkit", "--input-text", "scratch:4"];
    let (ok, run, err) = served.cli(key, &scratch);
    assert!(ok && run.contains("wrote=4096"), "{run}{err}");

    // Removing the grant takes the capability away again.
    let (ok, _, err) = served.cli(key, &["grant", "rm", "testkit"]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (ok, run, err) = served.cli(
        key,
        &[
            "run",
            "testkit",
            "--input-text",
            &format!("http-auth:API_TOKEN:{url}"),
        ],
    );
    assert!(ok && run.contains("HttpRequestDenied"), "{run}{err}");
}

/// `get ID --steps` once the execution has completed.
async fn wait_for_steps(served: &Served, key: Option<&str>, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = served.cli(key, &["get", id, "--steps"]);
        assert!(ok, "{err}");
        if out.contains("state     completed") {
            return out;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
