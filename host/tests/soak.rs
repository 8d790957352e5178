//! A bounded soak: `flowfabric serve` (API, worker pool, scanners) in a process
//! of its own takes a steady load over HTTP for a while. Its resident memory
//! and its database connections must stay flat once warm, and every execution
//! must complete. `FLOWFABRIC_SOAK_SECS` sets the length (default 120 s).
//! Loopback only; stops by itself.

use std::time::Duration;

use base64::Engine as _;
use flowfabric_tests::server::TestServer;
use flowfabric_tests::{ServedProcess, TestDb};
use reqwest::Method;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_flowfabric");
const APP: &str = "flowfabric-soak";
/// Executions submitted per tick, ten ticks a second.
const PER_TICK: usize = 4;
const API_CONNECTIONS: u32 = 4;
const SLOTS: u32 = 4;
/// What `serve` may open: its API connections, plus the pool's slots and two.
const CONNECTION_CAP: i64 = (API_CONNECTIONS + SLOTS + 2) as i64;
/// Growth in resident memory allowed from the end of warm-up to the end.
const RSS_GROWTH_LIMIT: u64 = 24 << 20;

struct Sample {
    rss: u64,
    connections: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_keeps_memory_and_connections_flat() {
    let seconds: u64 = std::env::var("FLOWFABRIC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let db = TestDb::new().await;
    let cache = flowfabric_tests::ScratchDir::new("soak");
    let served = ServedProcess::start(
        BIN,
        &format!("{}?application_name={APP}", db.pg_url()),
        flowfabric_tests::server::ADMIN_TOKEN,
        &[
            "--api-connections",
            &API_CONNECTIONS.to_string(),
            "--slots",
            &SLOTS.to_string(),
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
    )
    .await;
    let server = TestServer::attach(db, served.url.clone());
    let tenant = server.tenant("soak").await;
    server.upload(&tenant, "testkit", "testkit").await;
    let inputs = ["frames:3", "echo:soak", "frames:1"];
    let batch = |tick: usize| {
        let executions: Vec<_> = (0..PER_TICK)
            .map(|i| {
                let input = inputs[(tick + i) % inputs.len()];
                json!({
                    "kind": "testkit",
                    "input_base64": base64::engine::general_purpose::STANDARD.encode(input),
                })
            })
            .collect();
        Some(json!({ "executions": executions }))
    };

    let mut samples = Vec::new();
    let mut submitted = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0..(seconds * 10) as usize {
        ticks.tick().await;
        let (status, body) = server
            .call(&tenant, Method::POST, "/v1/executions/batch", batch(tick))
            .await;
        assert_eq!(status, 200, "{body}");
        submitted += PER_TICK;
        if tick % 10 == 0 {
            samples.push(Sample {
                rss: served.rss_bytes(),
                connections: connections(&server.db).await,
            });
        }
    }
    wait_all_terminal(&server.db).await;
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM executions WHERE public_state = 'completed'")
            .fetch_one(server.db.pg())
            .await
            .unwrap();
    assert_eq!(completed, submitted as i64, "every execution completes");

    let warm = samples.len() / 4;
    let at_warm = samples[warm..samples.len() / 2]
        .iter()
        .map(|s| s.rss)
        .max()
        .unwrap();
    let at_end = samples[samples.len() * 3 / 4..]
        .iter()
        .map(|s| s.rss)
        .max()
        .unwrap();
    let most_connections = samples.iter().map(|s| s.connections).max().unwrap();
    println!(
        "soak: {submitted} executions in {seconds} s; RSS {} MiB after warm-up, {} MiB at the end; \
         at most {most_connections} connections of {CONNECTION_CAP}",
        at_warm >> 20,
        at_end >> 20,
    );
    assert!(
        at_end <= at_warm + RSS_GROWTH_LIMIT,
        "resident memory grew from {} MiB to {} MiB",
        at_warm >> 20,
        at_end >> 20
    );
    assert!(
        most_connections <= CONNECTION_CAP,
        "{most_connections} connections, more than the {CONNECTION_CAP} configured"
    );
    assert!(
        most_connections > 0,
        "the samples must see the server's connections"
    );
}

/// Connections the served process holds to its database.
async fn connections(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(APP)
    .fetch_one(db.pg())
    .await
    .unwrap()
}

async fn wait_all_terminal(db: &TestDb) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM executions WHERE lifecycle_phase <> 'terminal'",
        )
        .fetch_one(db.pg())
        .await
        .unwrap();
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} executions still open a minute after the load stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
