//! `flowfabric worker`: a worker pool (and the scanners) until SIGTERM.

use flowfabric::engine::Scanners;
use flowfabric::worker::WorkerPool;

use super::{connect_with, shutdown_signal, RetentionArgs, WorkerArgs};
use flowfabric::engine::Limits;

#[derive(clap::Args)]
pub struct Worker {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    worker: WorkerArgs,
    /// Do not run the scanners here (another process does).
    #[arg(long)]
    no_scanners: bool,
    #[command(flatten)]
    retention: RetentionArgs,
}

pub async fn run(args: Worker) -> anyhow::Result<()> {
    let connections = u32::try_from(args.worker.slots)? + 4;
    let engine = connect_with(
        &args.database_url,
        connections,
        args.worker.limits(Limits::default()),
    )
    .await?;
    let (engine, _key_refresh) = args.worker.with_keys(engine).await?;
    let runtime = args.worker.runtime()?;
    let scanners = (!args.no_scanners)
        .then(|| Scanners::start(engine.backend().clone(), args.retention.scanner_config()));
    let pool = WorkerPool::start(engine, runtime, args.worker.worker_config());
    eprintln!(
        "worker running with {} slots; SIGTERM or Ctrl-C drains and stops",
        args.worker.slots
    );
    shutdown_signal().await;
    eprintln!("draining…");
    pool.shutdown().await;
    if let Some(scanners) = scanners {
        scanners.shutdown().await;
    }
    Ok(())
}
