//! `flowfabric bench ui`: how long the dashboard takes to serve its
//! executions page (50 rows, newest first) for a tenant with few
//! executions against one with many (1,000 against 1,000,000 by default),
//! in the same run on the same server.
//!
//! The page reads one keyset page off an index, so its cost should not
//! grow with the tenant's history. Each round fills a scratch database with
//! `depth` executions of one tenant (plus a second tenant's, so the tenant
//! filter does work), analyses it, serves the real router on loopback,
//! signs in through the form as a browser does, then times whole requests:
//! sign-in cookie in, rendered HTML out. The first depth is the baseline of
//! the ratios.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use flowfabric::api::{self, ApiConfig};
use flowfabric::engine::Limits;
use flowfabric::model::NewExecution;
use flowfabric::runtime::{Runtime, RuntimeConfig};

use super::scratch::{analyze, ScratchDatabase};
use super::{side_pool, write_json, Percentiles};
use crate::cli::connect_with;

#[derive(clap::Args)]
pub struct UiBench {
    /// A Postgres server; the bench creates and drops its own scratch databases.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Executions in the tenant; the first is the baseline of the ratios.
    #[arg(long, value_delimiter = ',', default_value = "1000,1000000")]
    depths: Vec<usize>,
    /// Timed page loads per depth and page (after 20 warm-up loads).
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    page: &'static str,
    depth: usize,
    fill_s: f64,
    #[serde(flatten)]
    load: Percentiles,
}

/// The pages timed, each with what a full answer must hold: the first
/// page of executions (50 rows), a filtered one, and the overview (the
/// tenant's counts by state).
const PAGES: [(&str, &str, &str, usize); 3] = [
    ("executions", "/ui/executions", "<tr data-id=", 50),
    (
        "executions?state=waiting",
        "/ui/executions?state=waiting",
        "<tr data-id=",
        50,
    ),
    ("overview", "/ui", "id=\"state-counts\"", 1),
];
const WARM_UP: usize = 20;
const FILL_BATCH: usize = 1_000;

pub async fn run(args: UiBench) -> anyhow::Result<()> {
    anyhow::ensure!(!args.depths.is_empty(), "give at least one depth");
    anyhow::ensure!(args.requests >= 1, "time at least one request");
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let mut rows = Vec::new();
    for &depth in &args.depths {
        anyhow::ensure!(depth >= 50, "depths start at 50 (one full page)");
        let scratch = ScratchDatabase::create(&args.database_url)
            .await
            .context("creating a scratch database")?;
        let measured = measure(&scratch.url, &args, depth, runtime.clone()).await;
        scratch.drop().await?;
        rows.extend(measured?);
    }
    print(&args, &rows);
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

fn print(args: &UiBench, rows: &[Row]) {
    println!(
        "{} timed loads per row; whole request over loopback in ms (ratio: p50 against the first depth)",
        args.requests
    );
    println!(
        "{:<26} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "page", "executions", "p50", "p95", "p99", "ratio", "fill (s)"
    );
    for r in rows {
        let first = rows.iter().find(|b| b.page == r.page).expect("itself");
        println!(
            "{:<26} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.1}",
            r.page,
            r.depth,
            r.load.p50_ms,
            r.load.p95_ms,
            r.load.p99_ms,
            r.load.p50_ms / first.load.p50_ms,
            r.fill_s
        );
    }
}

async fn measure(
    url: &str,
    args: &UiBench,
    depth: usize,
    runtime: Arc<Runtime>,
) -> anyhow::Result<Vec<Row>> {
    let limits = Limits {
        require_component: false,
        ..Limits::default()
    };
    let engine = connect_with(url, 8, limits).await?;
    let tenant = engine.create_tenant("bench-ui").await?.tenant_id;
    let neighbour = engine.create_tenant("bench-ui-other").await?.tenant_id;
    let batch: Vec<NewExecution> = (0..FILL_BATCH)
        .map(|i| {
            let mut e = NewExecution::new("report", format!("job {i}").into_bytes());
            e.tags.insert("customer".into(), format!("c{}", i % 100));
            e
        })
        .collect();
    let started = Instant::now();
    let mut left = depth;
    while left > 0 {
        let n = left.min(FILL_BATCH);
        engine.create_batch(tenant, &batch[..n]).await?;
        left -= n;
    }
    let fill_s = started.elapsed().as_secs_f64();
    engine.create_batch(neighbour, &batch).await?;
    let pool = side_pool(url).await?;
    analyze(&pool).await?;
    pool.close().await;

    let key = engine.issue_api_key(tenant, "bench").await?.token;
    let router = api::router(engine, runtime, &ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(api::serve(listener, router, std::future::pending()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&client, &base, &key).await?;

    let mut rows = Vec::new();
    for (page, path, marker, count) in PAGES {
        let mut samples = Vec::with_capacity(args.requests);
        for i in 0..WARM_UP + args.requests {
            let started = Instant::now();
            let response = client
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
            let html = response.text().await?;
            let took = started.elapsed();
            anyhow::ensure!(
                html.matches(marker).count() == count,
                "{path} did not show {count} of `{marker}`"
            );
            if i >= WARM_UP {
                samples.push(took);
            }
        }
        rows.push(Row {
            page,
            depth,
            fill_s,
            load: Percentiles::of(samples),
        });
    }
    server.abort();
    Ok(rows)
}

/// Sign in through the form, as a browser does; returns the cookie to send.
async fn sign_in(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/ui/login"))
        .form(&[("token", key)])
        .send()
        .await?;
    let set = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .context("sign-in set no cookie")?;
    Ok(set.split(';').next().unwrap_or_default().to_owned())
}
