//! `flowfabric dev`: the product end to end in one command. Uploads the example
//! guests, submits a handful of executions (a retry, a timeout and a suspension
//! resumed by a signal among them) and a small flow, runs them on an in-process worker pool and
//! prints what happened.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use flowfabric::engine::{Engine, ScannerConfig, Scanners};
use flowfabric::model::{
    Backoff, CapabilityCeiling, ComponentGrant, Execution, FlowEdge, FlowId, FlowMember,
    FlowSnapshot, FlowState, GraphChange, JoinPolicy, NewExecution, NewFlow, NewSignal,
    PublicState,
};
use flowfabric::model::{ExecutionId, TenantId};
use flowfabric::worker::WorkerPool;

use super::{connect_with, WorkerArgs};

#[derive(clap::Args)]
pub struct Dev {
    /// `postgres://…`, or `sqlite:PATH`; by default a fresh SQLite file of
    /// the demo's own under `.flowfabric/`, so the demo needs no server.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where the built guests (`echo.wasm`, `testkit.wasm`) are.
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    #[command(flatten)]
    worker: WorkerArgs,
}

/// A new SQLite file for this run, so every demo starts from an empty store.
fn fresh_demo_database() -> anyhow::Result<String> {
    let dir = PathBuf::from(".flowfabric");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    Ok(format!("sqlite:{}/demo-{stamp}.db", dir.display()))
}

