//! Instances kept for the next attempt of the same tenant's component kind,
//! when its grant asks for it (`reuse_instances`, which the operator's
//! ceiling must allow).
//!
//! Why: most of what a task costs an interpreted guest is its fresh
//! instance. `bench languages` measures, with wasmtime alone, a JavaScript
//! no-op at about 300 µs with a fresh instance and about 13 µs as a later
//! call on one instance; Python about 690 µs against 2 µs; Rust 16 µs
//! against under 1 µs. A fresh instance per attempt is what keeps one run's
//! memory from the next, so it stays the default; a tenant that wants the
//! speed lets a kind's attempts share instances, as a process-based job
//! runner's jobs share their worker process.
//!
//! What is shared, and what never is:
//! * an instance serves only attempts of the tenant, component kind and
//!   component version it was made for: never another tenant's, never a
//!   kind with other grants;
//! * everything the host gives an attempt is its own: its host calls, its
//!   grant's HTTP and config values (read at each call), its captured
//!   output, its memory and time limits, its turn on the guest threads. What
//!   the guest keeps in its own memory (globals, caches) stays for the next
//!   attempt: that is the point, and why it is opt-in;
//! * an instance is kept only after a run that returned (success or the
//!   task's own error): never after a trap, a timeout, a cancel, a host call
//!   that ended the attempt, or a refused memory growth. A grant with
//!   scratch space cannot reuse instances (the directory is preopened when
//!   the instance is made);
//! * bounded: at most [`super::RuntimeConfig::warm_instances`] kept at once
//!   (the pooling allocator has that many slots beyond the running ones, so
//!   a kept instance never takes a running attempt's place), each kept for
//!   at most [`MAX_IDLE`] and used for at most [`MAX_USES`] attempts; the
//!   oldest goes first when the limit is reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::Task;
use super::sandbox::StoreState;
use crate::model::TenantId;

/// How long an instance may wait unused before it is dropped.
pub(super) const MAX_IDLE: Duration = Duration::from_secs(60);

/// Attempts one instance serves at most: what a guest leaks from run to run
/// (memory it never frees, resources it never drops) stays bounded.
pub(super) const MAX_USES: u32 = 1_000;

/// Which attempts may share an instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct WarmKey {
    pub tenant: TenantId,
    pub kind: Arc<str>,
    /// The component version's content digest.
    pub digest: Arc<str>,
}

/// An instance between attempts, with the store that holds it.
pub(super) struct WarmInstance {
    pub store: Store<StoreState>,
    pub task: Task,
    /// Attempts it has served.
    pub uses: u32,
    idle_since: Instant,
}

impl WarmInstance {
    pub(super) fn new(store: Store<StoreState>, task: Task, uses: u32) -> Self {
        Self {
            store,
            task,
            uses,
            idle_since: Instant::now(),
        }
    }

    fn is_stale(&self, now: Instant) -> bool {
        now.duration_since(self.idle_since) > MAX_IDLE
    }
}

/// The kept instances.
pub(super) struct WarmPool {
    capacity: usize,
    idle: Mutex<HashMap<WarmKey, Vec<WarmInstance>>>,
}

impl WarmPool {
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            capacity: capacity as usize,
            idle: Mutex::default(),
        }
    }

    /// The most recently kept instance for `key`, if any is still fresh.
    /// What is dropped here (stale instances) is returned to be dropped by
    /// the caller, outside the lock.
    pub(super) fn take(&self, key: &WarmKey) -> (Option<WarmInstance>, Vec<WarmInstance>) {
        let now = Instant::now();
        let mut idle = self.lock();
        let Some(kept) = idle.get_mut(key) else {
            return (None, Vec::new());
        };
        let (stale, fresh): (Vec<_>, Vec<_>) = kept.drain(..).partition(|w| w.is_stale(now));
        *kept = fresh;
        let taken = kept.pop();
        if kept.is_empty() {
            idle.remove(key);
        }
        (taken, stale)
    }

    /// Keep `instance` for `key`'s next attempt. Returns what has to go to
    /// make room (the oldest kept instances), for the caller to drop
    /// outside the lock; with no room at all, `instance` itself.
    pub(super) fn keep(&self, key: WarmKey, instance: WarmInstance) -> Vec<WarmInstance> {
        if self.capacity == 0 || instance.uses >= MAX_USES {
            return vec![instance];
        }
        let mut idle = self.lock();
        let mut dropped = Vec::new();
        while idle.values().map(Vec::len).sum::<usize>() >= self.capacity {
            let Some(oldest) = oldest_key(&idle) else {
                break;
            };
            let kept = idle.get_mut(&oldest).expect("the oldest key is kept");
            dropped.push(kept.remove(0));
            if kept.is_empty() {
                idle.remove(&oldest);
            }
        }
        idle.entry(key).or_default().push(instance);
        dropped
    }

    /// Instances kept now.
    pub(super) fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WarmKey, Vec<WarmInstance>>> {
        self.idle.lock().expect("warm instances")
    }
}

/// The key whose first (oldest) kept instance has been idle longest.
fn oldest_key(idle: &HashMap<WarmKey, Vec<WarmInstance>>) -> Option<WarmKey> {
    idle.iter()
        .filter_map(|(key, kept)| kept.first().map(|w| (w.idle_since, key)))
        .min_by_key(|(since, _)| *since)
        .map(|(_, key)| key.clone())
}
