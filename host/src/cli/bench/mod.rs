//! `flowfabric bench …`: one module per benchmark (`scratch` holds the scratch
//! databases and the raw-SQL baseline queue they share); this one is the
//! helpers they share and `bench engine`.
//!
//! `bench engine`: create → claim → complete throughput, engine versus
//! the raw-SQL baseline, measured in the same process against the same server.
//!
//! Each round runs in a scratch database: create N executions in batches of
//! `batch` (one statement per batch), then `workers` concurrent loops claim up to
//! `batch` at a time and complete them in one statement. Every combination of the given worker
//! counts and batch sizes is one row pair. Figures are executions per second
//! through the whole lifecycle; the ratio is what to compare across machines.

pub mod dbcost;
pub mod depth;
pub mod fairness;
pub mod flow;
pub mod http;
pub mod http_worker;
pub mod languages;
pub mod latency;
pub mod newcomer;
pub mod pool;
pub mod schedules;
pub mod scratch;
pub mod signal;
pub mod steps;
pub mod ui;
pub mod wasm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowfabric::backend::postgres::Connections;
use flowfabric::backend::postgres::PgBackend;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::{
    ClaimRequest, ClaimedExecution, EventCursor, LeaseHandle, NewExecution, TenantId, DEFAULT_LANE,
};
use scratch::{RawQueue, Scratch, ScratchDatabase};

#[derive(clap::Args)]
pub struct EngineBench {
    /// A Postgres server; the bench creates and drops its own scratch databases.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value_t = 5_000)]
    executions: usize,
    /// Concurrent claim/complete loops to measure.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    workers: Vec<usize>,
    /// Claim and create batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    batch: Vec<u32>,
    /// Also run the engine with every execution carrying one of this many
    /// concurrency keys under a limit that never binds, to measure what keys
    /// cost a claim (e.g. `--keys 10,10000`): in time, and in the server's
    /// CPU when it runs on this host.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<usize>,
    /// With `--keys`: paired rounds (an engine round without keys, then one
    /// per key count) whose cost ratios give the reported median and range.
    #[arg(long, default_value_t = 7)]
    key_rounds: usize,
    /// With `--keys`: also run the paired rounds on fresh SQLite files (the
    /// embedded default), reported in a table of their own.
    #[arg(long)]
    sqlite: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    workers: usize,
    batch: u32,
    path: &'static str,
    /// Distinct concurrency keys (engine rows with `--keys`).
    keys: Option<usize>,
    create_per_s: f64,
    process_per_s: f64,
    e2e_per_s: f64,
    /// Time in claims per execution, summed over the loops (engine rows).
    claim_us: Option<f64>,
    /// CPU the Postgres server spent per execution while they were claimed
    /// and completed (engine rows; the server must run on this host).
    server_cpu_us: Option<f64>,
}

pub async fn run(args: EngineBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch.iter().all(|&b| b >= 1), "batch sizes start at 1");
    anyhow::ensure!(
        args.workers.iter().all(|&w| w >= 1),
        "worker counts start at 1"
    );
    anyhow::ensure!(args.keys.iter().all(|&k| k >= 1), "key counts start at 1");
    anyhow::ensure!(args.key_rounds >= 1, "--key-rounds starts at 1");
    anyhow::ensure!(
        !args.sqlite || !args.keys.is_empty(),
        "--sqlite runs the key rounds on SQLite: give --keys too"
    );
    let mut rows = Vec::new();
    let mut keyed = Vec::new();
    let mut keyed_sqlite = Vec::new();
    for &workers in &args.workers {
        for &batch in &args.batch {
            rows.push(round(&args, workers, batch, Path::Raw, Store::Postgres).await?);
            rows.push(round(&args, workers, batch, Path::Engine, Store::Postgres).await?);
            keyed.extend(key_rounds(&args, workers, batch, Store::Postgres).await?);
            if args.sqlite {
                keyed_sqlite.extend(key_rounds(&args, workers, batch, Store::Sqlite).await?);
            }
        }
    }
    println!(
        "{} executions; executions/s (higher is better)",
        args.executions
    );
    println!(
        "{:>7} {:>5}  {:<8} {:>10} {:>15} {:>10} {:>14}",
        "workers", "batch", "path", "create", "claim+complete", "e2e", "engine/raw"
    );
    for pair in rows.chunks(2) {
        let ratio = pair[1].e2e_per_s / pair[0].e2e_per_s;
        for (i, r) in pair.iter().enumerate() {
            let shown = if i == 1 {
                format!("{ratio:.2}")
            } else {
                String::new()
            };
            println!(
                "{:>7} {:>5}  {:<8} {:>10.0} {:>15.0} {:>10.0} {:>14}",
                r.workers, r.batch, r.path, r.create_per_s, r.process_per_s, r.e2e_per_s, shown
            );
        }
    }
    if !keyed.is_empty() {
        println!(
            "\nconcurrency keys (a limit that never binds): claim+complete cost against no keys,"
        );
        println!("the claims alone (time in claim calls, summed over the loops, waits included);");
        println!(
            "and the server's CPU per execution (every postgres process on this host; - if none)."
        );
        print_key_costs(&args, &keyed);
    }
    if !keyed_sqlite.is_empty() {
        println!("\nthe same on fresh SQLite files (the embedded default; no server):");
        print_key_costs(&args, &keyed_sqlite);
    }
    rows.extend(
        keyed
            .into_iter()
            .chain(keyed_sqlite)
            .flat_map(|cost| cost.rows),
    );
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

