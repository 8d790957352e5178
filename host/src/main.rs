//! The `flowfabric` command line.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flowfabric",
    version,
    about = "Durable WebAssembly task executions on Postgres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: cli::client::Connection,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate {
        /// `postgres://…`, or `sqlite:PATH` for the embedded backend.
        #[arg(long, env = "DATABASE_URL", default_value = cli::DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Serve the HTTP API with a worker pool and the scanners.
    Serve(cli::serve::Serve),
    /// Run a worker pool (and the scanners) until SIGTERM, then drain.
    Worker(cli::worker::Worker),
    /// Manage tenants (needs the server's admin token).
    #[command(subcommand)]
    Tenant(cli::setup::TenantCommand),
    /// Upload and list components.
    #[command(subcommand)]
    Component(cli::setup::ComponentCommand),
    /// Submit an execution, print its frames as they stream, then its result.
    Run(cli::remote::Run),
    /// Submit executions in bulk from a JSON-lines file.
    Submit(cli::remote::Submit),
    /// Create, extend, show, list and cancel flows (executions with dependencies).
    #[command(subcommand)]
    Flow(cli::flows::FlowCommand),
    /// Show one execution and its result.
    Get {
        id: String,
        /// Also list its recorded durable steps.
        #[arg(long)]
        steps: bool,
    },
    /// List executions, oldest first.
    List(cli::remote::List),
    /// List suspended executions: why each waits, what resumes it, its waitpoints.
    Suspended(cli::remote::Suspended),
    /// Cancel an execution.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take the lease from whoever runs an execution; it runs again as a new attempt.
    RevokeLease { id: String },
    /// Run an execution that ended again, as a new attempt (with a fresh journal of steps).
    Replay {
        id: String,
        /// Keep its journal: the new run skips the steps earlier runs recorded.
        #[arg(long)]
        keep_steps: bool,
        /// For a flow member: also bring back the dependents its failure skipped.
        #[arg(long)]
        revive_dependents: bool,
    },
    /// Follow an execution's frames until it ends.
    Tail { id: String },
    /// Read or follow an event stream: completions, lease history, signal delivery.
    Events(cli::events::Events),
    /// Grant a component kind outbound HTTP origins and config values.
    #[command(subcommand)]
    Grant(cli::grants::GrantCommand),
    /// Set, list and delete the tenant's config values and secrets.
    #[command(subcommand)]
    Config(cli::grants::ConfigCommand),
    /// Re-seal every config value and waitpoint key under the first of the config keys (after a rotation).
    ResealConfig(cli::grants::Reseal),
    /// List, rotate and seed the keys that sign waitpoint tokens.
    #[command(subcommand)]
    SigningKeys(cli::signing_keys::SigningKeysCommand),
    /// Limits per concurrency key (a customer id, say), per kind or lane.
    #[command(subcommand)]
    Concurrency(cli::concurrency::ConcurrencyCommand),
    /// Define budgets, read their usage, reset them.
    #[command(subcommand)]
    Budget(cli::budgets::BudgetCommand),
    /// Recurring executions: create, list, pause, resume, trigger, delete schedules.
    #[command(subcommand)]
    Schedule(cli::schedules::ScheduleCommand),
    /// Create a guest project (Rust, JavaScript or Python) that builds and uploads as is.
    New(cli::new::New),
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
    Wasm(cli::bench::wasm::WasmBench),
    /// 10-node linear flows against independent executions (flows/s).
    Flow(cli::bench::flow::FlowBench),
    /// Suspend -> signal -> resume latency against submit -> start latency.
    Signal(cli::bench::signal::SignalBench),
    /// Per guest language: size, compile, first run from the artifact cache, per-task cost.
    Languages(cli::bench::languages::LanguagesBench),
    /// From `flowfabric new` to the first result, per language, as a newcomer runs it.
    Newcomer(cli::bench::newcomer::NewcomerBench),
    /// Claim latency with a short queue against a long one (1k vs 1M queued).
    Depth(cli::bench::depth::DepthBench),
    /// Submit -> start latency at fixed offered loads, against raw SQL.
    Latency(cli::bench::latency::LatencyBench),
    /// A backlog of wasm executions drained by the worker pool, end to end.
    Pool(cli::bench::pool::PoolBench),
    /// One tenant's trivial executions beside another's spinning guests, against alone.
    Fairness(cli::bench::fairness::FairnessBench),
    /// A guest's outbound HTTP request through the host, against the host making it directly.
    Http(cli::bench::http::HttpBench),
    /// A durable step against a frame append, and a 3-step guest end to end against none.
    Steps(cli::bench::steps::StepsBench),
    /// 10,000 schedules due at once fired into executions, against a batch insert of them.
    Schedules(cli::bench::schedules::SchedulesBench),
    /// The dashboard's executions page at 1k and 1M executions in the tenant.
    Ui(cli::bench::ui::UiBench),
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            cli::connect(&database_url, 2).await?;
            println!("migrations applied");
        }
        Command::Serve(args) => cli::serve::run(args).await?,
        Command::Worker(args) => cli::worker::run(args).await?,
        Command::Dev(args) => cli::dev::run(args).await?,
        Command::New(args) => cli::new::run(args)?,
        Command::Tenant(command) => cli::setup::tenant(&cli.connection, command).await?,
        Command::Component(command) => cli::setup::component(&cli.connection, command).await?,
        Command::Run(args) => cli::remote::run(&cli.connection, args).await?,
        Command::Submit(args) => cli::remote::submit(&cli.connection, args).await?,
        Command::Flow(command) => cli::flows::run(&cli.connection, command).await?,
        Command::Get { id, steps } => cli::remote::get(&cli.connection, &id, steps).await?,
        Command::List(args) => cli::remote::list(&cli.connection, args).await?,
        Command::Suspended(args) => cli::remote::suspended(&cli.connection, args).await?,
        Command::Cancel { id, reason } => cli::remote::cancel(&cli.connection, &id, reason).await?,
        Command::Replay {
            id,
            keep_steps,
            revive_dependents,
        } => cli::remote::replay(&cli.connection, &id, keep_steps, revive_dependents).await?,
        Command::RevokeLease { id } => cli::remote::revoke_lease(&cli.connection, &id).await?,
        Command::Tail { id } => cli::remote::tail(&cli.connection, &id).await?,
        Command::Events(args) => cli::events::run(&cli.connection, args).await?,
        Command::Schedule(command) => cli::schedules::run(&cli.connection, command).await?,
        Command::Budget(command) => cli::budgets::run(&cli.connection, command).await?,
        Command::Concurrency(command) => cli::concurrency::run(&cli.connection, command).await?,
        Command::Grant(command) => cli::grants::grant(&cli.connection, command).await?,
        Command::Config(command) => cli::grants::config(&cli.connection, command).await?,
        Command::ResealConfig(args) => cli::grants::reseal(args).await?,
        Command::SigningKeys(command) => cli::signing_keys::run(command).await?,
        Command::Bench(BenchCommand::Engine(args)) => cli::bench::run(args).await?,
        Command::Bench(BenchCommand::Wasm(args)) => cli::bench::wasm::run(args).await?,
        Command::Bench(BenchCommand::Http(args)) => cli::bench::http::run(args).await?,
        Command::Bench(BenchCommand::Steps(args)) => cli::bench::steps::run(args).await?,
        Command::Bench(BenchCommand::Schedules(args)) => cli::bench::schedules::run(args).await?,
        Command::Bench(BenchCommand::Ui(args)) => cli::bench::ui::run(args).await?,
        Command::Bench(BenchCommand::Signal(args)) => cli::bench::signal::run(args).await?,
        Command::Bench(BenchCommand::Flow(args)) => cli::bench::flow::run(args).await?,
        Command::Bench(BenchCommand::Languages(args)) => cli::bench::languages::run(args).await?,
        Command::Bench(BenchCommand::Newcomer(args)) => cli::bench::newcomer::run(args).await?,
        Command::Bench(BenchCommand::Depth(args)) => cli::bench::depth::run(args).await?,
        Command::Bench(BenchCommand::Latency(args)) => cli::bench::latency::run(args).await?,
        Command::Bench(BenchCommand::Pool(args)) => cli::bench::pool::run(args).await?,
        Command::Bench(BenchCommand::Fairness(args)) => cli::bench::fairness::run(args).await?,
    }
    Ok(())
}
