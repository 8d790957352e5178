//! `flowfabric bench pool`: the whole product at work. A backlog of executions
//! of a real wasm component is drained by the real worker pool (claim, sandboxed
//! run, group-committed completion, outbox), and timed until the last
//! completion event is readable.
//!
//! This is the figure to set beside another job system's: graphile-worker with
//! concurrency N against a pool of N slots (`scripts/bench-peer.sh` runs both on
//! the same server). The queue-only figures and their raw-SQL ratios are in
//! `bench engine`. With `--sqlite`, each row also runs on a fresh embedded
//! SQLite file, reported as a ratio to Postgres in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dbcost::{self, PerExecution};
use super::scratch::ScratchDatabase;
use anyhow::Context;
use flowfabric::model::NewExecution;
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};

use super::{wait_for_completions, write_json};

#[derive(clap::Args)]
pub struct PoolBench {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Where the built guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Run this component instead of testkit: any guest that answers
    /// `echo:TEXT` with TEXT, e.g. the JavaScript or Python conformance guest
    /// (`guests/target/polyglot/js.wasm`), for the row a user of that
    /// language compares.
    #[arg(long)]
    component: Option<PathBuf>,
    #[arg(long, default_value_t = 5_000)]
    executions: usize,
    /// Worker pool slots (executions run at once) to measure.
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    slots: Vec<usize>,
    /// Also run each row on a fresh SQLite file (the embedded default).
    #[arg(long)]
    sqlite: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Executions the pool may keep claimed ahead of its slots (the worker's
    /// `--claim-ahead`); its default when not given.
    #[arg(long)]
    claim_ahead: Option<usize>,
    /// Also report what each execution cost the Postgres server (WAL bytes,
    /// transactions, rows written, server CPU); adds ~20 s a row for the
    /// server's counters to settle. The server must run on this host.
    #[arg(long)]
    server_cost: bool,
}

#[derive(serde::Serialize)]
struct Row {
    slots: usize,
    executions: usize,
    process_per_s: f64,
    /// The same row on SQLite, and its ratio to Postgres.
    sqlite_per_s: Option<f64>,
    sqlite_vs_postgres: Option<f64>,
    /// What each execution cost the server (with `--server-cost`).
    server_cost: Option<PerExecution>,
}

pub async fn run(args: PoolBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.slots.iter().all(|&s| s >= 1), "slots start at 1");
    let path = args
        .component
        .clone()
        .unwrap_or_else(|| args.guests.join("testkit.wasm"));
    let wasm = std::fs::read(&path)
        .with_context(|| format!("reading {} (build the guests first)", path.display()))?;
    let mut rows = Vec::new();
    for &slots in &args.slots {
        let scratch = ScratchDatabase::create(&args.database_url)
            .await
            .context("creating a scratch database")?;
        let measured = round(&scratch.url, &wasm, &args, slots).await;
        scratch.drop().await?;
        let (elapsed, server_cost) = measured?;
        let per_s = |elapsed: Duration| args.executions as f64 / elapsed.as_secs_f64();
        let process_per_s = per_s(elapsed);
        let sqlite_per_s = match args.sqlite {
            true => Some(per_s(sqlite_round(&wasm, &args, slots).await?)),
            false => None,
        };
        rows.push(Row {
            slots,
            executions: args.executions,
            process_per_s,
            sqlite_per_s,
            sqlite_vs_postgres: sqlite_per_s.map(|s| s / process_per_s),
            server_cost,
        });
    }
    println!(
        "{} executions of a wasm echo through the worker pool; completed/s",
        args.executions
    );
    println!(
        "{:>5} {:>12} {:>12} {:>8}",
        "slots", "postgres", "sqlite", "ratio"
    );
    for r in &rows {
        let (sqlite, ratio) = match (r.sqlite_per_s, r.sqlite_vs_postgres) {
            (Some(s), Some(x)) => (format!("{s:.0}"), format!("{x:.2}")),
            _ => ("-".into(), "-".into()),
        };
        println!(
            "{:>5} {:>12.0} {:>12} {:>8}",
            r.slots, r.process_per_s, sqlite, ratio
        );
    }
    for r in &rows {
        if let Some(c) = &r.server_cost {
            println!(
                "slots {}: per execution {:.0} WAL bytes, {:.2} transactions, {:.2} rows written, {:.0} µs server CPU",
                r.slots, c.wal_bytes, c.transactions, c.rows_written, c.server_cpu_us
            );
        }
    }
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

/// A round on a fresh SQLite file in a directory of its own, removed after.
async fn sqlite_round(wasm: &[u8], args: &PoolBench, slots: usize) -> anyhow::Result<Duration> {
    let dir = std::env::temp_dir().join(format!("ff-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite:{}", dir.join("bench.db").display());
    let measured = round(&url, wasm, args, slots).await;
    std::fs::remove_dir_all(&dir)?;
    Ok(measured?.0)
}

/// Create the backlog, then time the pool from start to the last completion
/// event; with `--server-cost` (on Postgres), read the server's counters
/// around the drain.
async fn round(
    url: &str,
    wasm: &[u8],
    args: &PoolBench,
    slots: usize,
) -> anyhow::Result<(Duration, Option<PerExecution>)> {
    let measure_cost = args.server_cost && !url.starts_with("sqlite:");
    let n = args.executions;
    let engine = crate::cli::connect(url, u32::try_from(slots)? + 4).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    flowfabric::components::register(&engine, &runtime, tenant, "testkit", wasm).await?;
    let backlog: Vec<NewExecution> = (0..n)
        .map(|i| NewExecution::new("testkit", format!("echo:{i}").into_bytes()))
        .collect();
    for chunk in backlog.chunks(engine.limits().max_batch) {
        engine.create_batch(tenant, chunk).await?;
    }
    let config = WorkerConfig {
        slots,
        claim_ahead: args.claim_ahead,
        ..WorkerConfig::default()
    };
    let before = match measure_cost {
        true => Some(dbcost::snapshot(url, dbcost::cpu_now()).await?),
        false => None,
    };
    let started = Instant::now();
    let pool = WorkerPool::start(engine.clone(), runtime, config);
    wait_for_completions(&engine, tenant, n).await?;
    let elapsed = started.elapsed();
    let cpu_after = dbcost::cpu_now();
    pool.shutdown().await;
    let cost = match before {
        Some(before) => {
            let after = dbcost::snapshot(url, cpu_after).await?;
            Some(after.since(&before, url, n).await?)
        }
        None => None,
    };
    Ok((elapsed, cost))
}
