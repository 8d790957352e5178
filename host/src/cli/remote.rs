//! Commands that talk to a running server over its HTTP API about
//! executions: run, submit, get, list, cancel, replay, revoke-lease, tail.
//! (Tenants and components: `setup.rs`.)
//!
//! Human-readable output by default; `--json` prints the API's JSON for
//! scripts. Frames a command follows go to stderr when a result is printed to
//! stdout, so `flowfabric run … > out` captures the result alone.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use flowfabric::api::error::ErrorBody;
use flowfabric::api::{
    BatchCreated, CancelBody, Cancelled, CreateBatch, CreateExecution, ExecutionPage,
    ExecutionResult, FrameView, LeaseRevoked, Payload, Replayed, StateChange, SuspendedPage,
};
use flowfabric::model::{Created, Execution, ExecutionPolicy, PublicState};

use super::client::{decode, path_segment, wire_name, ApiClient, Connection, NO_BODY};

/// The input of an execution, from one of three flags.
#[derive(clap::Args, Debug)]
#[group(multiple = false)]
pub struct InputArgs {
    /// Input as JSON.
    #[arg(long)]
    input: Option<String>,
    /// Input as text, sent byte for byte.
    #[arg(long)]
    input_text: Option<String>,
    /// Input read from a file, byte for byte.
    #[arg(long)]
    input_file: Option<PathBuf>,
}

/// An execution's input as the API takes it: JSON, or bytes in base64.
#[derive(Default)]
struct Input {
    json: Option<Value>,
    base64: Option<String>,
}

impl InputArgs {
    fn read(self) -> anyhow::Result<Input> {
        let base64 = |bytes: &[u8]| Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        Ok(if let Some(text) = self.input {
            let value: Value = serde_json::from_str(&text).context("--input is not JSON")?;
            Input {
                json: Some(value),
                base64: None,
            }
        } else if let Some(text) = self.input_text {
            Input {
                json: None,
                base64: base64(text.as_bytes()),
            }
        } else if let Some(path) = self.input_file {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Input {
                json: None,
                base64: base64(&bytes),
            }
        } else {
            Input::default()
        })
    }
}

#[derive(clap::Args)]
pub struct Run {
    kind: String,
    #[command(flatten)]
    input: InputArgs,
    #[arg(long)]
    lane: Option<String>,
    #[arg(long, default_value_t = 0)]
    priority: i32,
    /// Retries after a failed attempt.
    #[arg(long)]
    max_retries: Option<u32>,
    /// The tenant's concurrency limit for the kind (or lane) applies per
    /// value of this key (a customer id, say).
    #[arg(long)]
    concurrency_key: Option<String>,
    /// Submit and print the id without waiting.
    #[arg(long)]
    detach: bool,
}

#[derive(clap::Args)]
pub struct Submit {
    /// JSON lines, one execution each (the body of `POST /v1/executions`).
    file: PathBuf,
    /// Executions per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
}

#[derive(clap::Args)]
pub struct List {
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    lane: Option<String>,
    /// `key:value`
    #[arg(long)]
    tag: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after this execution id (the previous page's cursor).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(clap::Args)]
pub struct Suspended {
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    lane: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue after this execution id (the previous page's cursor).
    #[arg(long)]
    cursor: Option<String>,
}

/// Suspended executions: why each waits, what resumes it, its waitpoints.
pub async fn suspended(connection: &Connection, args: Suspended) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let mut query = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("kind", args.kind),
        ("lane", args.lane),
        ("cursor", args.cursor),
    ] {
        query.extend(value.map(|v| (name, v)));
    }
    let page: SuspendedPage = client.get_typed("/v1/suspended", &query).await?;
    if connection.json {
        return print_json(&page);
    }
    println!(
        "{:<36}  {:<16} {:<24} {:<32} WAITPOINTS",
        "ID", "KIND", "REASON", "RESUMES ON"
    );
    for s in &page.items {
        let e = &s.execution;
        let suspension = e.suspension.as_ref();
        let reason = suspension
            .and_then(|s| s.reason.as_deref())
            .or(e.blocking_reason.as_deref())
            .unwrap_or("");
        let mut resumes = suspension.map_or(String::new(), |s| s.condition.summary());
        if let Some(names) = suspension.filter(|s| !s.signal_names.is_empty()) {
            resumes.push_str(&format!(" ({})", names.signal_names.join("|")));
        }
        let waitpoints: Vec<String> = s
            .waitpoints
            .iter()
            .map(|w| format!("{} ({})", w.key, w.state))
            .collect();
        println!(
            "{:<36}  {:<16} {:<24} {:<32} {}",
            e.execution_id,
            e.kind,
            reason,
            resumes,
            waitpoints.join(", ")
        );
    }
    if let Some(cursor) = page.next_cursor {
        eprintln!("more: --cursor {cursor}");
    }
    Ok(())
}

pub async fn run(connection: &Connection, args: Run) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let input = args.input.read()?;
    let mut policy = ExecutionPolicy::default();
    if let Some(retries) = args.max_retries {
        policy.retry.max_retries = retries;
    }
    let body = CreateExecution {
        kind: args.kind,
        lane: args.lane,
        input: input.json,
        input_base64: input.base64,
        priority: args.priority,
        policy,
        concurrency_key: args.concurrency_key,
        ..CreateExecution::default()
    };
    let created: Created = client
        .typed(Method::POST, "/v1/executions", Some(&body))
        .await?;
    let id = created.execution_id.to_string();
    if args.detach {
        return if connection.json {
            print_json(&created)
        } else {
            println!("{id}");
            Ok(())
        };
    }
    eprintln!("execution {id} submitted; following it");
    let end = follow(&client, &id, connection.json, true).await?;
    finish(&id, &end, connection.json)
}

