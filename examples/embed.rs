//! Embedding FlowFabric in your own Rust program: connect, upload a component,
//! submit an execution, run it on an in-process worker pool, read the result.
//!
//! ```sh
//! (cd guests && cargo build --release --target wasm32-wasip2)
//! DATABASE_URL=postgres://… cargo run -p flowfabric --example embed
//! ```

use std::sync::Arc;
use std::time::Duration;

use flowfabric::backend::postgres::PgBackend;
use flowfabric::backend::Backend;
use flowfabric::engine::{Engine, Limits};
use flowfabric::model::NewExecution;
use flowfabric::runtime::{Runtime, RuntimeConfig};
use flowfabric::worker::{WorkerConfig, WorkerPool};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")?;
    let backend = PgBackend::connect(&url, 8).await?;
    backend.migrate().await?;
    let engine = Engine::new(Arc::new(backend), Limits::default());
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);

    let tenant = engine
        .create_tenant(&format!("example-{}", uuid::Uuid::now_v7().simple()))
        .await?
        .tenant_id;
    let wasm = std::fs::read("guests/target/wasm32-wasip2/release/echo.wasm")?;
    flowfabric::components::register(&engine, &runtime, tenant, "echo", &wasm).await?;
    let id = engine
        .create(tenant, NewExecution::new("echo", b"hello".to_vec()))
        .await?
        .execution_id;

    let pool = WorkerPool::start(engine.clone(), runtime, WorkerConfig::default());
    let execution = loop {
        let execution = engine.get(tenant, id).await?;
        if execution.state.is_terminal() {
            break execution;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    pool.shutdown().await;
    println!(
        "{id}: {} -> {:?}",
        execution.state,
        String::from_utf8_lossy(execution.result.as_deref().unwrap_or_default())
    );
    Ok(())
}
