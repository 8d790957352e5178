//! The wasm runtime: turns uploaded bytes into ready-to-run components and runs
//! one execution attempt in a fresh sandbox.
//!
//! Why it is built this way (`flowfabric bench wasm` measures the figures):
//! * one `wasmtime::Engine` per process with a tuned pooling allocator and
//!   component-model concurrency support off — a fresh instance per attempt then
//!   costs tens of µs for a Rust guest (`bench languages` splits it out), so
//!   isolation between attempts is cheap next to a Postgres round trip;
//! * components are compiled once: the native artifact is cached on disk keyed by
//!   content digest and engine compatibility hash, and an `InstancePre` is kept in
//!   memory, so only the first run of a new version pays for Cranelift;
//! * CPU time is bounded by epoch interruption, memory by a store limiter; a trap
//!   of any kind is a classified failure, never a crashed worker.

mod attempt;
mod baseline;
mod bindings;
mod cache;
mod capture;
mod config;
mod dial;
mod fair;
mod http_usage;
mod imports;
mod keep_alive;
mod outbound;
mod placement;
mod sandbox;
mod scratch;
mod warm;

pub use keep_alive::DEFAULT_IDLE_TIMEOUT as DEFAULT_HTTP_IDLE_TIMEOUT;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use attempt::{RunOutcome, RunResult};
pub use baseline::{Baseline, BaselineTimes};
pub use bindings::{
    AttemptType, Breach, Child, FailureClass as GuestFailureClass, HostError, LogLevel,
    ResumeCondition, Signal, StepOutcome as GuestStepOutcome, StepStart, StoredFrame,
    StreamMode as GuestStreamMode, TaskError, TaskInfo, TimeoutBehavior, UsageResult, Waitpoint,
};
pub use config::RuntimeConfig;
pub use fair::Owner;
pub use imports::{HostReply, Release, TaskImports};
pub use outbound::{HttpExchange, HttpLog};
pub use placement::{Ran, INLINE_SLICE};
pub use sandbox::{CancelFlag, SandboxLimits};

use crate::model::{AttemptCapabilities, TenantId};
use attempt::{ended_early, internal_failure, run_in_store, Call, Start};
use bindings::{Task, TaskPre};
use cache::ArtifactCache;
use placement::{run_here_first, InlineHint};
use sandbox::StoreState;
use warm::{WarmKey, WarmPool};

/// Why bytes could not become a runnable component.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("not WebAssembly: the file does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; build it for `wasm32-wasip2` \
         (or wrap it with `wasm-tools component new`) so it implements the flowfabric:task world"
    )]
    CoreModule,
    #[error("component is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error("the component does not implement the flowfabric:task world: {0}")]
    WorldMismatch(String),
    #[error("runtime error: {0}")]
    Internal(String),
}

/// A component ready to instantiate, its content digest, and where its
/// next attempt starts (see `placement`).
#[derive(Clone)]
pub struct Prepared(Arc<TaskPre<StoreState>>, Arc<str>, Arc<InlineHint>);

/// Who a run is for and what it may use.
#[derive(Clone)]
pub struct Guest {
    /// The execution's host calls.
    pub imports: Arc<dyn TaskImports>,
    /// Whose share of the guest threads the run takes (its tenant).
    pub owner: Owner,
    /// What it may reach beyond its input.
    pub capabilities: Arc<AttemptCapabilities>,
    /// The component kind it runs as: with a grant that reuses instances,
    /// only attempts of the same kind share one.
    pub kind: Arc<str>,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: ArtifactCache,
    /// One gate per digest being compiled, so concurrent callers share a compile.
    compiling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Turns to compile (`RuntimeConfig::max_concurrent_compiles`), each held
    /// by the compile itself until it ends, even if its caller went away.
    compile_turns: Arc<tokio::sync::Semaphore>,
    compiles: AtomicU64,
    config: RuntimeConfig,
    ticker_stop: Arc<AtomicBool>,
    /// Where guests run: threads of their own, not the caller's. A guest
    /// yields to its executor only between epoch slices (2 ms of spinning
    /// each), and a Tokio worker that keeps polling runnable tasks looks at its
    /// I/O only every few dozen polls. Sharing the host's runtime, two
    /// CPU-bound guests on two workers stretched each of the host's database
    /// round trips from 0.5 ms to ~290 ms (1.2 s at worst), stalling leases,
    /// claims and the API alike. On threads of their own the OS preempts them.
    /// A guest gets here after a few milliseconds at most; until then it
    /// runs on its caller's thread, where most finish (`placement`).
    /// Always `Some` until dropped.
    guests: Option<tokio::runtime::Runtime>,
    /// Turns on the guest threads, shared fairly between tenants.
    turns: Arc<fair::FairGate>,
    /// Each tenant's cap on open outbound connections, and those kept open.
    connections: Arc<outbound::Connections>,
    /// Where attempts' scratch directories are made.
    scratch_root: scratch::ScratchRoot,
    /// Instances kept for the next attempt of their kind.
    warm: Arc<WarmPool>,
}

