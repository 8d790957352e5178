//! Subcommands of the `flowfabric` binary.

pub mod bench;
pub mod budgets;
pub mod client;
pub mod concurrency;
pub mod dev;
pub mod events;
pub mod flows;
pub mod grants;
pub mod new;
pub mod remote;
pub mod schedules;
pub mod serve;
pub mod setup;
pub mod signing_keys;
pub mod steps;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::sqlite::SqliteBackend;
use flowfabric::backend::Backend;
use flowfabric::engine::{Engine, KeyRefresh, Limits, ScannerConfig};
use flowfabric::model::WaitpointKeyState;
use flowfabric::runtime::{Runtime, RuntimeConfig, SandboxLimits};
use flowfabric::worker::WorkerConfig;

/// Connect, migrate, and wrap the backend in an engine with default limits.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<Engine> {
    connect_with(database_url, max_connections, Limits::default()).await
}

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:flowfabric.db";

/// Connect to the backend the URL names (`postgres://…`, or `sqlite:PATH`
/// for the embedded backend), migrate it, and wrap it in an engine.
pub async fn connect_with(
    database_url: &str,
    max_connections: u32,
    limits: Limits,
) -> anyhow::Result<Engine> {
    let backend: Arc<dyn Backend> = if database_url.starts_with("sqlite:") {
        Arc::new(
            SqliteBackend::connect(database_url)
                .await
                .with_context(|| format!("opening {database_url}"))?,
        )
    } else {
        Arc::new(
            PgBackend::connect(database_url, max_connections)
                .await
                .context("connecting to Postgres")?,
        )
    };
    backend.migrate().await.context("applying migrations")?;
    tracing::info!(backend = backend.name(), "storage opened and migrated");
    Ok(Engine::new(backend, limits))
}

/// How long the scanners keep what has ended, shared by `serve` and
/// `worker` (either may run the scanners).
#[derive(clap::Args, Clone)]
pub struct RetentionArgs {
    /// Days events stay readable in the event streams (completion, lease, signal).
    #[arg(long, env = "FLOWFABRIC_EVENT_RETENTION_DAYS", default_value_t = 7,
        value_parser = clap::value_parser!(u32).range(1..=3650))]
    event_retention_days: u32,
    /// Days an ended execution is kept, with its attempts, frames and steps,
    /// before it is deleted (a flow's members once the whole flow has been
    /// ended that long; a spawned child is a member of its parent's flow);
    /// 0 keeps them for ever.
    #[arg(long, env = "FLOWFABRIC_EXECUTION_RETENTION_DAYS", default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(0..=36500))]
    execution_retention_days: u32,
}

impl RetentionArgs {
    pub fn scanner_config(&self) -> ScannerConfig {
        let days = |n: u32| Duration::from_secs(u64::from(n) * 86_400);
        ScannerConfig {
            event_retention: days(self.event_retention_days),
            execution_retention: (self.execution_retention_days > 0)
                .then(|| days(self.execution_retention_days)),
            ..ScannerConfig::default()
        }
    }
}

