//! `flowfabric serve`: the HTTP API, a worker pool and the scanners in one
//! process. Each part can be turned off to run them on separate hosts.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use flowfabric::api::ui::{SessionKey, UiConfig};
use flowfabric::api::{self, ApiConfig};
use flowfabric::engine::{Limits, Scanners};
use flowfabric::worker::WorkerPool;

use super::{connect_with, shutdown_signal, RetentionArgs, WorkerArgs};

#[derive(clap::Args)]
pub struct Serve {
    /// `postgres://…`, or `sqlite:PATH` for the embedded backend (the
    /// default; one host, every feature).
    #[arg(long, env = "DATABASE_URL", default_value = super::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Address the API listens on.
    #[arg(long, env = "FLOWFABRIC_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Enables the `/v1/admin` routes for whoever presents it.
    #[arg(long, env = "FLOWFABRIC_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Database connections for the API and scanners (the pool adds its own).
    #[arg(long, env = "FLOWFABRIC_API_CONNECTIONS", default_value_t = 16)]
    api_connections: u32,
    /// Client connections held open at once; more wait until one closes.
    #[arg(
        long,
        env = "FLOWFABRIC_MAX_CLIENT_CONNECTIONS",
        default_value_t = 10_000
    )]
    max_client_connections: usize,
    /// Largest input of one execution, in bytes.
    #[arg(long, env = "FLOWFABRIC_MAX_INPUT_BYTES", default_value_t = 1 << 20)]
    max_input_bytes: usize,
    /// Largest component upload, in bytes.
    #[arg(long, env = "FLOWFABRIC_MAX_COMPONENT_BYTES", default_value_t = 64 << 20)]
    max_component_bytes: usize,
    /// Waiting executions allowed per tenant, unless the tenant's own limit is lower.
    #[arg(long, env = "FLOWFABRIC_MAX_QUEUED")]
    max_queued: Option<u32>,
    /// Largest bulk-create body, in bytes.
    #[arg(long, env = "FLOWFABRIC_MAX_BATCH_BODY_BYTES", default_value_t = 32 << 20)]
    max_batch_body_bytes: usize,
    /// Serve the API only; workers run elsewhere.
    #[arg(long, env = "FLOWFABRIC_NO_WORKER")]
    no_worker: bool,
    /// Do not run the scanners here (another process does).
    #[arg(long, env = "FLOWFABRIC_NO_SCANNERS")]
    no_scanners: bool,
    /// Do not serve the web dashboard at `/ui`.
    #[arg(long, env = "FLOWFABRIC_NO_UI")]
    no_ui: bool,
    /// Signs dashboard sessions (64 hex digits). Give every `serve` process
    /// behind one address the same key; without one, each process makes its
    /// own at start and sessions end when it restarts.
    #[arg(long, env = "FLOWFABRIC_UI_SESSION_KEY", hide_env_values = true,
        value_parser = parse_session_key)]
    ui_session_key: Option<SessionKey>,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

fn parse_session_key(text: &str) -> Result<SessionKey, String> {
    SessionKey::from_hex(text).ok_or_else(|| "expected 64 hex digits (32 bytes)".to_owned())
}

/// How long open requests (log tails included) get after a shutdown signal.
const REQUEST_GRACE: Duration = Duration::from_secs(5);

pub async fn run(args: Serve) -> anyhow::Result<()> {
    let limits = args.worker.limits(Limits {
        max_input_bytes: args.max_input_bytes,
        max_component_bytes: args.max_component_bytes,
        max_queued: args.max_queued,
        ..Limits::default()
    });
    let pool_connections = if args.no_worker {
        0
    } else {
        u32::try_from(args.worker.slots)? + 2
    };
    let engine = connect_with(
        &args.database_url,
        args.api_connections + pool_connections,
        limits,
    )
    .await?;
    let (engine, _key_refresh) = args.worker.with_keys(engine).await?;
    let runtime = args.worker.runtime()?;
    let pool = (!args.no_worker)
        .then(|| WorkerPool::start(engine.clone(), runtime.clone(), args.worker.worker_config()));
    let mut readiness: Vec<(&'static str, api::Readiness)> = Vec::new();
    if let Some(pool) = &pool {
        readiness.push(("worker_pool", std::sync::Arc::new(pool.liveness())));
    }
    let config = ApiConfig {
        admin_token: args.admin_token.clone(),
        max_batch_body_bytes: args.max_batch_body_bytes,
        readiness,
        ui: (!args.no_ui).then(|| UiConfig {
            session_key: args
                .ui_session_key
                .clone()
                .unwrap_or_else(SessionKey::random),
        }),
        // Half the API's connections: no one tenant can hold them all.
        tenant_requests_in_flight: (args.api_connections / 2).max(1) as usize,
        ..ApiConfig::default()
    };
    let router = api::router(engine.clone(), runtime.clone(), &config);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;

    let scanners = (!args.no_scanners)
        .then(|| Scanners::start(engine.backend().clone(), args.retention.scanner_config()));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serve_limits = api::listen::ServeLimits {
        max_connections: args.max_client_connections,
        ..Default::default()
    };
    let mut server = tokio::spawn(api::listen::serve(
        listener,
        router,
        serve_limits,
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    if !args.no_ui {
        eprintln!("dashboard: http://{address}/ui (sign in with an API key)");
    }
    eprintln!(
        "serving on http://{address} ({}; admin routes {}); SIGTERM or Ctrl-C stops",
        match &pool {
            Some(_) => format!("{} worker slots", args.worker.slots),
            None => "no worker".into(),
        },
        if args.admin_token.is_some() {
            "on"
        } else {
            "off"
        }
    );
    tokio::select! {
        _ = shutdown_signal() => {}
        exited = &mut server => {
            exited.context("the HTTP server panicked")?.context("serving HTTP")?;
            anyhow::bail!("the HTTP server stopped unexpectedly");
        }
    }
    eprintln!("shutting down: draining workers and requests…");
    let _ = stop.send(true);
    if let Some(pool) = pool {
        pool.shutdown().await;
    }
    if let Some(scanners) = scanners {
        scanners.shutdown().await;
    }
    if tokio::time::timeout(REQUEST_GRACE, server).await.is_err() {
        eprintln!("open requests did not finish in {REQUEST_GRACE:?}; closing them");
    }
    Ok(())
}
