//! `bench http --database-url`: the same requests made by the Rust guest
//! running in a worker pool on a real store, where every request also meets
//! the usage metering (`http_requests`): without a budget on requests (they
//! are counted and reported once an attempt) and with one (each is reported
//! before it is sent, so a hard limit can refuse it).
//!
//! A request's cost is the difference between an execution making the
//! round's requests and one making none, submit to completed, divided by
//! the requests: what one more request costs through the worker.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowfabric::model::{
    BudgetScope, CapabilityCeiling, ComponentGrant, DimensionLimit, HardLimitAction, NewBudget,
    TenantId,
};
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};
use flowfabric::Engine;

use super::median;
use super::scratch::ScratchDatabase;
use super::steps::submit_and_wait;

/// One store and metering mode: µs a request through a worker.
#[derive(serde::Serialize)]
pub struct WorkerRow {
    pub store: &'static str,
    pub budget_on_requests: bool,
    pub us_per_request: f64,
}

/// The rows for Postgres (a scratch database on `server_url`) and a fresh
/// SQLite file, each without and with a budget on requests.
pub async fn rows(
    server_url: &str,
    wasm: &[u8],
    port: u16,
    rounds: u32,
    per_round: u32,
) -> anyhow::Result<Vec<WorkerRow>> {
    let mut rows = Vec::new();
    let scratch = ScratchDatabase::create(server_url).await?;
    let measured = store_rows("postgres", &scratch.url, wasm, port, rounds, per_round).await;
    scratch.drop().await?;
    rows.extend(measured?);
    let dir = std::env::temp_dir().join(format!("ff-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite:{}", dir.join("bench.db").display());
    let measured = store_rows("sqlite", &url, wasm, port, rounds, per_round).await;
    std::fs::remove_dir_all(&dir)?;
    rows.extend(measured?);
    Ok(rows)
}

async fn store_rows(
    store: &'static str,
    url: &str,
    wasm: &[u8],
    port: u16,
    rounds: u32,
    per_round: u32,
) -> anyhow::Result<Vec<WorkerRow>> {
    let engine = crate::cli::connect(url, 4).await?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let pool = WorkerPool::start(
        engine.clone(),
        runtime.clone(),
        WorkerConfig {
            slots: 1,
            ..WorkerConfig::default()
        },
    );
    let mut rows = Vec::new();
    for budget_on_requests in [false, true] {
        let tenant = tenant(&engine, &runtime, wasm, port, budget_on_requests).await?;
        let target = format!("http://127.0.0.1:{port}/body");
        let mut per_request = Vec::new();
        for round in 0..=rounds {
            let empty = run(&engine, tenant, &target, 0).await?;
            let full = run(&engine, tenant, &target, per_round).await?;
            // The first round warms the component, the connection and the
            // store's caches.
            if round > 0 {
                let added = full.saturating_sub(empty).as_secs_f64() * 1e6;
                per_request.push(added / f64::from(per_round));
            }
        }
        rows.push(WorkerRow {
            store,
            budget_on_requests,
            us_per_request: median(per_request),
        });
    }
    pool.shutdown().await;
    Ok(rows)
}

/// A tenant allowed the bench's loopback server, testkit registered and
/// granted it, and (`budget`) a budget on requests that never binds.
async fn tenant(
    engine: &Engine,
    runtime: &Runtime,
    wasm: &[u8],
    port: u16,
    budget: bool,
) -> anyhow::Result<TenantId> {
    let name = if budget { "budgeted" } else { "unbudgeted" };
    let tenant = engine.create_tenant(name).await?.tenant_id;
    flowfabric::components::register(engine, runtime, tenant, "testkit", wasm).await?;
    let ceiling = CapabilityCeiling {
        http_allow: vec!["http://127.0.0.1:*".into()],
        http_allow_cidrs: vec!["127.0.0.1/32".into()],
        ..Default::default()
    };
    engine.set_ceiling(tenant, &ceiling).await?;
    let grant = ComponentGrant {
        http: vec![format!("http://127.0.0.1:{port}")],
        ..Default::default()
    };
    engine.put_grant(tenant, "testkit", &grant).await?;
    if budget {
        let budget = NewBudget {
            name: "requests".into(),
            scope: BudgetScope::Tenant,
            dimensions: vec![DimensionLimit {
                dimension: "http_requests".into(),
                soft_limit: None,
                hard_limit: Some(i64::MAX as u64),
            }],
            on_hard_limit: HardLimitAction::Fail,
            reset_interval_ms: None,
        };
        engine.create_budget(tenant, budget).await?;
    }
    Ok(tenant)
}

/// Submit to completed for testkit making `requests` GETs of `url`.
async fn run(
    engine: &Engine,
    tenant: TenantId,
    url: &str,
    requests: u32,
) -> anyhow::Result<Duration> {
    let input = format!("http-n:{requests}:{url}");
    let (took, id) = submit_and_wait(engine, tenant, &input).await?;
    let result = engine.get(tenant, id).await?.result.unwrap_or_default();
    let expected = format!("ok={requests} error=none");
    anyhow::ensure!(
        result == expected.as_bytes(),
        "the guest's requests failed: {}",
        String::from_utf8_lossy(&result)
    );
    Ok(took)
}

/// Testkit's bytes, for the worker rows.
pub fn testkit(guests: &Path) -> anyhow::Result<Vec<u8>> {
    let path = guests.join("testkit.wasm");
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}