/// How often the epoch advances: the granularity of timeouts, cancellation
/// and turns on the guest threads. A guest of another tenant waits at most
/// this long for a turn held by a spinning guest (see `fair`); at 10 ms, a
/// tenant whose runs take microseconds was held to ~200 runs a second beside
/// spinning guests (`bench fairness`). The callback costs well under a
/// microsecond, so even 2 ms ticks cost a spinning guest under 0.1 %.
const EPOCH_TICK: Duration = Duration::from_millis(2);

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, ComponentError> {
        let engine = Engine::new(&engine_config(&config)).map_err(internal)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(internal)?;
        scratch::add_to_linker(&mut linker).map_err(internal)?;
        // Linked for every component; whether a call is allowed is decided
        // per call by the attempt's grant (see `outbound`, `sandbox`).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(internal)?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |s: &mut StoreState| {
            wasmtime_wasi_config::WasiConfig::from(&s.config)
        })
        .map_err(internal)?;
        Task::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |s| s)
            .map_err(internal)?;
        let cache = ArtifactCache::new(
            &engine,
            config.cache_dir.clone(),
            config.cached_components,
            config.cache_max_bytes,
        )?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let warm = Arc::new(WarmPool::new(config.warm_instances));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone(), warm.clone());
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let guests = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("flowfabric-guest")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(internal)?;
        let connections = Arc::new(outbound::Connections::new(
            config.http_idle_timeout,
            guests.handle().clone(),
        ));
        let scratch_root =
            scratch::ScratchRoot::new(config.scratch_dir.clone()).map_err(internal)?;
        Ok(Self {
            warm,
            scratch_root,
            engine,
            linker,
            cache,
            compiling: Mutex::default(),
            compile_turns: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_compiles.max(1),
            )),
            compiles: AtomicU64::new(0),
            config,
            ticker_stop,
            guests: Some(guests),
            turns: fair::FairGate::new(threads),
            connections,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Where attempts granted scratch space get their directories (each
    /// removed when its attempt ends).
    pub fn scratch_root(&self) -> &std::path::Path {
        self.scratch_root.path()
    }

    /// How many times this runtime compiled a component (rather than serving it
    /// from memory or the artifact cache).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
    }

    /// The content digest components are stored and cached under (sha256, hex).
    pub fn digest(wasm: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(wasm))
    }

    /// Check that `wasm` is a component implementing the task world, compile it
    /// and cache the result. Returns its digest.
    pub async fn register(&self, wasm: &[u8]) -> Result<String, ComponentError> {
        check_header(wasm, self.config.max_component_bytes)?;
        let digest = Self::digest(wasm);
        self.compile_once(&digest, wasm.to_vec()).await?;
        Ok(digest)
    }

    /// The interfaces a registered component imports (`wasi:http/…@0.2.4`,
    /// …), or `None` when `digest` is not ready in this runtime.
    pub fn imports(&self, digest: &str) -> Option<Vec<String>> {
        let prepared = self.cache.ready(digest)?;
        let component = prepared.0.instance_pre().component();
        Some(
            component
                .component_type()
                .imports(&self.engine)
                .map(|(name, _)| name.to_owned())
                .collect(),
        )
    }

    /// The prepared component for `digest`, calling `load` for its bytes only when
    /// neither the memory nor the disk cache has it.
    pub async fn prepare<F, Fut, E>(
        &self,
        digest: &str,
        load: F,
    ) -> Result<Prepared, ComponentError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, E>>,
        E: std::fmt::Display,
    {
        if let Some(ready) = self.cache.ready(digest) {
            return Ok(ready);
        }
        if let Some(component) = self.cache.load_artifact(&self.engine, digest)? {
            return self.link(digest, component);
        }
        let wasm = load()
            .await
            .map_err(|e| ComponentError::Internal(format!("loading component: {e}")))?;
        if Self::digest(&wasm) != digest {
            return Err(ComponentError::Internal(format!(
                "stored bytes do not match digest {digest}"
            )));
        }
        self.compile_once(digest, wasm).await
    }

    /// Compile `digest` unless it is ready. Callers arriving while the same
    /// digest compiles wait and share the result: a new JS or Python component
    /// takes seconds to compile, and every worker slot that claims its first
    /// executions would otherwise compile it again at once.
    async fn compile_once(&self, digest: &str, wasm: Vec<u8>) -> Result<Prepared, ComponentError> {
        let gate = self
            .compiling
            .lock()
            .expect("compile gates")
            .entry(digest.to_owned())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        let prepared = match self.cache.ready(digest) {
            Some(ready) => Ok(ready),
            None => self.compile(digest, wasm).await,
        };
        self.compiling.lock().expect("compile gates").remove(digest);
        prepared
    }

    async fn compile(&self, digest: &str, wasm: Vec<u8>) -> Result<Prepared, ComponentError> {
        check_header(&wasm, self.config.max_component_bytes)?;
        let engine = self.engine.clone();
        let queued = Instant::now();
        let turn = self
            .compile_turns
            .clone()
            .acquire_owned()
            .await
            .map_err(internal)?;
        metrics::histogram!("flowfabric_component_compile_wait_seconds")
            .record(queued.elapsed().as_secs_f64());
        let started = Instant::now();
        self.compiles.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("flowfabric_component_compiles_total").increment(1);
        // The turn moves into the blocking task: a compile cannot be stopped
        // once begun, so it keeps its turn when its caller is dropped.
        let component = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            Component::new(&engine, &wasm)
        })
        .await
        .map_err(internal)?
        .map_err(|e| ComponentError::Invalid(format!("{e:#}")))?;
        metrics::histogram!("flowfabric_component_compile_seconds")
            .record(started.elapsed().as_secs_f64());
        let prepared = self.link(digest, component.clone())?;
        self.cache.store_artifact(digest, &component);
        Ok(prepared)
    }

    fn link(&self, digest: &str, component: Component) -> Result<Prepared, ComponentError> {
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ComponentError::WorldMismatch(format!("{e:#}")))?;
        let pre = TaskPre::new(pre).map_err(|e| ComponentError::WorldMismatch(format!("{e:#}")))?;
        let prepared = Prepared(Arc::new(pre), Arc::from(digest), Arc::default());
        self.cache.keep_ready(digest, prepared.clone());
        Ok(prepared)
    }

    /// Run one attempt: a fresh store (or, when its grant reuses instances,
    /// one kept from an earlier attempt of its kind; see `warm`),
    /// `run(input)`, and a classified outcome. The guest starts on the
    /// caller's thread and moves to the runtime's own threads if it runs
    /// for more than a few milliseconds (see `placement`, `guests`); it
    /// runs in turns shared fairly between owners (see `fair`). Dropping
    /// the returned future stops it: at once on the caller's thread, at its
    /// next epoch tick on the guest threads.
    pub async fn run(
        &self,
        component: &Prepared,
        guest: Guest,
        input: &[u8],
        limits: &SandboxLimits,
        cancel: CancelFlag,
    ) -> RunOutcome {
        let started = Instant::now();
        let guests = self
            .guests
            .as_ref()
            .expect("guest threads live as long as the runtime");
        let key = guest.capabilities.grant.reuse_instances.then(|| WarmKey {
            // The run's owner (the lease's tenant), not the grant's: the key
            // must not depend on which grant the caller passed.
            tenant: TenantId::from(guest.owner),
            kind: guest.kind.clone(),
            digest: component.1.clone(),
        });
        let start = match self.start(key.as_ref(), guest, limits) {
            Ok(start) => start,
            Err(e) => {
                return ended_early(
                    internal_failure(format!("creating the attempt's scratch directory: {e}")),
                    started,
                )
            }
        };
        let setup = started.elapsed();
        let call = Call {
            engine: self.engine.clone(),
            component: component.clone(),
            input: input.to_vec(),
            limits: limits.clone(),
            cancel,
            fuel: self.config.fuel,
        };
        let placement = start.placement();
        let attempt = Box::pin(run_in_store(call, start, key.is_some()));
        let (ended, ran) = run_here_first(attempt, &placement, &component.2, guests.handle()).await;
        metrics::counter!("flowfabric_guest_runs_total", "ran" => ran.as_str()).increment(1);
        match ended {
            Ok((outcome, kept)) => {
                if let (Some(key), Some(kept)) = (key, kept) {
                    drop(self.warm.keep(key, kept));
                }
                RunOutcome {
                    setup,
                    ran,
                    ..outcome
                }
            }
            Err(e) => RunOutcome {
                ran,
                ..ended_early(
                    internal_failure(format!("the guest's run ended abnormally: {e}")),
                    started,
                )
            },
        }
    }

    /// Where an attempt runs: an instance kept for its key, made this
    /// attempt's, or else a fresh store.
    fn start(
        &self,
        key: Option<&WarmKey>,
        guest: Guest,
        limits: &SandboxLimits,
    ) -> std::io::Result<Start> {
        let cpu = sandbox::CpuShare::new(self.turns.clone(), guest.owner, self.config.inline_slice);
        let kept = key
            .and_then(|key| self.warm.take(key))
            .filter(|w| w.store.data().can_serve(&guest.capabilities, limits));
        if let Some(mut warm) = kept {
            warm.store.data_mut().retarget(
                guest.imports,
                &guest.capabilities,
                &self.connections,
                limits,
                cpu,
            );
            metrics::counter!("flowfabric_warm_instance_reuses_total").increment(1);
            return Ok(Start::Kept(warm));
        }
        StoreState::new(
            guest.imports,
            &guest.capabilities,
            &self.connections,
            limits,
            cpu,
            &self.scratch_root,
        )
        .map(|state| Start::Fresh(Box::new(state)))
    }
}

