//! `flowfabric bench signal`: suspend → signal → resume latency, against the
//! submit → start latency of a fresh execution measured in the same run.
//!
//! Both paths are timed the same way, from the API-side call (create, or
//! deliver the signal) until a claimer that sleeps on the work notification
//! holds the execution: the baseline is the engine's own wake-up path, so the
//! ratio says what a resume costs on top of it (the signal transaction, the
//! condition check, the resume). One execution is in flight at a time, so the
//! figures are latency, not throughput.

use std::time::{Duration, Instant};

use super::scratch::ScratchDatabase;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::{
    ClaimedExecution, NewExecution, NewSignal, ResumeCondition, SuspendOutcome, TenantId,
    TimeoutBehavior,
};

use super::{claim_request, write_json, Percentiles};
use crate::cli::connect_with;

#[derive(clap::Args)]
pub struct SignalBench {
    /// A Postgres server; the bench creates and drops its own scratch database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Measured round trips per path (after 20 warm-up rounds).
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Summary {
    path: &'static str,
    #[serde(flatten)]
    latency: Percentiles,
}

pub async fn run(args: SignalBench) -> anyhow::Result<()> {
    let scratch = ScratchDatabase::create(&args.database_url).await?;
    let result = measure(&scratch.url, args.rounds).await;
    scratch.drop().await?;
    let (start, resume) = result?;
    let rows = [
        summary("submit -> start", start),
        summary("signal -> resume", resume),
    ];
    println!(
        "{} rounds each, one execution in flight; milliseconds",
        args.rounds
    );
    println!("{:<18} {:>8} {:>8} {:>8}", "path", "p50", "p95", "p99");
    for r in &rows {
        println!(
            "{:<18} {:>8.2} {:>8.2} {:>8.2}",
            r.path, r.latency.p50_ms, r.latency.p95_ms, r.latency.p99_ms
        );
    }
    println!(
        "signal -> resume / submit -> start at p50: {:.2}",
        rows[1].latency.p50_ms / rows[0].latency.p50_ms
    );
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

fn summary(path: &'static str, samples: Vec<Duration>) -> Summary {
    Summary {
        path,
        latency: Percentiles::of(samples),
    }
}

async fn measure(url: &str, rounds: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let limits = Limits {
        require_component: false,
        ..Limits::default()
    };
    let engine = connect_with(url, 8, limits).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let (mut start, mut resume) = (Vec::new(), Vec::new());
    for round in 0..rounds + 20 {
        let (to_start, to_resume) = one_round(&engine, tenant).await?;
        if round >= 20 {
            start.push(to_start);
            resume.push(to_resume);
        }
    }
    Ok((start, resume))
}

/// Submit, claim (timed), suspend on a waitpoint, signal and claim again (timed).
async fn one_round(engine: &Engine, tenant: TenantId) -> anyhow::Result<(Duration, Duration)> {
    let mut wake = engine.work_signal().await?;
    wake.borrow_and_update();
    let submitted = Instant::now();
    engine
        .create(tenant, NewExecution::new("bench", b"x".to_vec()))
        .await?;
    let claimed = claim_when_woken(engine, &mut wake).await?;
    let to_start = submitted.elapsed();

    let waitpoint = engine.create_waitpoint(&claimed.lease, "go", None).await?;
    let condition = ResumeCondition::Waitpoint { key: "go".into() };
    let outcome = engine
        .suspend(&claimed.lease, condition, None, TimeoutBehavior::Fail)
        .await?;
    anyhow::ensure!(
        outcome == SuspendOutcome::Suspended,
        "expected a suspension"
    );
    wake.borrow_and_update();
    let signalled = Instant::now();
    let signal = NewSignal {
        name: "go".into(),
        payload: Vec::new(),
        idempotency_key: None,
    };
    engine.deliver_signal(&waitpoint.token, signal).await?;
    let resumed = claim_when_woken(engine, &mut wake).await?;
    let to_resume = signalled.elapsed();
    anyhow::ensure!(resumed.resumed_from.is_some(), "expected a resume claim");
    engine.complete(&resumed.lease, b"done").await?;
    Ok((to_start, to_resume))
}

/// Sleep on the work notification, then claim; as a worker does.
async fn claim_when_woken(
    engine: &Engine,
    wake: &mut tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<ClaimedExecution> {
    let request = claim_request(1);
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.changed()).await;
        if let Some(claimed) = engine.claim(&request).await?.pop() {
            return Ok(claimed);
        }
    }
}