/// `--key-rounds` paired rounds on `store`: an engine round without keys,
/// then one for each of `--keys`; what each key count cost against it.
async fn key_rounds(
    args: &EngineBench,
    workers: usize,
    batch: u32,
    store: Store,
) -> anyhow::Result<Vec<KeyCost>> {
    let mut costs: Vec<KeyCost> = args
        .keys
        .iter()
        .map(|&keys| KeyCost {
            workers,
            batch,
            keys,
            ratios: Vec::new(),
            claim_ratios: Vec::new(),
            cpu_ratios: Vec::new(),
            rows: Vec::new(),
        })
        .collect();
    if costs.is_empty() {
        return Ok(costs);
    }
    for _ in 0..args.key_rounds {
        let without = round(args, workers, batch, Path::Engine, store).await?;
        for cost in &mut costs {
            let with = round(args, workers, batch, Path::Keyed(cost.keys), store).await?;
            cost.ratios.push(without.process_per_s / with.process_per_s);
            if let (Some(keyed), Some(plain)) = (with.claim_us, without.claim_us) {
                cost.claim_ratios.push(keyed / plain);
            }
            // None seen (SQLite, or a server on another host): no ratio.
            if let (Some(keyed), Some(plain)) = (with.server_cpu_us, without.server_cpu_us) {
                if plain > 0.0 {
                    cost.cpu_ratios.push(keyed / plain);
                }
            }
            cost.rows.push(with);
        }
    }
    Ok(costs)
}

fn print_key_costs(args: &EngineBench, costs: &[KeyCost]) {
    println!(
        "{} paired rounds (engine without keys, then with), median and range",
        args.key_rounds
    );
    println!(
        "{:>7} {:>5}  {:>6} {:>15} {:>14} {:>13} {:>12} {:>13} {:>11} {:>13}",
        "workers",
        "batch",
        "keys",
        "claim+complete",
        "cost vs none",
        "range",
        "claim alone",
        "range",
        "server CPU",
        "range"
    );
    for cost in costs {
        let rates: Vec<f64> = cost.rows.iter().map(|r| r.process_per_s).collect();
        println!(
            "{:>7} {:>5}  {:>6} {:>15.0} {:>14.2} {:>13} {:>12.2} {:>13} {:>11} {:>13}",
            cost.workers,
            cost.batch,
            cost.keys,
            median(rates),
            median(cost.ratios.clone()),
            span(&cost.ratios),
            median(cost.claim_ratios.clone()),
            span(&cost.claim_ratios),
            shown_median(&cost.cpu_ratios),
            span(&cost.cpu_ratios),
        );
    }
}

/// Paired rounds of one key count: its rows, and each one's cost against the
/// engine round without keys just before it.
struct KeyCost {
    workers: usize,
    batch: u32,
    keys: usize,
    ratios: Vec<f64>,
    /// The claims' own time against the claims' without keys.
    claim_ratios: Vec<f64>,
    /// The server's CPU per execution against its CPU without keys.
    cpu_ratios: Vec<f64>,
    rows: Vec<Row>,
}

/// `low-high` of a set of ratios, or `-` for none.
pub(super) fn span(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "-".into();
    }
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{low:.2}-{high:.2}")
}