pub async fn tail(connection: &Connection, id: &str) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let end = follow(&client, id, connection.json, false).await?;
    if !connection.json {
        println!("-- {} --", end.state);
    }
    Ok(())
}

/// Print an execution's events as they arrive; returns the `end` event.
async fn follow(
    client: &ApiClient,
    id: &str,
    json_output: bool,
    frames_to_stderr: bool,
) -> anyhow::Result<ExecutionResult> {
    let mut events = Box::pin(
        client
            .events(&format!("/v1/executions/{}/stream", path_segment(id)))
            .await?,
    );
    while let Some(event) = events.next().await {
        let (name, data) = event?;
        if json_output {
            println!("{}", json!({ "event": name, "data": data }));
        }
        match name.as_str() {
            "end" => return event_as(&name, data),
            "error" => {
                let error: ErrorBody = event_as(&name, data)?;
                bail!("{} ({})", error.error, error.kind)
            }
            _ if json_output => {}
            "frame" => {
                let frame: FrameView = event_as(&name, data)?;
                let line = format!(
                    "[{}:{}] {}: {}",
                    frame.attempt,
                    frame.seq,
                    frame.frame_type,
                    payload_text(&frame.payload)
                );
                if frames_to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            "state" => {
                let change: StateChange = event_as(&name, data)?;
                eprintln!("state: {} (attempt {})", change.state, change.attempt);
            }
            _ => {}
        }
    }
    bail!("the server closed the stream before the execution ended")
}

/// An event's data as the API's type for it.
fn event_as<T: serde::de::DeserializeOwned>(name: &str, data: Value) -> anyhow::Result<T> {
    decode(&format!("a `{name}` event"), data)
}

/// Print the result; an execution that did not complete is an error.
fn finish(id: &str, end: &ExecutionResult, json_output: bool) -> anyhow::Result<()> {
    if end.state == PublicState::Completed {
        if let (false, Some(result)) = (json_output, &end.result) {
            println!("{}", payload_text(result));
        }
        return Ok(());
    }
    let reason = end
        .last_failure
        .as_ref()
        .map(|f| format!(": {}", f.message))
        .unwrap_or_default();
    bail!("execution {id} {}{reason}", end.state)
}

pub async fn submit(connection: &Connection, args: Submit) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    // Parse everything before sending anything, so a bad line submits nothing.
    let mut executions = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let execution: CreateExecution = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: not an execution (see `POST /v1/executions`)",
                args.file.display(),
                number + 1
            )
        })?;
        executions.push((number + 1, execution));
    }
    if executions.is_empty() {
        bail!("{} holds no executions", args.file.display());
    }
    let progress = if connection.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(executions.len() as u64)
    };
    let (mut created, mut existing) = (0usize, 0usize);
    let mut ids = Vec::new();
    let batch = args.batch_size.clamp(1, 1_000);
    let mut rest = executions.into_iter().peekable();
    while rest.peek().is_some() {
        let (lines, chunk): (Vec<usize>, Vec<CreateExecution>) = rest.by_ref().take(batch).unzip();
        let (first, last) = (lines[0], lines[lines.len() - 1]);
        let body = CreateBatch { executions: chunk };
        let answer: BatchCreated = client
            .typed(Method::POST, "/v1/executions/batch", Some(&body))
            .await
            .with_context(|| {
                format!(
                    "lines {first}-{last} were refused; {} executions before them were submitted",
                    created + existing
                )
            })?;
        for result in answer.results {
            if result.created {
                created += 1;
            } else {
                existing += 1;
            }
            ids.push(result.execution_id);
        }
        progress.inc(lines.len() as u64);
    }
    progress.finish_and_clear();
    if connection.json {
        return print_json(&json!({ "created": created, "existing": existing, "ids": ids }));
    }
    println!(
        "submitted {} executions ({created} new, {existing} already existed)",
        created + existing
    );
    Ok(())
}

