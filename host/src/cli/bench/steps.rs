//! `flowfabric bench steps`: what durable steps cost, against baselines
//! measured in the same run.
//!
//! * **Storage.** Recording a step (fenced, with its `step` frame, in one
//!   statement) against appending one durable frame, interleaved on the same
//!   held lease; and reading the journal back, per step it holds.
//! * **End to end.** A real guest through the real worker pool, one
//!   execution in flight, from submit until its completion is visible: three
//!   steps recorded, the same three handed back from the journal (a replay
//!   that keeps it), and the same guest computing the same values without
//!   steps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::scratch::ScratchDatabase;
use super::{claim_request, write_json, Percentiles};
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::{
    ExecutionId, NewExecution, NewStep, PublicState, StepOutcome, StreamMode, TenantId,
};
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};

#[derive(clap::Args)]
pub struct StepsBench {
    /// A Postgres server; the bench creates and drops its own scratch database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Where the built guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Step records and frame appends measured (after 20 warm-up each).
    #[arg(long, default_value_t = 900)]
    records: u32,
    /// Executions measured per end-to-end path (after 10 warm-up rounds).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Summary {
    frame_append: Percentiles,
    step_record: Percentiles,
    step_over_frame_p50: f64,
    journal_read_us_per_step: f64,
    guest_without_steps: Percentiles,
    guest_3_steps_recorded: Percentiles,
    guest_3_steps_from_journal: Percentiles,
}

/// The three end-to-end paths' scripts (testkit's `steps:` ops).
const PLAIN: &str = "steps:plain:a;plain:b;plain:c";
const STEPPED: &str = "steps:step:a;step:b;step:c";

pub async fn run(args: StepsBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        (20..=10_000).contains(&args.records),
        "--records: 20 to 10000"
    );
    anyhow::ensure!(args.runs >= 10, "--runs: at least 10");
    let wasm = std::fs::read(args.guests.join("testkit.wasm"))
        .context("reading testkit.wasm (build the guests first)")?;
    let scratch = ScratchDatabase::create(&args.database_url).await?;
    let result = measure(&scratch.url, &wasm, &args).await;
    scratch.drop().await?;
    let summary = result?;
    print(&summary, &args);
    write_json(args.json_out.as_deref(), &summary)
}

fn print(s: &Summary, args: &StepsBench) {
    println!(
        "storage, one held lease on Postgres, {} of each interleaved (64 B payloads):",
        args.records
    );
    println!("{:<34} {:>8} {:>8} {:>8}", "ms", "p50", "p95", "p99");
    for (name, p) in [
        ("durable frame append", s.frame_append),
        ("step record (+ its frame)", s.step_record),
    ] {
        println!(
            "{name:<34} {:>8.3} {:>8.3} {:>8.3}",
            p.p50_ms, p.p95_ms, p.p99_ms
        );
    }
    println!(
        "step record / frame append at p50: {:.2}; journal read: {:.1} µs per step",
        s.step_over_frame_p50, s.journal_read_us_per_step
    );
    println!(
        "\nend to end, submit -> completed, one at a time, {} runs each:",
        args.runs
    );
    println!("{:<34} {:>8} {:>8} {:>8}", "ms", "p50", "p95", "p99");
    for (name, p) in [
        ("guest without steps", s.guest_without_steps),
        ("guest, 3 steps recorded", s.guest_3_steps_recorded),
        (
            "guest, 3 steps from the journal",
            s.guest_3_steps_from_journal,
        ),
    ] {
        println!(
            "{name:<34} {:>8.2} {:>8.2} {:>8.2}",
            p.p50_ms, p.p95_ms, p.p99_ms
        );
    }
    println!(
        "3 steps recorded / without steps at p50: {:.2}",
        s.guest_3_steps_recorded.p50_ms / s.guest_without_steps.p50_ms
    );
}