/// The median to two places, or `-` when there is none.
fn shown_median(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        "-".into()
    } else {
        format!("{:.2}", median(ratios.to_vec()))
    }
}

/// The middle value (the upper of the two middle ones for an even count).
pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Clone, Copy)]
enum Path {
    Raw,
    Engine,
    /// The engine, each execution with one of this many concurrency keys.
    Keyed(usize),
}

/// Where a round runs: a scratch database of the Postgres server, or (the
/// key rounds with `--sqlite`) a fresh SQLite file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Postgres,
    Sqlite,
}

async fn round(
    args: &EngineBench,
    workers: usize,
    batch: u32,
    path: Path,
    store: Store,
) -> anyhow::Result<Row> {
    let scratch = match store {
        Store::Postgres => Scratch::Postgres(
            ScratchDatabase::create(&args.database_url)
                .await
                .context("creating a scratch database")?,
        ),
        Store::Sqlite => Scratch::sqlite()?,
    };
    let measured = measure(args, &scratch.url(), workers, batch, path, store).await;
    scratch.drop().await?;
    let (create, process, claiming, server_cpu) = measured?;
    let n = args.executions as f64;
    Ok(Row {
        workers,
        batch,
        path: match (path, store) {
            (Path::Raw, _) => "raw-sql",
            (Path::Engine, _) => "engine",
            (Path::Keyed(_), Store::Postgres) => "keyed",
            (Path::Keyed(_), Store::Sqlite) => "keyed-sqlite",
        },
        keys: match path {
            Path::Keyed(keys) => Some(keys),
            _ => None,
        },
        create_per_s: n / create.as_secs_f64(),
        process_per_s: n / process.as_secs_f64(),
        e2e_per_s: n / (create + process).as_secs_f64(),
        claim_us: claiming.map(|c| c.as_secs_f64() * 1e6 / n),
        server_cpu_us: server_cpu.map(|us| us / n),
    })
}

/// Time to create, time to claim and complete, the claims' own time (engine
/// paths) and the Postgres server's CPU (engine paths on Postgres).
type Measured = (Duration, Duration, Option<Duration>, Option<f64>);

async fn measure(
    args: &EngineBench,
    url: &str,
    workers: usize,
    batch: u32,
    path: Path,
    store: Store,
) -> anyhow::Result<Measured> {
    let pool_size = u32::try_from(workers + 2)?;
    let payloads: Vec<Vec<u8>> = (0..args.executions)
        .map(|i| format!("job {i}").into_bytes())
        .collect();
    if let Path::Raw = path {
        let backend = PgBackend::connect(url, pool_size).await?;
        let queue = Arc::new(RawQueue::setup(backend.pool().clone(), url).await?);
        let started = Instant::now();
        for chunk in payloads.chunks(batch as usize) {
            queue.insert(chunk).await?;
        }
        let create = started.elapsed();
        let started = Instant::now();
        drain(workers, args.executions, {
            let queue = queue.clone();
            move || {
                let queue = queue.clone();
                async move {
                    let ids = queue.claim(batch).await?;
                    if !ids.is_empty() {
                        queue.complete_many(&ids, b"done").await?;
                    }
                    Ok(ids.len())
                }
            }
        })
        .await?;
        return Ok((create, started.elapsed(), None, None));
    }
    // No components exist here: this measures the queue path alone.
    let limits = Limits {
        require_component: false,
        ..Limits::default()
    };
    let engine = crate::cli::connect_with(url, pool_size, limits).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let keys = match path {
        Path::Keyed(keys) => Some(keys),
        _ => None,
    };
    if keys.is_some() {
        engine
            .set_concurrency_limit(tenant, never_binding_limit())
            .await?;
    }
    let news: Vec<NewExecution> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| NewExecution {
            concurrency_key: keys.map(|k| format!("key-{}", i % k)),
            ..NewExecution::new("bench", p)
        })
        .collect();
    let started = Instant::now();
    for chunk in news.chunks(batch as usize) {
        engine.create_batch(tenant, chunk).await?;
    }
    let create = started.elapsed();
    let started = Instant::now();
    let cpu = dbcost::cpu_now();
    let claiming = drain_engine(&engine, workers, args.executions, batch).await?;
    let server_cpu = match store {
        Store::Postgres => Some(dbcost::cpu_now().server_us_since(&cpu)),
        Store::Sqlite => None,
    };
    Ok((create, started.elapsed(), Some(claiming), server_cpu))
}