pub async fn get(connection: &Connection, id: &str, with_steps: bool) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let id = path_segment(id);
    let execution: Execution = client
        .typed(Method::GET, &format!("/v1/executions/{id}"), NO_BODY)
        .await?;
    let result: ExecutionResult = client
        .typed(Method::GET, &format!("/v1/executions/{id}/result"), NO_BODY)
        .await?;
    let steps = match with_steps {
        true => Some(super::steps::fetch(&client, &id).await?),
        false => None,
    };
    if connection.json {
        let mut answer = json!({ "execution": execution, "result": result });
        if let Some(steps) = &steps {
            answer["steps"] = json!(steps);
        }
        return print_json(&answer);
    }
    let e = &execution;
    println!("id        {}", e.execution_id);
    println!("kind      {} (lane {})", e.kind, e.lane);
    println!("state     {}", e.state);
    if let Some(reason) = waiting_on(e) {
        println!("waiting   {reason}");
    }
    if let Some(key) = &e.concurrency_key {
        println!("key       {key}");
    }
    println!(
        "attempts  {} ({} retries, {} reclaims)",
        e.attempt_index, e.retry_count, e.reclaim_count
    );
    println!(
        "created   {}",
        e.created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    if let Some(finished) = e.finished_at {
        println!(
            "finished  {}",
            finished.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    if let Some(payload) = &result.result {
        println!("result    {}", payload_text(payload));
    }
    if let Some(failure) = &e.last_failure {
        println!(
            "failure   {} ({})",
            failure.message,
            wire_name(&failure.class)
        );
    }
    if let Some(steps) = &steps {
        super::steps::print(steps);
    }
    Ok(())
}

pub async fn list(connection: &Connection, args: List) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let mut query = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("state", args.state),
        ("kind", args.kind),
        ("lane", args.lane),
        ("tag", args.tag),
        ("cursor", args.cursor),
    ] {
        query.extend(value.map(|v| (name, v)));
    }
    let page: ExecutionPage = client.get_typed("/v1/executions", &query).await?;
    if connection.json {
        return print_json(&page);
    }
    println!(
        "{:<36}  {:<16} {:<10} {:>7}  {:<24}  WAITING ON",
        "ID", "KIND", "STATE", "ATTEMPT", "CREATED"
    );
    for e in &page.items {
        println!(
            "{:<36}  {:<16} {:<10} {:>7}  {:<24}  {}",
            e.execution_id,
            e.kind,
            e.state,
            e.attempt_index,
            e.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            waiting_on(e).unwrap_or("")
        );
    }
    if let Some(cursor) = page.next_cursor {
        eprintln!("more: --cursor {cursor}");
    }
    Ok(())
}

pub async fn cancel(
    connection: &Connection,
    id: &str,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let body = CancelBody { reason };
    let path = format!("/v1/executions/{}/cancel", path_segment(id));
    let answer: Cancelled = client.typed(Method::POST, &path, Some(&body)).await?;
    if connection.json {
        return print_json(&answer);
    }
    if answer.cancelled {
        println!("cancelled {id}");
    } else {
        println!("{id} was already cancelled");
    }
    Ok(())
}

pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A payload (`{value, base64}`) for a human: its text or JSON.
fn payload_text(payload: &Payload) -> String {
    match &payload.value {
        None | Some(Value::Null) => format!("<{} bytes>", payload.base64.len() / 4 * 3),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub async fn replay(
    connection: &Connection,
    id: &str,
    keep_steps: bool,
    revive_dependents: bool,
) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let path = format!(
        "/v1/executions/{}/replay?keep_steps={keep_steps}&revive_dependents={revive_dependents}",
        path_segment(id)
    );
    let answer: Replayed = client.typed(Method::POST, &path, NO_BODY).await?;
    if connection.json {
        return print_json(&answer);
    }
    println!("replaying {id} (replay {})", answer.replay_count);
    if revive_dependents {
        println!("revived {} skipped flow members", answer.revived.len());
        for revived in &answer.revived {
            println!("  {revived}");
        }
    }
    Ok(())
}

pub async fn revoke_lease(connection: &Connection, id: &str) -> anyhow::Result<()> {
    let client = ApiClient::tenant(connection)?;
    let path = format!("/v1/executions/{}/revoke-lease", path_segment(id));
    let answer: LeaseRevoked = client.typed(Method::POST, &path, NO_BODY).await?;
    if connection.json {
        return print_json(&answer);
    }
    println!(
        "revoked the lease of {id} (attempt {}); it runs again",
        answer.attempt_index
    );
    Ok(())
}

/// Why an execution that has not ended is not running, if it says.
fn waiting_on(e: &flowfabric::model::Execution) -> Option<&str> {
    let live = !e.state.is_terminal() && e.state != flowfabric::model::PublicState::Active;
    e.blocking_reason.as_deref().filter(|_| live)
}