/// A spawned task that must not outlive its owner: a guest run whose caller
/// stopped waiting for it, a worker's background task.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
        // Without blocking: a runtime may be dropped inside async code.
        if let Some(guests) = self.guests.take() {
            guests.shutdown_background();
        }
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    let n = config.max_instances.max(1) + config.warm_instances;
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .total_memories(n * 2)
        .total_tables(n * 8)
        .total_stacks(n)
        .max_memory_size(config.max_memory_bytes)
        .max_core_instances_per_component(20)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        // Measured: these two together halve instantiation cost on this hardware.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(4 << 20)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(64);
    let mut cfg = Config::new();
    cfg.allocation_strategy(if config.pooling {
        InstanceAllocationStrategy::Pooling(pool)
    } else {
        InstanceAllocationStrategy::OnDemand
    })
    .epoch_interruption(true)
    .consume_fuel(config.fuel)
    .concurrency_support(false);
    cfg
}

/// How far below the host's own threads guests run, in nice steps: the
/// host's claims, lease renewals, completions and API (and, on one machine,
/// the database) take the CPU first when they need it, and spinning guests
/// get the rest. At the default weights one step is ~10 % of CPU share.
const GUEST_NICE: libc::c_int = 5;

/// Lower the calling guest thread's scheduling priority. Linux keeps a nice
/// value per thread, so this leaves the rest of the process as it was.
/// Best effort: where it is refused, guests run at the host's priority.
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `0` names the
    // calling thread.
    let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, GUEST_NICE) } != 0;
    if refused {
        tracing::debug!("guest threads run at the host's priority (setpriority refused)");
    }
}

/// Ticks between two sweeps of the kept instances for stale ones (~1 s).
const TICKS_PER_SWEEP: u32 = 500;

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>, warm: Arc<WarmPool>) {
    std::thread::Builder::new()
        .name("flowfabric-epoch".into())
        .spawn(move || {
            let mut ticks = 0u32;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
                ticks += 1;
                if ticks == TICKS_PER_SWEEP {
                    ticks = 0;
                    drop(warm.take_stale());
                }
            }
        })
        .expect("spawn epoch ticker");
}

fn check_header(wasm: &[u8], limit: usize) -> Result<(), ComponentError> {
    if wasm.len() > limit {
        return Err(ComponentError::TooLarge {
            size: wasm.len(),
            limit,
        });
    }
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(ComponentError::NotWasm);
    }
    match u16::from_le_bytes([wasm[6], wasm[7]]) {
        0 => Err(ComponentError::CoreModule),
        1 => Ok(()),
        layer => Err(ComponentError::Invalid(format!(
            "unknown WebAssembly binary layer {layer}"
        ))),
    }
}

fn internal(e: impl std::fmt::Display) -> ComponentError {
    ComponentError::Internal(e.to_string())
}
