//! One sandboxed run: the store, its limits, its share of the guest threads,
//! and how a run ends.
//!
//! Nothing is granted by default: no preopened directories (a grant may give
//! the attempt its own `/scratch`; see `scratch`), no network, an empty
//! environment; stdout and stderr go to bounded in-memory pipes the worker
//! turns into frames. CPU time is bounded through epoch interruption: every tick
//! (2 ms) the store's callback checks the deadline and the cancel flag, and
//! otherwise yields to the async executor, so a spinning guest neither outlives
//! its deadline nor starves the worker's other tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capture::Capture;
use super::fair::{FairGate, Owner, Turn};
use super::imports::TaskImports;
use super::outbound::{Connections, Outbound};
use super::placement::Placement;
use super::scratch::{Quota, ScratchRoot};
use crate::model::AttemptCapabilities;

/// Per-run limits.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    /// Wall-clock budget of one run (the guest's CPU time cannot exceed it).
    pub timeout: Duration,
    /// Linear memory the guest may grow to, in bytes.
    pub memory_bytes: usize,
    /// Bytes of stdout and of stderr kept. A write past it fails (the guest
    /// sees a closed stream, EPIPE) and nothing more is kept; what the guest
    /// does then is its own (Rust's `println!` panics, which traps).
    pub output_bytes: usize,
    /// Wasm fuel per run, when the runtime was built with fuel metering.
    pub fuel: Option<u64>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            memory_bytes: 128 << 20,
            output_bytes: 64 << 10,
            fuel: None,
        }
    }
}

/// Why the host stopped a guest from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Timeout,
    Cancelled,
    /// The guest's own call let go of the execution (not from outside, but
    /// it ends the run the same way).
    Released(super::imports::Release),
    /// The host ended the attempt from inside a host call, with this failure.
    Failed(crate::model::Failure),
}

/// A flag the worker raises to stop a running guest at its next epoch tick.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub struct StoreState {
    wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) memory: MemoryLimiter,
    pub(super) imports: Arc<dyn TaskImports>,
    pub(super) stopped: Option<StopReason>,
    pub(super) stdout: Capture,
    pub(super) stderr: Capture,
    pub(super) cpu: CpuShare,
    http: WasiHttpCtx,
    pub(super) outbound: Outbound,
    pub(super) config: WasiConfigVariables,
    pub(super) scratch_quota: Arc<Quota>,
    /// Held only to be removed when the store is dropped; last, so it goes
    /// after everything that could hold it open.
    _scratch: Option<tempfile::TempDir>,
}

/// A run's place in the fair turns on the guest threads (see `fair`): the
/// turn it holds while it computes.
pub(super) struct CpuShare {
    gate: Arc<FairGate>,
    owner: Owner,
    held: Arc<std::sync::Mutex<Option<Turn>>>,
    /// Whether the attempt still runs on its caller's thread (`placement`).
    pub(super) placement: Arc<Placement>,
}

impl CpuShare {
    pub(super) fn new(gate: Arc<FairGate>, owner: Owner, inline_slice: Duration) -> Self {
        Self {
            gate,
            owner,
            held: Arc::default(),
            placement: Arc::new(Placement::new(inline_slice)),
        }
    }

    /// Wait for a turn and hold it.
    pub(super) fn take_turn(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (gate, owner, held) = (self.gate.clone(), self.owner, self.held.clone());
        async move {
            let turn = gate.turn(owner).await;
            *held.lock().expect("turn lock") = Some(turn);
        }
    }

    /// Hand the turn on (while waiting on the host, or to let others run).
    pub(super) fn give_up(&self) {
        let turn = self.held.lock().expect("turn lock").take();
        drop(turn);
    }

    fn others_wait(&self) -> bool {
        self.gate.contended()
    }

    fn holds_turn(&self) -> bool {
        self.held.lock().expect("turn lock").is_some()
    }

    /// Hands the turn on from elsewhere (a host task the guest waits on);
    /// the guest takes a turn again at its next epoch tick.
    fn releaser(&self) -> Box<dyn Fn() + Send + Sync> {
        let held = self.held.clone();
        Box::new(move || drop(held.lock().expect("turn lock").take()))
    }
}

