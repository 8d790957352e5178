//! `flowfabric bench wasm`: what running tasks as wasm costs, as ratios measured
//! in one run.
//!
//! 1. Per task: a fresh instance of `testkit` plus one `run` call (no imports
//!    used), with the pooling allocator against on-demand allocation.
//! 2. End to end through Postgres: N executions created in batches of 100, then
//!    run by the worker pool (claim, instantiate, run, complete), against the
//!    engine-only path (the same claims and completions with no wasm at all).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scratch::ScratchDatabase;
use anyhow::Context;
use async_trait::async_trait;
use flowfabric::engine::Engine;
use flowfabric::model::{
    AttemptCapabilities, EffectiveGrant, EventCursor, NewExecution, TenantId, DEFAULT_LANE,
};
use flowfabric::runtime::{
    AttemptType, CancelFlag, Child, Guest, GuestStepOutcome, GuestStreamMode, HostError, HostReply,
    LogLevel, Prepared, ResumeCondition, RunOutcome, RunResult, Runtime, RuntimeConfig,
    SandboxLimits, Signal, StepStart, StoredFrame, TaskImports, TaskInfo, TimeoutBehavior,
    UsageResult, Waitpoint,
};
use flowfabric::worker::{WorkerConfig, WorkerPool};

use super::{drain_engine, write_json};

#[derive(clap::Args)]
pub struct WasmBench {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Where the built guests are (`testkit.wasm` is used).
    #[arg(long, default_value = "guests/target/wasm32-wasip2/release")]
    guests: PathBuf,
    /// Instantiate+call iterations per allocator.
    #[arg(long, default_value_t = 5_000)]
    calls: usize,
    /// Executions for the end-to-end comparison.
    #[arg(long, default_value_t = 3_000)]
    executions: usize,
    /// Worker pool slots (and claim batch) for the end-to-end comparison.
    #[arg(long, default_value_t = 16)]
    slots: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Summary {
    on_demand_us_per_task: f64,
    pooling_us_per_task: f64,
    engine_only_per_s: f64,
    wasm_pool_per_s: f64,
}

pub async fn run(args: WasmBench) -> anyhow::Result<()> {
    let wasm = std::fs::read(args.guests.join("testkit.wasm"))
        .context("reading testkit.wasm (build the guests first)")?;
    println!(
        "per task: fresh instance + run(\"echo:x\"), {} calls, 1 task at a time",
        args.calls
    );
    let mut per_call = Vec::new();
    for (name, pooling) in [("on-demand", false), ("pooling", true)] {
        let runtime = Runtime::new(RuntimeConfig {
            pooling,
            ..RuntimeConfig::default()
        })?;
        let micros = per_task(&runtime, &wasm, NOOP, args.calls, Instances::Fresh)
            .await?
            .total_us;
        per_call.push(micros);
        println!(
            "  {name:<10} {micros:>8.1} µs/task  {:>9.0} tasks/s",
            1e6 / micros
        );
    }
    println!(
        "  pooling / on-demand time: {:.2}",
        per_call[1] / per_call[0]
    );

    let engine_only = end_to_end(&args, &wasm, false).await?;
    let with_wasm = end_to_end(&args, &wasm, true).await?;
    println!(
        "end to end through Postgres, {} executions, {} slots:\n  engine only {:>8.0} executions/s\n  wasm pool   {:>8.0} executions/s\n  wasm / engine-only throughput: {:.2} (cost per execution +{:.0}%)",
        args.executions,
        args.slots,
        engine_only,
        with_wasm,
        with_wasm / engine_only,
        (engine_only / with_wasm - 1.0) * 100.0
    );
    let summary = Summary {
        on_demand_us_per_task: per_call[0],
        pooling_us_per_task: per_call[1],
        engine_only_per_s: engine_only,
        wasm_pool_per_s: with_wasm,
    };
    write_json(args.json_out.as_deref(), &summary)
}

/// Where one task's time goes, averaged over the timed calls.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(super) struct PerTask {
    /// The caller's wall time per task, one task at a time.
    pub total_us: f64,
    /// On the caller's thread: the attempt's host state (WASI context,
    /// output pipes, HTTP hooks).
    pub setup_us: f64,
    /// A fresh wasmtime store and instance (the sandbox's own clock, which
    /// starts once the attempt has a turn on a guest thread).
    pub instantiate_us: f64,
    /// The guest's `run` with its host calls, and the outcome read back.
    pub run_us: f64,
    /// Dropping the store: memory and tables back to the pool.
    pub teardown_us: f64,
    /// Wall time per task with `in_flight` tasks running at once: what a
    /// busy worker pool pays per task, where the hops overlap with work.
    pub busy_us: f64,
    pub in_flight: usize,
}

