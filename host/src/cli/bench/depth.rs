//! `flowfabric bench depth`: claim latency with a short queue against a long
//! one (1,000 against 1,000,000 queued by default), through the engine and
//! through the raw-SQL baseline, in the same run on the same server.
//!
//! A claim should cost the same however much waits behind it: it reads the
//! head of an index, never the queue. Each round fills a scratch database to
//! `depth` queued executions spread over `tenants` (and the baseline's table to
//! the same depth), analyses it as autovacuum would in time, then times single
//! claims one after another. Each claimed execution is completed and replaced
//! by a new one, untimed, so the depth holds while it is measured.

use std::time::Instant;

use super::scratch::{analyze, RawQueue, ScratchDatabase};
use anyhow::Context;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::NewExecution;

use super::{claim_request, complete_all, side_pool, write_json, Percentiles};
use crate::cli::connect_with;

#[derive(clap::Args)]
pub struct DepthBench {
    /// A Postgres server; the bench creates and drops its own scratch databases.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Queue depths to measure; the first is the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    queued: Vec<usize>,
    /// Tenants the queued executions are spread over.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Timed claims per depth and path (after 50 warm-up claims).
    #[arg(long, default_value_t = 1_000)]
    claims: usize,
    /// Executions each timed claim asks for (the worker pool asks for its free
    /// slots and what it claims ahead).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    path: &'static str,
    queued: usize,
    fill_s: f64,
    #[serde(flatten)]
    claim: Percentiles,
}

const WARM_UP: usize = 50;
/// Executions per create statement while filling.
const FILL_BATCH: usize = 1_000;

pub async fn run(args: DepthBench) -> anyhow::Result<()> {
    anyhow::ensure!(!args.queued.is_empty(), "give at least one depth");
    anyhow::ensure!(args.tenants >= 1, "at least one tenant");
    anyhow::ensure!(args.batch >= 1, "claim batches start at 1");
    let mut rows = Vec::new();
    for &queued in &args.queued {
        anyhow::ensure!(queued >= 1, "depths start at 1");
        let scratch = ScratchDatabase::create(&args.database_url)
            .await
            .context("creating a scratch database")?;
        let measured = measure(&scratch.url, &args, queued).await;
        scratch.drop().await?;
        rows.extend(measured?);
    }
    print(&args, &rows);
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

fn print(args: &DepthBench, rows: &[Row]) {
    println!(
        "{} timed claims of {} per row, {} tenants; claim latency in ms (ratio: p50 against the first depth)",
        args.claims, args.batch, args.tenants
    );
    println!(
        "{:<8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "path", "queued", "p50", "p95", "p99", "ratio", "fill (s)"
    );
    for r in rows {
        let first = rows.iter().find(|b| b.path == r.path).expect("itself");
        println!(
            "{:<8} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.2} {:>10.1}",
            r.path,
            r.queued,
            r.claim.p50_ms,
            r.claim.p95_ms,
            r.claim.p99_ms,
            r.claim.p50_ms / first.claim.p50_ms,
            r.fill_s
        );
    }
}

async fn measure(url: &str, args: &DepthBench, queued: usize) -> anyhow::Result<[Row; 2]> {
    let limits = Limits {
        require_component: false,
        ..Limits::default()
    };
    let engine = connect_with(url, 4, limits).await?;
    let pool = side_pool(url).await?;
    let raw = RawQueue::setup(pool.clone(), url).await?;

    let started = Instant::now();
    fill_engine(&engine, args.tenants, queued).await?;
    let engine_fill = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in payloads(queued).chunks(10 * FILL_BATCH) {
        raw.insert(chunk).await?;
    }
    let raw_fill = started.elapsed().as_secs_f64();
    analyze(&pool).await?;

    let engine_claims = time_engine_claims(&engine, args.claims, args.batch).await?;
    let raw_claims = time_raw_claims(&raw, args.claims, args.batch).await?;
    pool.close().await;
    Ok([
        Row {
            path: "raw-sql",
            queued,
            fill_s: raw_fill,
            claim: raw_claims,
        },
        Row {
            path: "engine",
            queued,
            fill_s: engine_fill,
            claim: engine_claims,
        },
    ])
}

fn payloads(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("job {i}").into_bytes()).collect()
}

fn new_execution() -> NewExecution {
    NewExecution::new("bench", b"x".to_vec())
}

/// Create `queued` executions spread evenly over `tenants` tenants, round
/// robin by batch.
async fn fill_engine(engine: &Engine, tenants: usize, queued: usize) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for i in 0..tenants {
        ids.push(engine.create_tenant(&format!("bench-{i}")).await?.tenant_id);
    }
    let batch: Vec<NewExecution> = (0..FILL_BATCH).map(|_| new_execution()).collect();
    // Batches no larger than a tenant's share, so every tenant gets work.
    let per_batch = queued.div_ceil(tenants).clamp(1, FILL_BATCH);
    let mut left = queued;
    let mut next = 0;
    while left > 0 {
        let n = left.min(per_batch);
        engine
            .create_batch(ids[next % tenants], &batch[..n])
            .await?;
        (left, next) = (left - n, next + 1);
    }
    Ok(())
}

/// Time `claims` claims of `batch`; what each claims is completed and created
/// again (for the same tenants), so the depth holds.
async fn time_engine_claims(
    engine: &Engine,
    claims: usize,
    batch: u32,
) -> anyhow::Result<Percentiles> {
    let request = claim_request(batch);
    let mut samples = Vec::with_capacity(claims);
    for i in 0..WARM_UP + claims {
        let started = Instant::now();
        let claimed = engine.claim(&request).await?;
        let took = started.elapsed();
        anyhow::ensure!(!claimed.is_empty(), "the queue ran dry");
        complete_all(engine, &claimed).await?;
        let mut per_tenant = std::collections::BTreeMap::<_, Vec<_>>::new();
        for c in &claimed {
            per_tenant
                .entry(c.lease.tenant_id)
                .or_default()
                .push(new_execution());
        }
        for (tenant, news) in per_tenant {
            engine.create_batch(tenant, &news).await?;
        }
        if i >= WARM_UP {
            samples.push(took);
        }
    }
    Ok(Percentiles::of(samples))
}

async fn time_raw_claims(raw: &RawQueue, claims: usize, batch: u32) -> anyhow::Result<Percentiles> {
    let mut samples = Vec::with_capacity(claims);
    for i in 0..WARM_UP + claims {
        let started = Instant::now();
        let ids = raw.claim(batch).await?;
        let took = started.elapsed();
        anyhow::ensure!(!ids.is_empty(), "the baseline queue ran dry");
        raw.complete_many(&ids, b"done").await?;
        raw.insert(&payloads(ids.len())).await?;
        if i >= WARM_UP {
            samples.push(took);
        }
    }
    Ok(Percentiles::of(samples))
}
