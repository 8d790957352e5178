//! The `flowfabric` command line.

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::Backend;

#[derive(Parser)]
#[command(
    name = "flowfabric",
    version,
    about = "Durable WebAssembly task executions on Postgres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Serve the HTTP API with a worker pool and the scanners.
    Serve(cli::serve::Serve),
    /// Run a worker pool (and the scanners) until SIGTERM, then drain.
    Worker(cli::worker::Worker),
    /// Demo: upload the example guests, run executions, show what happened.
    Dev(cli::dev::Dev),
    /// Benchmarks (figures are ratios to a baseline measured in the same run).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// create -> claim -> complete throughput, engine vs raw SQL.
    Engine(cli::bench::EngineBench),
    /// Per-task wasm overhead (pooling vs on-demand) and end-to-end cost of wasm.
    Wasm(cli::bench_wasm::WasmBench),
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate { database_url } => {
            let backend = PgBackend::connect(&database_url, 2)
                .await
                .context("connecting to the database")?;
            backend.migrate().await.context("migrating")?;
            println!("migrations applied");
        }
        Command::Serve(args) => cli::serve::run(args).await?,
        Command::Worker(args) => cli::worker::run(args).await?,
        Command::Dev(args) => cli::dev::run(args).await?,
        Command::Bench(BenchCommand::Engine(args)) => cli::bench::run(args).await?,
        Command::Bench(BenchCommand::Wasm(args)) => cli::bench_wasm::run(args).await?,
    }
    Ok(())
}
