//! One user's way through a served installation with the remote commands:
//! a tenant and its limits, components, runs and steps, schedules,
//! concurrency limits, submitted batches, a flow, event streams, budgets, and
//! the errors a user meets on the way. One server for the whole way, each
//! part a function of its own, in the order a user would go.

use std::process::Command;
use std::time::Duration;

use flowfabric_tests::guest;

use super::served::{one_line_error, wait_for, Served};

#[tokio::test]
async fn remote_commands_drive_a_served_installation() {
    let mut served = Served::start().await;
    let key = a_tenant_with_limits(&served);
    let key = Some(key.as_str());
    components(&served, key);
    runs_and_steps(&served, key).await;
    schedules(&served, key).await;
    concurrency_limits(&served, key);
    let id = a_submitted_batch(&served, key).await;
    a_flow_from_a_file(&served, key).await;
    event_streams(&served, key, &id);
    budgets(&served, key);
    credentials_and_an_unreachable_server(&mut served, key).await;
}

/// Creates the tenant; returns its API key.
fn a_tenant_with_limits(served: &Served) -> String {
    let (tenant_id, key) = served.create_tenant("acme");
    let (ok, out, _) = served.cli(None, &["tenant", "list"]);
    assert!(ok && out.contains("acme"), "{out}");
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
    key
}

fn components(served: &Served, key: Option<&str>) {
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
}

async fn runs_and_steps(served: &Served, key: Option<&str>) {
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
    let steps = ["get", &stepped, "--steps"];
    let listed = wait_for(served, key, &steps, |out| {
        out.contains("state     completed")
    })
    .await;
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
}

async fn schedules(served: &Served, key: Option<&str>) {
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
    let fired = |out: &str| {
        let page: serde_json::Value = serde_json::from_str(out).unwrap();
        !page["items"].as_array().unwrap().is_empty()
    };
    wait_for(served, key, &["list", "--tag", &tag, "--json"], fired).await;
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
}

fn concurrency_limits(served: &Served, key: Option<&str>) {
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
}

/// Returns the first submitted execution, completed.
async fn a_submitted_batch(served: &Served, key: Option<&str>) -> String {
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
    let out = wait_for(served, key, &["get", &id], |out| out.contains("completed")).await;
    assert!(out.contains("result    0"), "{out}");
    let (ok, out, _) = served.cli(key, &["tail", &id]);
    assert!(ok);
    assert!(out.trim_end().ends_with("-- completed --"), "{out}");
    one_line_error(
        "cancel a completed execution",
        &served.cli(key, &["cancel", &id]),
    );
    let (ok, out, err) = served.cli(key, &["replay", &id]);
    assert!(ok && out.contains("(replay 1)"), "{out}{err}");
    id
}

async fn a_flow_from_a_file(served: &Served, key: Option<&str>) {
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
    let out = wait_for(served, key, &["flow", "get", &flow_id], |out| {
        out.contains(" completed:")
    })
    .await;
    assert!(
        out.contains("a -> b: satisfied (passes its result)"),
        "{out}"
    );
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
}

fn event_streams(served: &Served, key: Option<&str>, id: &str) {
    // Event streams: the completions so far, then lease history as JSON lines.
    let (ok, out, err) = served.cli(key, &["events", "completions", "--limit", "1000"]);
    assert!(ok, "{err}");
    assert!(out.contains(id) && out.contains(": success"), "{out}");
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
            id,
            "--outcome",
            "success",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.lines().count() >= 1
            && out
                .lines()
                .all(|l| l.contains(id) && l.contains(": success")),
        "only that execution's ends: {out}"
    );
    one_line_error(
        "an outcome completions never have",
        &served.cli(key, &["events", "completions", "--outcome", "completed"]),
    );
}

fn budgets(served: &Served, key: Option<&str>) {
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
}

async fn credentials_and_an_unreachable_server(served: &mut Served, key: Option<&str>) {
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