async fn measure(url: &str, wasm: &[u8], args: &StepsBench) -> anyhow::Result<Summary> {
    let limits = Limits {
        max_steps_per_execution: args.records + 20,
        ..Limits::default()
    };
    let engine = crate::cli::connect_with(url, 8, limits).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    flowfabric::components::register(&engine, &runtime, tenant, "testkit", wasm).await?;
    let storage = storage(&engine, tenant, args.records).await?;

    let pool = WorkerPool::start(
        engine.clone(),
        runtime,
        WorkerConfig {
            slots: 2,
            ..WorkerConfig::default()
        },
    );
    let end_to_end = end_to_end(&engine, tenant, args.runs).await;
    pool.shutdown().await;
    let (plain, recorded, from_journal) = end_to_end?;
    Ok(Summary {
        step_over_frame_p50: storage.1.p50_ms / storage.0.p50_ms,
        frame_append: storage.0,
        step_record: storage.1,
        journal_read_us_per_step: storage.2,
        guest_without_steps: plain,
        guest_3_steps_recorded: recorded,
        guest_3_steps_from_journal: from_journal,
    })
}

/// Frame appends and step records interleaved on one lease, then the
/// journal read back; returns their percentiles and µs per step read.
async fn storage(
    engine: &Engine,
    tenant: TenantId,
    records: u32,
) -> anyhow::Result<(Percentiles, Percentiles, f64)> {
    engine
        .create(tenant, NewExecution::new("testkit", b"held".to_vec()))
        .await?;
    let claimed = engine
        .claim(&claim_request(1))
        .await?
        .pop()
        .context("the held execution was not claimable")?;
    let lease = &claimed.lease;
    let payload = vec![b'x'; 64];
    let (mut frames, mut steps) = (Vec::new(), Vec::new());
    for i in 0..records + 20 {
        let started = Instant::now();
        engine
            .append_frame(lease, "bench", StreamMode::Durable, &payload)
            .await?;
        let frame = started.elapsed();
        let step = NewStep {
            position: i,
            name: format!("s{i}"),
            outcome: StepOutcome::Completed(payload.clone()),
            duration_ms: 0,
        };
        let started = Instant::now();
        engine.record_step(lease, step).await?;
        let recorded = started.elapsed();
        if i >= 20 {
            frames.push(frame);
            steps.push(recorded);
        }
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let journal = engine.journal(lease).await?;
        best = best.min(started.elapsed());
        anyhow::ensure!(journal.len() == (records + 20) as usize, "a short journal");
    }
    engine.complete(lease, b"done").await?;
    let per_step_us = best.as_secs_f64() * 1e6 / f64::from(records + 20);
    Ok((Percentiles::of(frames), Percentiles::of(steps), per_step_us))
}

/// The three paths, interleaved round by round.
async fn end_to_end(
    engine: &Engine,
    tenant: TenantId,
    runs: usize,
) -> anyhow::Result<(Percentiles, Percentiles, Percentiles)> {
    let (mut plain, mut recorded, mut from_journal) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..runs + 10 {
        let (t_plain, _) = submit_and_wait(engine, tenant, PLAIN).await?;
        let (t_recorded, id) = submit_and_wait(engine, tenant, STEPPED).await?;
        let started = Instant::now();
        engine.replay(tenant, id, true).await?;
        wait_completed(engine, tenant, id).await?;
        let t_journal = started.elapsed();
        if round >= 10 {
            plain.push(t_plain);
            recorded.push(t_recorded);
            from_journal.push(t_journal);
        }
    }
    Ok((
        Percentiles::of(plain),
        Percentiles::of(recorded),
        Percentiles::of(from_journal),
    ))
}

pub(super) async fn submit_and_wait(
    engine: &Engine,
    tenant: TenantId,
    input: &str,
) -> anyhow::Result<(Duration, ExecutionId)> {
    let started = Instant::now();
    let id = engine
        .create(
            tenant,
            NewExecution::new("testkit", input.as_bytes().to_vec()),
        )
        .await?
        .execution_id;
    wait_completed(engine, tenant, id).await?;
    Ok((started.elapsed(), id))
}

/// Until the execution has completed: its state is read on every event-stream
/// wake-up of the tenant (a lease or completion event; not on frames, which
/// only the guests with steps write) and at least every 20 ms.
async fn wait_completed(engine: &Engine, tenant: TenantId, id: ExecutionId) -> anyhow::Result<()> {
    let mut wakeups = engine.event_wakeups(tenant).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match engine.state(tenant, id).await?.state {
            PublicState::Completed => return Ok(()),
            state if state.is_terminal() => anyhow::bail!("execution {id} ended {state}"),
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "execution {id} did not complete in 30 s"
        );
        let _ = tokio::time::timeout(Duration::from_millis(20), async {
            loop {
                match wakeups.recv().await {
                    Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        })
        .await;
    }
}