/// One demo execution: kind, input, retries, what it shows.
type DemoRun = (&'static str, String, u32, String);

const DEMO: &[(&str, &str, u32, &str)] = &[
    (
        "echo",
        "hello from a wasm component",
        0,
        "returns its input",
    ),
    (
        "testkit",
        "fail-until:3",
        5,
        "fails twice, retried with backoff",
    ),
    ("testkit", "frames:3", 0, "streams frames and progress"),
    ("testkit", "permanent", 5, "fails permanently: not retried"),
    (
        "testkit",
        "loop",
        0,
        "spins forever: stopped by the timeout",
    ),
    (
        "testkit",
        "alloc:512",
        0,
        "allocates 512 MiB: over the memory cap",
    ),
    (
        "testkit",
        "open:/etc/passwd",
        0,
        "tries to read a host file",
    ),
    (
        "testkit",
        "wait:approval",
        0,
        "suspends on a waitpoint; the demo signals it and it resumes",
    ),
    (
        "testkit",
        "steps:step:charge;sleep:1000;fail-until:2",
        2,
        "a durable step (charge@1: made on attempt 1, once), a 1 s durable sleep, a retry",
    ),
];

/// The fixed runs, then the two that use the demo's grant: a call to a local
/// endpoint with a secret, and a call to the cloud metadata address.
fn demo_runs(endpoint: &str) -> Vec<DemoRun> {
    let mut runs: Vec<DemoRun> = DEMO
        .iter()
        .map(|(k, i, r, w)| (*k, (*i).to_owned(), *r, (*w).to_owned()))
        .collect();
    runs.push((
        "testkit",
        format!("http-auth:API_TOKEN:{endpoint}"),
        0,
        "calls a local endpoint with a granted secret (shown nowhere)".into(),
    ));
    runs.push((
        "testkit",
        "http:GET:http://169.254.169.254/latest/meta-data/".into(),
        0,
        "tries the cloud metadata address: refused".into(),
    ));
    runs
}

/// A local endpoint that answers 200 only to `Bearer <secret>`, and a grant
/// that lets `testkit` call it with the secret: the operator's ceiling
/// allows loopback, the tenant grants the origin and the secret's name.
async fn grant_demo_endpoint(engine: &Engine, tenant: TenantId) -> anyhow::Result<String> {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let expected = format!("Bearer {secret}");
    let app = axum::Router::new().route(
        "/auth",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(expected.as_str());
            async move {
                if ok {
                    (axum::http::StatusCode::OK, "welcome")
                } else {
                    (axum::http::StatusCode::UNAUTHORIZED, "who are you?")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let ceiling = CapabilityCeiling {
        // The metadata origin is allowed here only to show that its
        // address is refused all the same: no range covers it.
        http_allow: vec!["http://127.0.0.1:*".into(), "http://169.254.169.254".into()],
        http_allow_cidrs: vec!["127.0.0.1/32".into()],
        config: true,
        ..Default::default()
    };
    engine.set_ceiling(tenant, &ceiling).await?;
    let grant = ComponentGrant {
        http: vec![origin.clone(), "http://169.254.169.254".into()],
        config: vec!["API_TOKEN".into()],
        ..Default::default()
    };
    engine.put_grant(tenant, "testkit", &grant).await?;
    engine
        .put_config(tenant, "API_TOKEN", &secret, true)
        .await?;
    println!("granted `testkit` {origin} and the secret API_TOKEN");
    Ok(format!("{origin}/auth"))
}

pub async fn run(mut args: Dev) -> anyhow::Result<()> {
    args.worker.task_timeout_ms = args.worker.task_timeout_ms.min(1_000);
    args.worker.task_memory_mib = args.worker.task_memory_mib.min(64);
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => fresh_demo_database()?,
    };
    println!("database: {database_url}");
    let engine = connect_with(
        &database_url,
        20,
        args.worker.limits(flowfabric::engine::Limits::default()),
    )
    .await?;
    let runtime = args.worker.runtime()?;
    let tenant_name = format!("demo-{}", chrono::Utc::now().format("%H%M%S"));
    let tenant = engine.create_tenant(&tenant_name).await?.tenant_id;
    println!("tenant `{tenant_name}` created");

    for kind in ["echo", "testkit"] {
        let path = args.guests.join(format!("{kind}.wasm"));
        let wasm = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let (v, _) =
            flowfabric::components::register(&engine, &runtime, tenant, kind, &wasm).await?;
        println!(
            "uploaded `{kind}` v{} ({} KiB, sha256 {}…)",
            v.version,
            v.size_bytes / 1024,
            &v.digest[..12]
        );
    }

    let runs = demo_runs(&grant_demo_endpoint(&engine, tenant).await?);
    let mut ids = Vec::new();
    for (kind, input, retries, _) in &runs {
        let mut new = NewExecution::new(*kind, input.as_bytes());
        new.policy.retry.max_retries = *retries;
        new.policy.retry.backoff = Backoff::Exponential {
            initial_delay_ms: 200,
            max_delay_ms: 1_000,
            multiplier: 2.0,
            jitter: true,
        };
        ids.push(engine.create(tenant, new).await?.execution_id);
    }
    let flow = create_demo_flow(&engine, tenant).await?;
    println!(
        "submitted {} executions and a flow of 4; running them on {} slots…\n",
        ids.len(),
        args.worker.slots
    );

    let scanners = Scanners::start(
        engine.backend().clone(),
        ScannerConfig {
            delayed: Duration::from_millis(50),
            ..ScannerConfig::default()
        },
    );
    let pool = WorkerPool::start(engine.clone(), runtime, args.worker.worker_config());
    let finished = wait_all(&engine, tenant, &ids).await?;
    let flow = wait_flow(&engine, tenant, flow).await?;
    pool.shutdown().await;
    scanners.shutdown().await;

    println!(
        "{:<28} {:<10} {:>8}  result / failure",
        "input", "state", "attempts"
    );
    for ((_, input, _, what), ex) in runs.iter().zip(&finished) {
        let outcome = match (&ex.result, &ex.last_failure) {
            (Some(r), _) => format!("\"{}\"", String::from_utf8_lossy(r)),
            (None, Some(f)) => format!("{}: {}", f.class.as_str(), first_line(&f.message)),
            (None, None) => String::new(),
        };
        println!(
            "{:<28} {:<10} {:>8}  {outcome}",
            input,
            ex.state.as_str(),
            ex.attempt_index
        );
        println!("{:<28} {}", "", what);
        let frames = engine
            .read_frames(tenant, ex.execution_id, ex.attempt_index, 0, 100)
            .await?;
        if !frames.is_empty() {
            let list: Vec<String> = frames
                .iter()
                .map(|f| {
                    let text = String::from_utf8_lossy(&f.payload);
                    let text = text.trim_end();
                    match text.char_indices().nth(48) {
                        Some((cut, _)) => format!("{}={}…", f.frame_type, &text[..cut]),
                        None => format!("{}={text}", f.frame_type),
                    }
                })
                .collect();
            println!("{:<28} frames: {}", "", list.join(", "));
        }
    }
    print_flow(&engine, tenant, &flow).await
}

/// A flow: `extract` passes its result to `render`; `publish` needs both
/// `render` and `broken`, which fails, so `publish` is skipped.
async fn create_demo_flow(engine: &Engine, tenant: TenantId) -> anyhow::Result<FlowId> {
    let member = |key: &str, input: &str| {
        let mut execution = NewExecution::new("testkit", input.as_bytes());
        execution.policy.retry.max_retries = 0;
        FlowMember {
            key: key.into(),
            execution,
            join: JoinPolicy::AllOf,
        }
    };
    let edge = |from: &str, to: &str, pass_result| FlowEdge {
        from: from.into(),
        to: to.into(),
        pass_result,
    };
    let change = GraphChange {
        expected_revision: None,
        members: vec![
            member("extract", "echo:echo:quarterly report"),
            member("render", "(the result of extract)"),
            member("broken", "permanent"),
            member("publish", "echo:published"),
        ],
        edges: vec![
            edge("extract", "render", true),
            edge("render", "publish", false),
            edge("broken", "publish", false),
        ],
    };
    let flow = NewFlow {
        name: "report".into(),
        ..Default::default()
    };
    Ok(engine.create_flow(tenant, flow, change).await?.flow_id)
}

async fn wait_flow(
    engine: &Engine,
    tenant: TenantId,
    flow: FlowId,
) -> anyhow::Result<FlowSnapshot> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let snapshot = engine.backend().get_flow(tenant, flow).await?;
        if snapshot.summary.state != FlowState::Running {
            return Ok(snapshot);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the demo flow did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn print_flow(engine: &Engine, tenant: TenantId, flow: &FlowSnapshot) -> anyhow::Result<()> {
    println!(
        "\nflow `{}`: {} ({} members, {} failed)",
        flow.summary.name,
        flow.summary.state.as_str(),
        flow.summary.members,
        flow.summary.failed
    );
    for m in &flow.members {
        let ex = engine.get(tenant, m.execution_id).await?;
        let result = ex
            .result
            .as_deref()
            .map(|r| format!("\"{}\"", String::from_utf8_lossy(r)))
            .unwrap_or_default();
        println!("  {:<10} {:<10} {result}", m.key, m.state.as_str());
    }
    for e in &flow.edges {
        let passes = if e.pass_result {
            ", passes its result"
        } else {
            ""
        };
        println!("  {} -> {}: {}{passes}", e.from, e.to, e.state.as_str());
    }
    Ok(())
}

async fn wait_all(
    engine: &Engine,
    tenant: TenantId,
    ids: &[ExecutionId],
) -> anyhow::Result<Vec<Execution>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            let execution = engine.get(tenant, *id).await?;
            if execution.state == PublicState::Suspended {
                signal_open_waitpoints(engine, tenant, *id).await?;
            }
            all.push(execution);
        }
        if all.iter().all(|e| e.state.is_terminal()) {
            return Ok(all);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "executions did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Play the external system: signal every open waitpoint with its token.
async fn signal_open_waitpoints(
    engine: &Engine,
    tenant: TenantId,
    id: ExecutionId,
) -> anyhow::Result<()> {
    for w in engine
        .list_waitpoints(tenant, id, None, flowfabric::engine::MAX_WAITPOINT_PAGE)
        .await?
    {
        if w.waitpoint.state == "closed" {
            continue;
        }
        let signal = NewSignal {
            name: "approve".into(),
            payload: b"yes".to_vec(),
            idempotency_key: Some(format!("demo-{}", w.waitpoint.waitpoint_id)),
        };
        engine.deliver_signal(&w.token, signal).await?;
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}