impl PerTask {
    /// What is left of the caller's wait: scheduling, and for a run that
    /// moved to a guest thread, the hop there and back (waking a parked
    /// thread on each side).
    pub fn hop_us(&self) -> f64 {
        let accounted = self.setup_us + self.instantiate_us + self.run_us + self.teardown_us;
        (self.total_us - accounted).max(0.0)
    }
}

/// What each task is given and must answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct TaskInput<'a> {
    pub input: &'a [u8],
    pub expect: &'a [u8],
}

/// The no-op task: `echo:x`, which returns `x` and calls the host for nothing.
pub(super) const NOOP: TaskInput<'static> = TaskInput {
    input: b"echo:x",
    expect: b"x",
};

/// Which instance each task runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Instances {
    /// A fresh one per task, as every attempt gets by default.
    Fresh,
    /// One kept from an earlier task when there is one, as with a grant's
    /// `reuse_instances`.
    Reused,
}

impl Instances {
    fn capabilities(self) -> Arc<AttemptCapabilities> {
        Arc::new(AttemptCapabilities {
            grant: EffectiveGrant {
                reuse_instances: self == Instances::Reused,
                ..EffectiveGrant::default()
            },
            config: Vec::new(),
        })
    }
}

/// An instance (as `instances` says) + one `run` per task, one task at a
/// time after a warm-up; then the same with as many tasks in flight as the
/// runtime has guest threads, twice over.
pub(super) async fn per_task(
    runtime: &Runtime,
    wasm: &[u8],
    task: TaskInput<'_>,
    calls: usize,
    instances: Instances,
) -> anyhow::Result<PerTask> {
    let digest = runtime.register(wasm).await?;
    let component = runtime
        .prepare(&digest, || async { Ok::<_, String>(wasm.to_vec()) })
        .await?;
    let (wall, [setup, instantiate, run, teardown]) = timed(calls, || async {
        let outcome = run_once(runtime, &component, task, instances).await?;
        Ok([
            outcome.setup,
            outcome.instantiation,
            outcome.elapsed.saturating_sub(outcome.instantiation),
            outcome.teardown,
        ])
    })
    .await?;
    let micros = |d: Duration| d.as_secs_f64() * 1e6 / calls as f64;
    let in_flight = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy = busy_wall(runtime, &component, task, calls, in_flight, instances).await?;
    Ok(PerTask {
        total_us: micros(wall),
        setup_us: micros(setup),
        instantiate_us: micros(instantiate),
        run_us: micros(run),
        teardown_us: micros(teardown),
        busy_us: micros(busy),
        in_flight,
    })
}

/// Untimed calls of a per-task loop before the timed ones.
const WARM_UP: usize = 200;

/// `calls` timed runs of `once` after [`WARM_UP`] untimed ones: the
/// caller's wall time over them, and the sum of each part `once` reports.
pub(super) async fn timed<const N: usize, F, Fut>(
    calls: usize,
    mut once: F,
) -> anyhow::Result<(Duration, [Duration; N])>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<[Duration; N]>>,
{
    let (mut wall, mut sums) = (Duration::ZERO, [Duration::ZERO; N]);
    for i in 0..calls + WARM_UP {
        let started = Instant::now();
        let parts = once().await?;
        if i >= WARM_UP {
            wall += started.elapsed();
            for (sum, part) in sums.iter_mut().zip(parts) {
                *sum += part;
            }
        }
    }
    Ok((wall, sums))
}

/// Wall time for `calls` tasks run by `in_flight` loops at once.
async fn busy_wall(
    runtime: &Runtime,
    component: &Prepared,
    task: TaskInput<'_>,
    calls: usize,
    in_flight: usize,
    instances: Instances,
) -> anyhow::Result<Duration> {
    let each = calls.div_ceil(in_flight);
    let lane = || async {
        for _ in 0..each {
            run_once(runtime, component, task, instances).await?;
        }
        anyhow::Ok(())
    };
    futures::future::try_join_all((0..in_flight).map(|_| lane())).await?;
    let started = Instant::now();
    futures::future::try_join_all((0..in_flight).map(|_| lane())).await?;
    Ok(started
        .elapsed()
        .mul_f64(calls as f64 / (each * in_flight) as f64))
}

/// An instance (as `instances` says) and one `run`, which must complete
/// with the answer expected.
pub(super) async fn run_once(
    runtime: &Runtime,
    component: &Prepared,
    task: TaskInput<'_>,
    instances: Instances,
) -> anyhow::Result<RunOutcome> {
    let guest = Guest {
        imports: Arc::new(NoImports),
        owner: uuid::Uuid::nil(),
        capabilities: instances.capabilities(),
        kind: Arc::from("bench"),
    };
    let outcome = runtime
        .run(
            component,
            guest,
            task.input,
            &SandboxLimits::default(),
            CancelFlag::default(),
        )
        .await;
    match &outcome.result {
        RunResult::Completed(output) if output == task.expect => Ok(outcome),
        RunResult::Completed(output) => anyhow::bail!(
            "the guest answered {:?}, not {:?}",
            String::from_utf8_lossy(output),
            String::from_utf8_lossy(task.expect)
        ),
        other => anyhow::bail!("run failed: {other:?}"),
    }
}

