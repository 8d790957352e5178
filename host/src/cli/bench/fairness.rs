//! `flowfabric bench fairness`: what one tenant's CPU-bound guests cost
//! another tenant.
//!
//! Tenant B drains a backlog of trivial executions (a wasm echo) twice, on a
//! fresh database each time: alone, then while tenant A runs guests that spin
//! until their timeout, more of them than the pool has slots. The figures are
//! B's drain rate beside A as a ratio to its rate alone, in the same run, and
//! how long B's first execution took to complete in each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scratch::{Scratch, ScratchDatabase};
use anyhow::Context;
use flowfabric::engine::Engine;
use flowfabric::model::{NewExecution, PublicState, TenantId};
use flowfabric::runtime::{Runtime, RuntimeConfig, SandboxLimits};
use flowfabric::worker::{WorkerConfig, WorkerPool};

use super::write_json;

#[derive(clap::Args)]
pub struct FairnessBench {
    /// A Postgres server for scratch databases; without it, fresh SQLite files.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where the built guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Tenant B's trivial executions.
    #[arg(long, default_value_t = 1_000)]
    executions: usize,
    /// Tenant A's spinning guests.
    #[arg(long, default_value_t = 20)]
    busy: usize,
    /// The pool's slots per tenant (the reserve is its default).
    #[arg(long, default_value_t = 8)]
    slots: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    round: &'static str,
    per_s: f64,
    first_ms: f64,
}

pub async fn run(args: FairnessBench) -> anyhow::Result<()> {
    let wasm = std::fs::read(args.guests.join("testkit.wasm"))
        .context("reading testkit.wasm (build the guests first)")?;
    let alone = round(&args, &wasm, 0).await?;
    let beside = round(&args, &wasm, args.busy).await?;
    println!(
        "tenant B: {} wasm echoes on {} slots; tenant A: {} guests spinning until their timeout",
        args.executions, args.slots, args.busy
    );
    println!(
        "{:<12} {:>10} {:>14} {:>8}",
        "B runs", "per s", "first (ms)", "ratio"
    );
    for r in [&alone, &beside] {
        let ratio = r.per_s / alone.per_s;
        println!(
            "{:<12} {:>10.0} {:>14.1} {:>8.2}",
            r.round, r.per_s, r.first_ms, ratio
        );
    }
    write_json(args.json_out.as_deref(), &[alone, beside])?;
    Ok(())
}

/// One round on a fresh database: `busy` spinning guests of tenant A first
/// (none: B alone), then B's backlog, timed to its last completion.
async fn round(args: &FairnessBench, wasm: &[u8], busy: usize) -> anyhow::Result<Row> {
    let scratch = match &args.database_url {
        Some(server) => Scratch::Postgres(ScratchDatabase::create(server).await?),
        None => Scratch::sqlite()?,
    };
    let measured = measure(&scratch.url(), args, wasm, busy).await;
    scratch.drop().await?;
    let (elapsed, first) = measured?;
    Ok(Row {
        round: if busy == 0 { "alone" } else { "beside A" },
        per_s: args.executions as f64 / elapsed.as_secs_f64(),
        first_ms: first.as_secs_f64() * 1e3,
    })
}

async fn measure(
    url: &str,
    args: &FairnessBench,
    wasm: &[u8],
    busy: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let config = WorkerConfig {
        slots: args.slots,
        sandbox: SandboxLimits {
            timeout: Duration::from_secs(120),
            ..SandboxLimits::default()
        },
        drain_timeout: Duration::from_millis(100),
        ..WorkerConfig::default()
    };
    let engine = crate::cli::connect(url, u32::try_from(config.capacity())? + 8).await?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        max_instances: u32::try_from(config.capacity())?,
        ..RuntimeConfig::default()
    })?);
    let a = engine.create_tenant("spinning").await?.tenant_id;
    let b = engine.create_tenant("bystander").await?.tenant_id;
    for tenant in [a, b] {
        flowfabric::components::register(&engine, &runtime, tenant, "testkit", wasm).await?;
    }
    let pool = WorkerPool::start(engine.clone(), runtime, config.clone());
    let mut spinning = Vec::new();
    for _ in 0..busy {
        let new = NewExecution::new("testkit", &b"loop"[..]);
        spinning.push(engine.create(a, new).await?.execution_id);
    }
    wait_running(&engine, a, busy.min(args.slots)).await?;

    let backlog: Vec<NewExecution> = (0..args.executions)
        .map(|i| NewExecution::new("testkit", format!("echo:{i}").into_bytes()))
        .collect();
    let started = Instant::now();
    let mut ids = Vec::new();
    for chunk in backlog.chunks(engine.limits().max_batch) {
        ids.extend(
            engine
                .create_batch(b, chunk)
                .await?
                .into_iter()
                .map(|c| c.execution_id),
        );
    }
    let mut first = None;
    let mut done = 0;
    let deadline = started + Duration::from_secs(300);
    while done < ids.len() {
        anyhow::ensure!(Instant::now() < deadline, "tenant B did not drain in 300 s");
        let state = engine.state(b, ids[done]).await?.state;
        if state.is_terminal() {
            anyhow::ensure!(state == PublicState::Completed, "an echo ended {state}");
            first.get_or_insert(started.elapsed());
            done += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let elapsed = started.elapsed();
    for id in spinning {
        engine.cancel(a, id, "bench over").await?;
    }
    pool.shutdown().await;
    Ok((elapsed, first.unwrap_or(elapsed)))
}

/// Until `tenant` has `n` executions running.
async fn wait_running(engine: &Engine, tenant: TenantId, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let filter = flowfabric::model::ExecutionFilter {
            state: Some(PublicState::Active),
            limit: 1_000,
            ..Default::default()
        };
        if engine.list(tenant, filter).await?.len() >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the spinning guests never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