/// Settings of the worker pool and its sandbox, shared by `worker` and `dev`.
#[derive(clap::Args, Clone)]
pub struct WorkerArgs {
    /// Executions of one tenant run at once.
    #[arg(long, env = "FLOWFABRIC_SLOTS", default_value_t = 16)]
    pub slots: usize,
    /// Slots beyond `--slots` kept for other tenants while one tenant runs
    /// `--slots` at once (default: a quarter of `--slots`, at least one).
    #[arg(long, env = "FLOWFABRIC_RESERVED_SLOTS")]
    pub reserved_slots: Option<usize>,
    /// Under a backlog of short runs, the most executions kept claimed ahead
    /// of free slots, sized by the pace of recent runs up to this (default: 64
    /// per slot; 0 turns it off).
    #[arg(long, env = "FLOWFABRIC_CLAIM_AHEAD")]
    pub claim_ahead: Option<usize>,
    /// Lanes to claim from (comma-separated).
    #[arg(
        long,
        env = "FLOWFABRIC_LANES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub lanes: Vec<String>,
    /// Capabilities this worker offers (comma-separated).
    #[arg(long, env = "FLOWFABRIC_CAPABILITIES", value_delimiter = ',')]
    pub capabilities: Vec<String>,
    /// Lease time-to-live; renewed every third of it.
    #[arg(long, env = "FLOWFABRIC_LEASE_TTL_MS", default_value_t = 30_000)]
    pub lease_ttl_ms: u64,
    /// Longest one run of a guest may take.
    #[arg(long, env = "FLOWFABRIC_TASK_TIMEOUT_MS", default_value_t = 60_000)]
    pub task_timeout_ms: u64,
    /// Linear memory cap per guest, in MiB.
    #[arg(long, env = "FLOWFABRIC_TASK_MEMORY_MIB", default_value_t = 128)]
    pub task_memory_mib: usize,
    /// Directory for compiled components (created if missing).
    #[arg(
        long,
        env = "FLOWFABRIC_CACHE_DIR",
        default_value = ".flowfabric/cache"
    )]
    pub cache_dir: std::path::PathBuf,
    /// The most compiled components in `--cache-dir` may take, in bytes; the
    /// least recently used are deleted past it (and compiled again if needed).
    #[arg(long, env = "FLOWFABRIC_CACHE_MAX_BYTES", default_value_t = 4 << 30)]
    pub cache_max_bytes: u64,
    /// Where attempts granted scratch space get their directories (default:
    /// a directory of the process's own under the system's temporary
    /// directory, removed when it exits).
    #[arg(long, env = "FLOWFABRIC_SCRATCH_DIR")]
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Guest instances kept between attempts for kinds whose grant reuses
    /// instances (`grant set --reuse-instances`), beyond the running ones;
    /// 0 keeps none, so every attempt gets a fresh instance.
    #[arg(long, env = "FLOWFABRIC_WARM_INSTANCES", default_value_t = 16)]
    pub warm_instances: u32,
    /// How long a guest's outbound HTTP connection stays open, idle, for the
    /// next request of the same tenant to the same origin; 0 opens a
    /// connection per request.
    #[arg(
        long,
        env = "FLOWFABRIC_HTTP_IDLE_TIMEOUT_MS",
        default_value_t = default_http_idle_ms()
    )]
    pub http_idle_timeout_ms: u64,
    /// How long shutdown waits for running executions before releasing them.
    #[arg(long, env = "FLOWFABRIC_DRAIN_TIMEOUT_MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,
    #[command(flatten)]
    pub config_keys: grants::ConfigKeys,
    /// Largest result one execution may return, in bytes; a larger one fails
    /// the attempt at once (`limit_exceeded`). Tenants may set lower ones.
    #[arg(long, env = "FLOWFABRIC_MAX_RESULT_BYTES", default_value_t = 4 << 20)]
    pub max_result_bytes: usize,
    /// Payload bytes of all frames of one attempt (output and logs included).
    #[arg(long, env = "FLOWFABRIC_MAX_FRAME_BYTES_PER_ATTEMPT", default_value_t = 64 << 20)]
    pub max_frame_bytes_per_attempt: u64,
    /// Children one execution may spawn.
    #[arg(
        long,
        env = "FLOWFABRIC_MAX_CHILDREN_PER_EXECUTION",
        default_value_t = 1_000
    )]
    pub max_children_per_execution: u32,
    /// Members one flow may hold, spawned children included.
    #[arg(long, env = "FLOWFABRIC_MAX_FLOW_MEMBERS", default_value_t = 10_000)]
    pub max_flow_members: u32,
    /// Waitpoints one execution may create.
    #[arg(
        long,
        env = "FLOWFABRIC_MAX_WAITPOINTS_PER_EXECUTION",
        default_value_t = 1_000
    )]
    pub max_waitpoints_per_execution: u32,
    /// Durable steps (sleeps included) one execution's journal may hold.
    #[arg(
        long,
        env = "FLOWFABRIC_MAX_STEPS_PER_EXECUTION",
        default_value_t = 1_000
    )]
    pub max_steps_per_execution: u32,
    /// Bytes of one durable step's result.
    #[arg(long, env = "FLOWFABRIC_MAX_STEP_BYTES", default_value_t = 1 << 20)]
    pub max_step_bytes: usize,
    /// Result bytes of all durable steps of one execution.
    #[arg(
        long,
        env = "FLOWFABRIC_MAX_JOURNAL_BYTES_PER_EXECUTION",
        default_value_t = 16 << 20
    )]
    pub max_journal_bytes_per_execution: u64,
    /// Bytes one tenant may keep stored (inputs, results, frames, steps), unless its
    /// own quota is lower (default: no installation quota).
    #[arg(long, env = "FLOWFABRIC_MAX_STORED_BYTES_PER_TENANT")]
    pub max_stored_bytes_per_tenant: Option<u64>,
}