async fn end_to_end(args: &WasmBench, wasm: &[u8], with_wasm: bool) -> anyhow::Result<f64> {
    let scratch = ScratchDatabase::create(&args.database_url).await?;
    let engine = crate::cli::connect(&scratch.url, u32::try_from(args.slots)? + 4).await?;
    let tenant = engine.create_tenant("bench").await?.tenant_id;
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    flowfabric::components::register(&engine, &runtime, tenant, "testkit", wasm).await?;
    create(&engine, tenant, args.executions).await?;
    let started = Instant::now();
    if with_wasm {
        let config = WorkerConfig {
            slots: args.slots,
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        };
        let pool = WorkerPool::start(engine.clone(), runtime, config);
        // Count completion events until every execution has one.
        let (mut cursor, mut ended) = (EventCursor::START, 0);
        while ended < args.executions {
            let batch = engine.completion_events(tenant, cursor, 1_000).await?;
            match batch.events.last() {
                Some(last) => cursor = last.cursor,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
            ended += batch.events.len();
        }
        let elapsed = started.elapsed();
        pool.shutdown().await;
        scratch.drop().await?;
        return Ok(args.executions as f64 / elapsed.as_secs_f64());
    }
    drain_engine(&engine, 4, args.executions, u32::try_from(args.slots)?).await?;
    let elapsed = started.elapsed();
    scratch.drop().await?;
    Ok(args.executions as f64 / elapsed.as_secs_f64())
}

async fn create(engine: &Engine, tenant: TenantId, n: usize) -> anyhow::Result<()> {
    let all: Vec<NewExecution> = (0..n)
        .map(|_| NewExecution::new("testkit", b"echo:x".to_vec()))
        .collect();
    for chunk in all.chunks(100) {
        engine.create_batch(tenant, chunk).await?;
    }
    Ok(())
}

/// Imports for the per-task measurement, where the guest calls none of them.
pub(super) struct NoImports;

#[async_trait]
impl TaskImports for NoImports {
    fn info(&self) -> TaskInfo {
        TaskInfo {
            execution_id: String::new(),
            kind: "testkit".into(),
            lane: DEFAULT_LANE.into(),
            attempt: 1,
            attempt_type: AttemptType::Initial,
            retry_count: 0,
            priority: 0,
            tags: Vec::new(),
        }
    }
    async fn progress(&self, _: u8, _: String) -> Result<(), HostError> {
        Ok(())
    }
    async fn append_frame(
        &self,
        _: String,
        _: Vec<u8>,
        _: GuestStreamMode,
    ) -> Result<u64, HostError> {
        Ok(0)
    }
    async fn report_usage(
        &self,
        _: String,
        _: u64,
        _: Option<String>,
    ) -> Result<UsageResult, HostError> {
        Ok(UsageResult::Ok)
    }
    async fn usage_limited(&self, _: &str) -> Result<bool, HostError> {
        Ok(false)
    }

    async fn report_usage_many(
        &self,
        _: Vec<(String, u64)>,
        _: Option<String>,
    ) -> Result<UsageResult, HostError> {
        Ok(UsageResult::Ok)
    }
    async fn create_waitpoint(&self, _: String, _: Option<u64>) -> Result<Waitpoint, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn suspend(
        &self,
        _: ResumeCondition,
        _: Option<u64>,
        _: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Signal>>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn suspend_with(
        &self,
        _: ResumeCondition,
        _: Option<String>,
        _: Vec<String>,
        _: Option<u64>,
        _: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Signal>>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn spawn_child(
        &self,
        _: String,
        _: Vec<u8>,
        _: Option<String>,
    ) -> Result<String, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn wait_children(
        &self,
        _: Option<u64>,
        _: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Child>>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn step_begin(&self, _: String) -> Result<HostReply<StepStart>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn step_record(&self, _: u32, _: GuestStepOutcome) -> Result<HostReply<()>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn sleep(&self, _: u64) -> Result<HostReply<()>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn delay(&self, _: u64) -> Result<HostReply<()>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn cancel(&self, _: String) -> Result<HostReply<()>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn read_frames(&self, _: u32, _: u64, _: u32) -> Result<Vec<StoredFrame>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    async fn read_summary(&self, _: u32) -> Result<Option<Vec<u8>>, HostError> {
        Err(HostError::Unsupported("benchmark".into()))
    }
    fn resume_signals(&self) -> Vec<Signal> {
        Vec::new()
    }
    fn lease_healthy(&self) -> bool {
        true
    }
    fn renewal_failures(&self) -> u32 {
        0
    }
    async fn log(&self, _: LogLevel, _: String) {}
}