/// A limit on the bench kind as high as limits go: every claim does the
/// key work (the rule, the slot locks and counts, the trigger), none waits.
fn never_binding_limit() -> flowfabric::model::ConcurrencyLimit {
    flowfabric::model::ConcurrencyLimit {
        scope: flowfabric::model::ConcurrencyScope::Kind,
        name: "bench".into(),
        limit: flowfabric::model::KeyLimit {
            max_running: 100_000,
            max_starts: None,
            window_ms: None,
        },
    }
}

/// `workers` loops that claim up to `batch` executions and complete them in one
/// write, as the worker pool's group commit does for runs that end together,
/// until `total` were processed: the engine-only path both benchmarks compare
/// against. Returns the time spent in claims, summed over the loops (the
/// claims' own cost, waits for locks included, without the completions).
pub(super) async fn drain_engine(
    engine: &Engine,
    workers: usize,
    total: usize,
    batch: u32,
) -> anyhow::Result<Duration> {
    let request = claim_request(batch);
    let engine = engine.clone();
    let claiming = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let spent = claiming.clone();
    drain(workers, total, move || {
        let engine = engine.clone();
        let request = request.clone();
        let claiming = claiming.clone();
        async move {
            let started = Instant::now();
            let claimed = engine.claim(&request).await?;
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            claiming.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
            complete_all(&engine, &claimed).await?;
            Ok(claimed.len())
        }
    })
    .await?;
    Ok(Duration::from_nanos(
        spent.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// Complete every claimed execution with the same small result, in one write.
pub(super) async fn complete_all(
    engine: &Engine,
    claimed: &[ClaimedExecution],
) -> flowfabric::Result<()> {
    let completions: Vec<(LeaseHandle, &[u8])> = claimed
        .iter()
        .map(|c| (c.lease.clone(), &b"done"[..]))
        .collect();
    for written in engine.complete_many(&completions).await? {
        written?;
    }
    Ok(())
}

/// Write a bench's rows as JSON to `path`, when one was given (`--json-out`).
pub(super) fn write_json(
    path: Option<&std::path::Path>,
    rows: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A small pool of its own on `url`, for a bench's own reads and baselines,
/// so they never queue behind the engine's connections.
pub(super) async fn side_pool(url: &str) -> anyhow::Result<Connections> {
    Ok(PgBackend::connect(url, 2).await?.pool().clone())
}

/// A claim of up to `limit` executions from the default lane, as one bench
/// worker makes it.
pub(super) fn claim_request(limit: u32) -> ClaimRequest {
    ClaimRequest {
        worker_id: "bench".into(),
        worker_instance: "bench-1".into(),
        lanes: vec![DEFAULT_LANE.into()],
        capabilities: vec![],
        limit,
        lease_ttl: Duration::from_secs(60),
        exclude_tenants: Vec::new(),
    }
}

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Clone, Copy, serde::Serialize)]
pub(super) struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Percentiles {
    pub(super) fn of(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "percentiles of no samples");
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
    }
}

/// Run `workers` loops of `step` until `total` items were processed.
async fn drain<F, Fut>(workers: usize, total: usize, step: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = flowfabric::Result<usize>> + Send,
{
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let step = step.clone();
        let done = done.clone();
        tasks.spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while done.load(Relaxed) < total {
                let n = step().await?;
                if n == 0 {
                    // Nothing claimable yet (work still being created, or a
                    // flow's next node not yet promoted): back off briefly
                    // rather than spin against the database.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                done.fetch_add(n, Relaxed);
            }
            Ok::<_, flowfabric::EngineError>(())
        });
    }
    while let Some(res) = tasks.join_next().await {
        res??;
    }
    Ok(())
}

/// Follow the tenant's completion stream until `n` executions have ended;
/// fails if any did not succeed.
pub(super) async fn wait_for_completions(
    engine: &Engine,
    tenant: TenantId,
    n: usize,
) -> anyhow::Result<()> {
    let (mut cursor, mut ended) = (EventCursor::START, 0);
    while ended < n {
        let batch = engine.completion_events(tenant, cursor, 1_000).await?;
        match batch.events.last() {
            Some(last) => cursor = last.cursor,
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        anyhow::ensure!(
            batch.events.iter().all(|e| e.outcome == "success"),
            "an execution did not succeed"
        );
        ended += batch.events.len();
    }
    Ok(())
}