const fn default_http_idle_ms() -> u64 {
    flowfabric::runtime::DEFAULT_HTTP_IDLE_TIMEOUT.as_millis() as u64
}

impl WorkerArgs {
    /// `base` with this process's caps on what guests may grow.
    pub fn limits(&self, base: Limits) -> Limits {
        Limits {
            max_result_bytes: self.max_result_bytes,
            max_frame_bytes_per_attempt: self.max_frame_bytes_per_attempt,
            max_children_per_execution: self.max_children_per_execution,
            max_flow_members: self.max_flow_members,
            max_waitpoints_per_execution: self.max_waitpoints_per_execution,
            max_steps_per_execution: self.max_steps_per_execution,
            max_step_bytes: self.max_step_bytes,
            max_journal_bytes_per_execution: self.max_journal_bytes_per_execution,
            max_stored_bytes_per_tenant: self.max_stored_bytes_per_tenant,
            ..base
        }
    }

    /// The engine with this process's keys: the operator's key that seals
    /// config values and secrets, and the stored waitpoint keys it opens
    /// (kept fresh while the returned handle lives).
    pub async fn with_keys(&self, engine: Engine) -> anyhow::Result<(Engine, KeyRefresh)> {
        let engine = engine.with_sealing_keys(self.config_keys.load()?);
        let keys = engine
            .load_waitpoint_keys()
            .await
            .context("loading the waitpoint signing keys")?;
        let signing: Vec<&str> = keys
            .iter()
            .filter(|k| k.state == WaitpointKeyState::Signing)
            .map(|k| k.kid.as_str())
            .collect();
        tracing::info!(keys = keys.len(), ?signing, "waitpoint keys loaded");
        let refresh = engine.spawn_key_refresh();
        Ok((engine, refresh))
    }

    pub fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        let config = RuntimeConfig {
            max_instances: u32::try_from(self.worker_config().capacity())?,
            max_memory_bytes: (self.task_memory_mib << 20).max(256 << 20),
            cache_dir: Some(self.cache_dir.clone()),
            cache_max_bytes: self.cache_max_bytes,
            scratch_dir: self.scratch_dir.clone(),
            warm_instances: self.warm_instances,
            http_idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            ..RuntimeConfig::default()
        };
        Ok(Arc::new(
            Runtime::new(config).context("starting the wasm runtime")?,
        ))
    }

    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            worker_id: hostname(),
            slots: self.slots,
            claim_ahead: self.claim_ahead,
            lanes: self.lanes.clone(),
            capabilities: self.capabilities.clone(),
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            sandbox: SandboxLimits {
                timeout: Duration::from_millis(self.task_timeout_ms),
                memory_bytes: self.task_memory_mib << 20,
                ..SandboxLimits::default()
            },
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            reserved_slots: self.reserved_slots,
            ..WorkerConfig::default()
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "flowfabric-worker".into())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
