//! `flowfabric bench pool`: the whole product at work. A backlog of executions
//! of a real wasm component is drained by the real worker pool (claim, sandboxed
//! run, group-committed completion, outbox), and timed until the last
//! completion event is readable.
//!
//! This is the figure to set beside another job system's: graphile-worker with
//! concurrency N against a pool of N slots (`scripts/bench-peer.sh` runs both on
//! the same server). The queue-only figures and their raw-SQL ratios are in
//! `bench engine`. With `--sqlite`, each row also runs on a fresh embedded
//! SQLite file, reported as a ratio to Postgres in the same run: `--rounds`
//! pairs (Postgres, then SQLite), and the median of the pairs' ratios with
//! their range, since on a small shared machine one pair can swing by more
//! than the difference measured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dbcost::{self, PerExecution};
use super::scratch::ScratchDatabase;
use anyhow::Context;
use flowfabric::model::{CapabilityCeiling, ComponentGrant, NewExecution};
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};

use super::{median, wait_for_completions, write_json};

#[derive(clap::Args)]
pub struct PoolBench {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Where the built guests are (`noop.wasm` is used: a Rust task that
    /// hands its input back and makes no host call, as a peer's no-op job).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Run this component instead: any guest that answers `echo:TEXT`, e.g.
    /// the JavaScript or Python conformance guest
    /// (`guests/target/polyglot/js.wasm`), for the row a user of that
    /// language compares, or the Rust one (`testkit.wasm`), which imports
    /// every interface a grant can give.
    #[arg(long)]
    component: Option<PathBuf>,
    /// Each execution's input is `INPUT:N`: `echo` is answered and nothing
    /// else; with testkit, `say` also writes a durable frame.
    #[arg(long, default_value = "echo")]
    input: String,
    #[arg(long, default_value_t = 5_000)]
    executions: usize,
    /// Worker pool slots (executions run at once) to measure.
    #[arg(long, value_delimiter = ',', default_value = "4,16")]
    slots: Vec<usize>,
    /// Also run each row on a fresh SQLite file (the embedded default).
    #[arg(long)]
    sqlite: bool,
    /// Rounds per row; each figure is the median over them (with
    /// `--sqlite`, of the paired ratios).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
    /// Executions the pool may keep claimed ahead of its slots (the worker's
    /// `--claim-ahead`); its default when not given.
    #[arg(long)]
    claim_ahead: Option<usize>,
    /// Also report what each execution cost the Postgres server (WAL bytes,
    /// transactions, rows written, server CPU, and statements when the
    /// server loads `pg_stat_statements`); adds ~20 s a row for the server's
    /// counters to settle. The server must run on this host.
    #[arg(long)]
    server_cost: bool,
    /// Leave each round's scratch database on the server and print its URL,
    /// to inspect what the run wrote (`scripts/wal-breakdown.sh` reads the
    /// run's write-ahead log against it).
    #[arg(long)]
    keep_database: bool,
    /// Grant the component `reuse_instances` (and allow it in the tenant's
    /// ceiling): executions run on kept instances instead of a fresh one each.
    #[arg(long)]
    reuse_instances: bool,
}

#[derive(serde::Serialize)]
struct Row {
    slots: usize,
    executions: usize,
    process_per_s: f64,
    /// The same row on SQLite, and its ratio to Postgres (the median of
    /// the rounds' paired ratios, and their lowest and highest).
    sqlite_per_s: Option<f64>,
    sqlite_vs_postgres: Option<f64>,
    sqlite_vs_postgres_range: Option<(f64, f64)>,
    /// What each execution cost the server (with `--server-cost`).
    server_cost: Option<PerExecution>,
}

/// The kind the measured component is registered as, whichever it is.
const KIND: &str = "bench";

pub async fn run(args: PoolBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.slots.iter().all(|&s| s >= 1), "slots start at 1");
    let path = args
        .component
        .clone()
        .unwrap_or_else(|| args.guests.join("noop.wasm"));
    let wasm = std::fs::read(&path)
        .with_context(|| format!("reading {} (build the guests first)", path.display()))?;
    let mut rows = Vec::new();
    let per_s = |elapsed: Duration| args.executions as f64 / elapsed.as_secs_f64();
    for &slots in &args.slots {
        let (mut postgres, mut sqlite, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let mut server_cost = None;
        for _ in 0..args.rounds {
            let scratch = ScratchDatabase::create(&args.database_url)
                .await
                .context("creating a scratch database")?;
            let measured = round(&scratch.url, &wasm, &args, slots).await;
            if args.keep_database {
                eprintln!("kept scratch database: {}", scratch.url);
            } else {
                scratch.drop().await?;
            }
            let (elapsed, cost) = measured?;
            server_cost = server_cost.or(cost);
            let pg = per_s(elapsed);
            postgres.push(pg);
            if args.sqlite {
                let embedded = per_s(sqlite_round(&wasm, &args, slots).await?);
                sqlite.push(embedded);
                ratios.push(embedded / pg);
            }
        }
        let range = |v: &[f64]| {
            let lowest = v.iter().copied().fold(f64::INFINITY, f64::min);
            (lowest, v.iter().copied().fold(lowest, f64::max))
        };
        rows.push(Row {
            slots,
            executions: args.executions,
            process_per_s: median(postgres),
            sqlite_per_s: (!sqlite.is_empty()).then(|| median(sqlite)),
            sqlite_vs_postgres_range: (!ratios.is_empty()).then(|| range(&ratios)),
            sqlite_vs_postgres: (!ratios.is_empty()).then(|| median(ratios)),
            server_cost,
        });
    }
    println!(
        "{} executions of {} through the worker pool; completed/s{}",
        args.executions,
        path.file_name().unwrap_or_default().to_string_lossy(),
        match args.rounds {
            1 => String::new(),
            n => format!(", medians of {n} rounds"),
        }
    );
    println!(
        "{:>5} {:>12} {:>12} {:>8} {:>12}",
        "slots", "postgres", "sqlite", "ratio", "range"
    );
    for r in &rows {
        let (sqlite, ratio, range) = match (r.sqlite_per_s, r.sqlite_vs_postgres) {
            (Some(s), Some(x)) => (
                format!("{s:.0}"),
                format!("{x:.2}"),
                r.sqlite_vs_postgres_range
                    .map_or_else(String::new, |(lo, hi)| format!("{lo:.2}-{hi:.2}")),
            ),
            _ => ("-".into(), "-".into(), String::new()),
        };
        println!(
            "{:>5} {:>12.0} {:>12} {:>8} {:>12}",
            r.slots, r.process_per_s, sqlite, ratio, range
        );
    }
    for r in &rows {
        if let Some(c) = &r.server_cost {
            let statements = c
                .statements
                .map_or(String::new(), |n| format!("{n:.2} statements, "));
            println!(
                "slots {}: per execution {:.0} WAL bytes, {:.2} transactions, {statements}\
                 {:.2} rows written, {:.0} µs server CPU, {:.0} µs our process's CPU",
                r.slots,
                c.wal_bytes,
                c.transactions,
                c.rows_written,
                c.server_cpu_us,
                c.client_cpu_us
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
    flowfabric::components::register(&engine, &runtime, tenant, KIND, wasm).await?;
    if args.reuse_instances {
        let ceiling = CapabilityCeiling {
            reuse_instances: true,
            ..CapabilityCeiling::default()
        };
        engine.set_ceiling(tenant, &ceiling).await?;
        let grant = ComponentGrant {
            reuse_instances: true,
            ..ComponentGrant::default()
        };
        engine.put_grant(tenant, KIND, &grant).await?;
    }
    let backlog: Vec<NewExecution> = (0..n)
        .map(|i| NewExecution::new(KIND, format!("{}:{i}", args.input).into_bytes()))
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
        true => Some(dbcost::before_work(url).await?),
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
            let after = dbcost::after_work(url, cpu_after).await?;
            Some(after.since(&before, url, n).await?)
        }
        None => None,
    };
    Ok((elapsed, cost))
}