impl StoreState {
    /// A store for one attempt. Fails only when the grant gives it a
    /// scratch directory and the directory cannot be created.
    pub(super) fn new(
        imports: Arc<dyn TaskImports>,
        capabilities: &AttemptCapabilities,
        connections: &Connections,
        limits: &SandboxLimits,
        cpu: CpuShare,
        scratch_root: &ScratchRoot,
    ) -> std::io::Result<Self> {
        let stdout = Capture::new(limits.output_bytes);
        let stderr = Capture::new(limits.output_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let quota = capabilities.grant.scratch_bytes;
        let scratch = match quota {
            0 => None,
            _ => {
                let dir = scratch_root.attempt_dir()?;
                wasi.preopened_dir(dir.path(), "/scratch", FsPerms::ReadWrite)
                    .map_err(std::io::Error::other)?;
                Some(dir)
            }
        };
        let wasi = wasi.build();
        let outbound = Outbound::new(
            Arc::new(capabilities.grant.clone()),
            imports.clone(),
            connections,
            cpu.releaser(),
        );
        let scratch_quota = Arc::new(Quota::new(quota, stderr.clone()));
        Ok(Self {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryLimiter::new(limits.memory_bytes),
            imports,
            stopped: None,
            stdout,
            stderr,
            cpu,
            http: WasiHttpCtx::new(),
            outbound,
            config: capabilities.config.iter().cloned().collect(),
            scratch_quota,
            _scratch: scratch,
        })
    }

    /// Whether a store kept from an earlier attempt (see `warm`) can serve
    /// an attempt with these capabilities and limits: not if its memory is
    /// already past the attempt's limit, nor for a grant with a scratch
    /// directory (one is preopened only when an instance is made).
    pub(super) fn can_serve(
        &self,
        capabilities: &AttemptCapabilities,
        limits: &SandboxLimits,
    ) -> bool {
        self.memory.size <= limits.memory_bytes && capabilities.grant.scratch_bytes == 0
    }

    /// Make a kept store (see `can_serve`) this attempt's: its host calls,
    /// grant, config values, limits and turn, and empty output. The guest's
    /// own memory and the resources it holds stay.
    pub(super) fn retarget(
        &mut self,
        imports: Arc<dyn TaskImports>,
        capabilities: &AttemptCapabilities,
        connections: &Connections,
        limits: &SandboxLimits,
        cpu: CpuShare,
    ) {
        self.stdout.take(limits.output_bytes);
        self.stderr.take(limits.output_bytes);
        self.outbound = Outbound::new(
            Arc::new(capabilities.grant.clone()),
            imports.clone(),
            connections,
            cpu.releaser(),
        );
        self.memory.max_bytes = limits.memory_bytes;
        self.memory.hit = false;
        self.imports = imports;
        self.stopped = None;
        self.cpu = cpu;
        self.config = capabilities.config.iter().cloned().collect();
        self.scratch_quota = Arc::new(Quota::new(0, self.stderr.clone()));
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The epoch callback of one run: stop at the deadline or on cancel; else
/// hand the turn on if others wait for one (and wait for the next), or yield.
pub(super) fn epoch_callback(
    deadline: Instant,
    cancel: CancelFlag,
) -> impl FnMut(wasmtime::StoreContextMut<'_, StoreState>) -> wasmtime::Result<UpdateDeadline>
       + Send
       + Sync
       + 'static {
    move |mut store| {
        store.data().cpu.placement.tick();
        let reason = if cancel.is_cancelled() {
            Some(StopReason::Cancelled)
        } else if Instant::now() >= deadline {
            Some(StopReason::Timeout)
        } else {
            None
        };
        Ok(match reason {
            Some(r) => {
                store.data_mut().stopped = Some(r);
                UpdateDeadline::Interrupt
            }
            // The turn was handed on while the guest waited on the network.
            None if !store.data().cpu.holds_turn() => {
                UpdateDeadline::YieldCustom(1, Box::pin(store.data().cpu.take_turn()))
            }
            None if store.data().cpu.others_wait() => {
                let cpu = &store.data().cpu;
                cpu.give_up();
                let take = cpu.take_turn();
                UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(async move {
                        // Yield even if a turn is free again at once.
                        tokio::task::yield_now().await;
                        take.await
                    }),
                )
            }
            None => UpdateDeadline::Yield(1),
        })
    }
}

/// Caps linear memory and remembers that a guest hit the cap, so the failure is
/// reported as out-of-memory whatever trap the guest turns the refusal into.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    pub(super) hit: bool,
    /// Bytes of linear memory the store's instance has (every memory's
    /// growth, from its creation), so that a kept instance whose memory is
    /// already past an attempt's limit does not serve it.
    size: usize,
}

impl MemoryLimiter {
    fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            hit: false,
            size: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.size += desired.saturating_sub(current);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}
