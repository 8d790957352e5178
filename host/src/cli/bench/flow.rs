//! `flowfabric bench flow`: throughput of 10-node linear flows, against the
//! same number of independent executions in the same run.
//!
//! Each phase creates all its work first, then the claim/complete loops
//! drain it; creating and draining are timed apart. The flow phase pays for
//! the graph: edges and join groups at create, and a dependency resolution
//! (promote the next node) inside every completion. The ratio of the drain
//! rates says what resolution costs on top of the engine's plain path.
//!
//! Creating while draining measured neither: one creator making flows one
//! transaction at a time fell behind the loops, which then polled an empty
//! queue and slowed the creator further, so more loops gave fewer flows/s.

use std::time::Instant;

use super::scratch::ScratchDatabase;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::{
    FlowEdge, FlowMember, GraphChange, JoinPolicy, NewExecution, NewFlow, TenantId,
};

use super::{drain_engine, write_json};
use crate::cli::connect_with;

/// Executions each loop claims at a time.
const CLAIM_BATCH: u32 = 10;

#[derive(clap::Args)]
pub struct FlowBench {
    /// A Postgres server; the bench creates and drops its own scratch database.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Flows to run (each is a chain of `--nodes` executions).
    #[arg(long, default_value_t = 200)]
    flows: usize,
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Concurrent claim/complete loops.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

#[derive(serde::Serialize)]
struct Row {
    phase: &'static str,
    executions: usize,
    create_seconds: f64,
    drain_seconds: f64,
    /// Executions drained (claimed and completed) per second.
    executions_per_s: f64,
    /// Flows drained per second.
    flows_per_s: Option<f64>,
}

pub async fn run(args: FlowBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes >= 2 && args.flows >= 1,
        "need at least 2 nodes and 1 flow"
    );
    let scratch = ScratchDatabase::create(&args.database_url).await?;
    let result = measure(&scratch.url, &args).await;
    scratch.drop().await?;
    let rows = result?;
    println!(
        "{} flows of {} nodes (linear), {} claim/complete loops",
        args.flows, args.nodes, args.workers
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "phase", "executions", "create s", "drain s", "executions/s", "flows/s"
    );
    for r in &rows {
        println!(
            "{:<26} {:>10} {:>10.2} {:>10.2} {:>12.0} {:>9}",
            r.phase,
            r.executions,
            r.create_seconds,
            r.drain_seconds,
            r.executions_per_s,
            r.flows_per_s.map_or("-".into(), |f| format!("{f:.1}"))
        );
    }
    println!(
        "flow executions/s / independent executions/s: {:.2}",
        rows[1].executions_per_s / rows[0].executions_per_s
    );
    write_json(args.json_out.as_deref(), &rows)?;
    Ok(())
}

async fn measure(url: &str, args: &FlowBench) -> anyhow::Result<Vec<Row>> {
    let limits = Limits {
        require_component: false,
        ..Limits::default()
    };
    let engine = connect_with(url, (args.workers + 4) as u32, limits).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let total = args.flows * args.nodes;

    let plain = timed(
        async {
            for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
                let batch: Vec<NewExecution> = chunk.iter().map(|_| task()).collect();
                engine.create_batch(tenant, &batch).await?;
            }
            anyhow::Ok(())
        },
        drain_engine(&engine, args.workers, total, CLAIM_BATCH),
    )
    .await?;
    let flows = timed(
        async {
            for _ in 0..args.flows {
                create_chain(&engine, tenant, args.nodes).await?;
            }
            anyhow::Ok(())
        },
        drain_engine(&engine, args.workers, total, CLAIM_BATCH),
    )
    .await?;
    let row = |phase, (create, drain): (f64, f64), flows: Option<usize>| Row {
        phase,
        executions: total,
        create_seconds: create,
        drain_seconds: drain,
        executions_per_s: total as f64 / drain,
        flows_per_s: flows.map(|f| f as f64 / drain),
    };
    Ok(vec![
        row("independent executions", plain, None),
        row("linear flows", flows, Some(args.flows)),
    ])
}

/// Seconds taken by `create`, then by `drain` once it is done.
async fn timed(
    create: impl std::future::Future<Output = anyhow::Result<()>>,
    drain: impl std::future::Future<Output = anyhow::Result<std::time::Duration>>,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    create.await?;
    let created = started.elapsed().as_secs_f64();
    let started = Instant::now();
    drain.await?;
    Ok((created, started.elapsed().as_secs_f64()))
}

fn task() -> NewExecution {
    NewExecution::new("bench", b"x".to_vec())
}

async fn create_chain(engine: &Engine, tenant: TenantId, nodes: usize) -> anyhow::Result<()> {
    let key = |i: usize| format!("n{i}");
    let change = GraphChange {
        expected_revision: None,
        members: (0..nodes)
            .map(|i| FlowMember {
                key: key(i),
                execution: task(),
                join: JoinPolicy::AllOf,
            })
            .collect(),
        edges: (1..nodes)
            .map(|i| FlowEdge {
                from: key(i - 1),
                to: key(i),
                pass_result: true,
            })
            .collect(),
    };
    let flow = NewFlow {
        name: "chain".into(),
        ..Default::default()
    };
    engine.create_flow(tenant, flow, change).await?;
    Ok(())
}
