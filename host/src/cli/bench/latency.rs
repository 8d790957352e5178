//! `flowfabric bench latency`: submit → start latency (p50/p95/p99) at fixed
//! offered loads below saturation, through the worker pool's NOTIFY wake-up
//! path, against the raw-SQL baseline's insert → claim with the same wake-up,
//! in the same run on the same server.
//!
//! Executions arrive one at a time at a steady rate (not in bulk), so the pool
//! is mostly idle and asleep on the work notification: what is measured is how
//! soon an arrival starts, not throughput. Polling is left at its default
//! (1 s), so a lost wake-up shows in the tail. Latency is read from the
//! server's own timestamps (creation, and the first attempt's start), so client
//! scheduling does not blur it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::scratch::{start_latencies, RawQueue, ScratchDatabase};
use anyhow::Context;
use flowfabric::model::NewExecution;
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};

use super::{side_pool, wait_for_completions, write_json, Percentiles};

#[derive(clap::Args)]
pub struct LatencyBench {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Where the built guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Offered loads, executions per second.
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    rates: Vec<u32>,
    /// Seconds of load per rate and path.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Worker pool slots.
    #[arg(long, default_value_t = 16)]
    slots: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    rate: u32,
    path: &'static str,
    executions: usize,
    #[serde(flatten)]
    latency: Percentiles,
}

pub async fn run(args: LatencyBench) -> anyhow::Result<()> {
    let wasm = std::fs::read(args.guests.join("testkit.wasm"))
        .context("reading testkit.wasm (build the guests first)")?;
    let mut rows = Vec::new();
    for &rate in &args.rates {
        anyhow::ensure!(rate >= 1, "rates start at 1 per second");
        let n = (rate * args.seconds) as usize;
        let raw = in_scratch(&args, |url| raw_round(url, rate, n)).await?;
        let engine = in_scratch(&args, |url| engine_round(url, &args, &wasm, rate, n)).await?;
        rows.push(Row {
            rate,
            path: "raw-sql",
            executions: n,
            latency: raw,
        });
        rows.push(Row {
            rate,
            path: "engine",
            executions: n,
            latency: engine,
        });
    }
    println!(
        "submit -> start, one arrival at a time at a steady rate, {} s each; ms",
        args.seconds
    );
    println!(
        "{:>6} {:<8} {:>8} {:>8} {:>8} {:>12}",
        "rate/s", "path", "p50", "p95", "p99", "p50 vs raw"
    );
    for pair in rows.chunks(2) {
        for r in pair {
            println!(
                "{:>6} {:<8} {:>8.2} {:>8.2} {:>8.2} {:>12.2}",
                r.rate,
                r.path,
                r.latency.p50_ms,
                r.latency.p95_ms,
                r.latency.p99_ms,
                r.latency.p50_ms / pair[0].latency.p50_ms
            );
        }
    }
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

async fn in_scratch<F, Fut>(args: &LatencyBench, round: F) -> anyhow::Result<Percentiles>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Percentiles>>,
{
    let scratch = ScratchDatabase::create(&args.database_url)
        .await
        .context("creating a scratch database")?;
    let result = round(scratch.url.clone()).await;
    scratch.drop().await?;
    result
}

/// A steady clock of `rate` ticks a second; late ticks are not bunched up.
fn arrivals(rate: u32) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

async fn engine_round(
    url: String,
    args: &LatencyBench,
    wasm: &[u8],
    rate: u32,
    n: usize,
) -> anyhow::Result<Percentiles> {
    let engine = crate::cli::connect(&url, u32::try_from(args.slots)? + 4).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    flowfabric::components::register(&engine, &runtime, tenant, "testkit", wasm).await?;
    let config = WorkerConfig {
        slots: args.slots,
        ..WorkerConfig::default()
    };
    let pool = WorkerPool::start(engine.clone(), runtime, config);
    let mut ticks = arrivals(rate);
    for _ in 0..n {
        ticks.tick().await;
        engine
            .create(tenant, NewExecution::new("testkit", b"echo:x".to_vec()))
            .await?;
    }
    wait_for_completions(&engine, tenant, n).await?;
    pool.shutdown().await;
    let samples = start_latencies(&side_pool(&url).await?).await?;
    anyhow::ensure!(samples.len() == n, "{} of {n} started", samples.len());
    Ok(Percentiles::of(samples))
}

async fn raw_round(url: String, rate: u32, n: usize) -> anyhow::Result<Percentiles> {
    let queue = Arc::new(RawQueue::setup(side_pool(&url).await?, &url).await?);
    let mut listener = queue.listen().await?;
    let consumer = tokio::spawn({
        let queue = queue.clone();
        async move {
            let mut done = 0;
            while done < n {
                loop {
                    let ids = queue.claim(16).await?;
                    for id in &ids {
                        queue.complete(*id, b"done").await?;
                    }
                    done += ids.len();
                    if ids.is_empty() {
                        break;
                    }
                }
                // As the pool does: sleep on the notification, poll each second.
                let _ = tokio::time::timeout(Duration::from_secs(1), listener.recv()).await;
            }
            anyhow::Ok(())
        }
    });
    let mut ticks = arrivals(rate);
    for _ in 0..n {
        ticks.tick().await;
        queue.insert_and_notify(b"x").await?;
    }
    consumer.await??;
    let samples = queue.start_latencies().await?;
    anyhow::ensure!(samples.len() == n, "{} of {n} claimed", samples.len());
    Ok(Percentiles::of(samples))
}
