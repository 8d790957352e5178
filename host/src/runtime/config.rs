//! The runtime's settings, one process's: how many instances, how much
//! memory, where compiled components are kept and how much room they get,
//! how many compile at once.

use std::path::PathBuf;
use std::time::Duration;

use super::{keep_alive, placement};

/// Process-wide runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Instances that may run at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// Hard ceiling on any guest's linear memory; per-run limits sit below it.
    pub max_memory_bytes: usize,
    /// Largest component accepted.
    pub max_component_bytes: usize,
    /// Meter wasm fuel (costs a little on every instruction; off by default).
    pub fuel: bool,
    /// Where compiled artifacts are cached; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The most the artifacts in `cache_dir` may take together; the least
    /// recently used are deleted past it.
    pub cache_max_bytes: u64,
    /// Compiled components kept ready in memory.
    pub cached_components: usize,
    /// Pre-allocate instance slots (fast); `false` allocates per instance.
    pub pooling: bool,
    /// Where attempts granted scratch space get their directories; `None`
    /// uses a directory of the runtime's own under the system's temporary
    /// directory, removed with the runtime.
    pub scratch_dir: Option<PathBuf>,
    /// Instances kept between attempts whose grant reuses instances (see
    /// `warm`), beyond `max_instances`; 0 keeps none.
    pub warm_instances: u32,
    /// How long an outbound connection is kept open after a guest's request
    /// for the next request of the same tenant to the same origin (see
    /// `keep_alive`); zero opens a connection per request.
    pub http_idle_timeout: Duration,
    /// How long an attempt may hold the caller's thread (the worker's)
    /// before it moves to the guest threads (see `placement`); waits do not
    /// count.
    pub inline_slice: Duration,
    /// Components compiled at once; more wait their turn, first come first
    /// served. One compile already uses every core (wasmtime compiles a
    /// component's functions in parallel) and can take hundreds of MiB for
    /// a large component, so uploads sent in a burst, by one tenant or
    /// many, queue here instead of starving the guests and the API.
    pub max_concurrent_compiles: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 64,
            max_memory_bytes: 256 << 20,
            max_component_bytes: 64 << 20,
            fuel: false,
            cache_dir: None,
            cache_max_bytes: 4 << 30,
            cached_components: 256,
            pooling: true,
            scratch_dir: None,
            warm_instances: 16,
            http_idle_timeout: keep_alive::DEFAULT_IDLE_TIMEOUT,
            inline_slice: placement::INLINE_SLICE,
            max_concurrent_compiles: 1,
        }
    }
}
