//! `flowfabric bench schedules`: how fast due schedules become executions,
//! against creating the same executions with the engine's batch insert in
//! the same run.
//!
//! 10,000 schedules (1,000 in each of ten tenants, the most a tenant may
//! keep) are made due in the same second; scanner passes, as `serve` and
//! `worker` run them, fire them until none is due. The baseline creates the
//! same executions (each schedule's template at one fire time) through
//! `create_batch` in batches of the engine's largest, before and after the
//! firing; the figure is the baseline's time over the firing's (higher is
//! better; 1.0 would be as fast as the batch insert). Each scanner count runs
//! `--rounds` times on fresh databases; the table shows each round's times
//! and the median and range of the figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;

use super::scratch::ScratchDatabase;
use super::{side_pool, write_json};
use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::Backend;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::{
    Cadence, MissedPolicy, NewExecution, NewSchedule, OverlapPolicy, ScheduledExecution, TenantId,
    MAX_SCHEDULES_PER_TENANT,
};

#[derive(clap::Args)]
pub struct SchedulesBench {
    /// A Postgres server; the bench creates and drops its own scratch database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Schedules due at once (spread over tenants of 1,000).
    #[arg(long, default_value_t = 10_000)]
    schedules: u32,
    /// Scanner loops firing them concurrently (as that many processes would).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    scanners: Vec<usize>,
    /// Rounds per scanner count, each on a fresh database: the figure is
    /// their median (a single round on a shared machine can be a fifth off).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    scanners: usize,
    schedules: u32,
    fire_s: f64,
    batch_insert_s: f64,
    /// Batch insert time over firing time (target at least 0.5).
    ratio: f64,
}

pub async fn run(args: SchedulesBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1_000..=100_000).contains(&args.schedules),
        "--schedules: 1000 to 100000"
    );
    anyhow::ensure!(
        args.scanners.iter().all(|&n| (1..=64).contains(&n)),
        "--scanners: 1 to 64 each"
    );
    anyhow::ensure!((1..=50).contains(&args.rounds), "--rounds: 1 to 50");
    let mut rows = Vec::new();
    for &scanners in &args.scanners {
        for _ in 0..args.rounds {
            let scratch = ScratchDatabase::create(&args.database_url)
                .await
                .context("creating a scratch database")?;
            let result = round(&scratch.url, args.schedules, scanners).await;
            scratch.drop().await?;
            rows.push(result?);
        }
    }
    println!(
        "{} schedules due in the same second; seconds to create their executions",
        args.schedules
    );
    println!(
        "{:>8} {:>12} {:>10}  fire (s, each round) | batch insert (s)",
        "scanners", "insert/fire", "range"
    );
    for &scanners in &args.scanners {
        let of: Vec<&Row> = rows.iter().filter(|r| r.scanners == scanners).collect();
        let ratios: Vec<f64> = of.iter().map(|r| r.ratio).collect();
        println!(
            "{:>8} {:>12.2} {:>10}  {} | {}",
            scanners,
            super::median(ratios.clone()),
            super::span(&ratios),
            times(of.iter().map(|r| r.fire_s)),
            times(of.iter().map(|r| r.batch_insert_s)),
        );
    }
    write_json(args.json_out.as_deref(), &rows)
}

/// Each round's seconds, in the order they ran.
fn times(seconds: impl Iterator<Item = f64>) -> String {
    seconds
        .map(|s| format!("{s:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn template() -> ScheduledExecution {
    ScheduledExecution {
        kind: "bench".into(),
        lane: "default".into(),
        input: b"tick".to_vec(),
        priority: 0,
        tags: Default::default(),
        policy: Default::default(),
        concurrency_key: None,
    }
}

async fn round(url: &str, schedules: u32, scanners: usize) -> anyhow::Result<Row> {
    let backend = PgBackend::connect(url, u32::try_from(scanners + 4)?).await?;
    backend.migrate().await?;
    let limits = Limits {
        require_component: false,
        ..Limits::default()
    };
    let max_batch = limits.max_batch;
    let engine = Engine::new(Arc::new(backend), limits);
    let tenants = schedules.div_ceil(MAX_SCHEDULES_PER_TENANT);
    let mut made = 0;
    let mut owners: Vec<TenantId> = Vec::new();
    for t in 0..tenants {
        let tenant = engine.create_tenant(&format!("bench-{t}")).await?.tenant_id;
        owners.push(tenant);
        while made < schedules && made < (t + 1) * MAX_SCHEDULES_PER_TENANT {
            let spec = NewSchedule {
                name: format!("s{made}"),
                cadence: Cadence::Interval {
                    every_ms: 3_600_000,
                },
                jitter_ms: 0,
                missed: MissedPolicy::RunOnce,
                overlap: OverlapPolicy::Allow,
                execution: template(),
            };
            engine.create_schedule(tenant, spec).await?;
            made += 1;
        }
    }

    let baseline = || async {
        let now = Utc::now();
        let mut left = schedules as usize;
        let started = Instant::now();
        for tenant in &owners {
            let n = left.min(MAX_SCHEDULES_PER_TENANT as usize);
            left -= n;
            let news: Vec<NewExecution> = (0..n)
                .map(|_| {
                    let mut new = NewExecution::new("bench", b"tick".to_vec());
                    new.tags.insert("at".into(), now.to_rfc3339());
                    new
                })
                .collect();
            for chunk in news.chunks(max_batch) {
                engine.create_batch(*tenant, chunk).await?;
            }
        }
        anyhow::Ok(started.elapsed())
    };
    let before = baseline().await?;

    // Every schedule due now, as if the second they share had come.
    let side = side_pool(url).await?;
    sqlx::query("UPDATE schedules SET next_fire_at = now()")
        .execute(&side)
        .await?;
    let started = Instant::now();
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..scanners {
        let backend = engine.backend().clone();
        loops.spawn(async move {
            let mut fired = 0u64;
            loop {
                let n = backend.fire_due_schedules(500).await?;
                if n == 0 {
                    return anyhow::Ok(fired);
                }
                fired += n;
            }
        });
    }
    let mut fired = 0;
    while let Some(done) = loops.join_next().await {
        fired += done??;
    }
    let fire = started.elapsed();
    anyhow::ensure!(
        fired == u64::from(schedules),
        "fired {fired} executions for {schedules} schedules"
    );
    let after = baseline().await?;
    let batch_insert = (before + after) / 2;
    Ok(Row {
        scanners,
        schedules,
        fire_s: secs(fire),
        batch_insert_s: secs(batch_insert),
        ratio: batch_insert.as_secs_f64() / fire.as_secs_f64(),
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
