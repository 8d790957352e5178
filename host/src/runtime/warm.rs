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
}

/// One kept value and since when it waits.
struct Idle<T> {
    value: T,
    since: Instant,
}

impl<T> Idle<T> {
    fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) > MAX_IDLE
    }
}

/// The kept instances (generic only so that its rules can be tested
/// without making instances).
pub(super) struct WarmPool<T = WarmInstance> {
    capacity: usize,
    idle: Mutex<HashMap<WarmKey, Vec<Idle<T>>>>,
}

impl<T> WarmPool<T> {
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            capacity: capacity as usize,
            idle: Mutex::default(),
        }
    }

    /// The most recently kept instance for `key` that is not stale.
    pub(super) fn take(&self, key: &WarmKey) -> Option<T> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &WarmKey, now: Instant) -> Option<T> {
        let mut idle = self.lock();
        let kept = idle.get_mut(key)?;
        let taken = kept.pop();
        if kept.is_empty() {
            idle.remove(key);
        }
        publish(&idle);
        drop(idle);
        // The newest is stale only if all are; it is dropped outside the lock.
        taken.filter(|w| !w.is_stale(now)).map(|w| w.value)
    }

    /// Take out every instance unused for longer than [`MAX_IDLE`], for the
    /// caller to drop outside the lock. The runtime's epoch thread calls it
    /// about once a second, so an instance no attempt asks for again (its
    /// kind's grant changed, a new version was uploaded) does not hold its
    /// memory longer than that.
    pub(super) fn take_stale(&self) -> Vec<T> {
        self.take_stale_at(Instant::now())
    }

    fn take_stale_at(&self, now: Instant) -> Vec<T> {
        let mut idle = self.lock();
        let mut stale = Vec::new();
        idle.retain(|_, kept| {
            let (old, fresh): (Vec<_>, Vec<_>) = kept.drain(..).partition(|w| w.is_stale(now));
            stale.extend(old.into_iter().map(|w| w.value));
            *kept = fresh;
            !kept.is_empty()
        });
        publish(&idle);
        stale
    }

    /// Keep `value` for `key`'s next attempt. Returns what has to go to
    /// make room (the oldest kept), for the caller to drop outside the
    /// lock; with no room at all, `value` itself.
    pub(super) fn keep(&self, key: WarmKey, value: T) -> Vec<T> {
        if self.capacity == 0 {
            return vec![value];
        }
        let mut idle = self.lock();
        let mut dropped = Vec::new();
        while count(&idle) >= self.capacity {
            let Some(oldest) = oldest_key(&idle) else {
                break;
            };
            let kept = idle.get_mut(&oldest).expect("the oldest key is kept");
            dropped.push(kept.remove(0).value);
            if kept.is_empty() {
                idle.remove(&oldest);
            }
        }
        let since = Instant::now();
        idle.entry(key).or_default().push(Idle { value, since });
        publish(&idle);
        dropped
    }

    /// Instances kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        count(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WarmKey, Vec<Idle<T>>>> {
        self.idle.lock().expect("warm instances")
    }
}

fn count<T>(idle: &HashMap<WarmKey, Vec<Idle<T>>>) -> usize {
    idle.values().map(Vec::len).sum()
}

/// The `flowfabric_warm_instances` gauge: instances kept now, set wherever
/// the count changes (a keep, a take, a sweep).
fn publish<T>(idle: &HashMap<WarmKey, Vec<Idle<T>>>) {
    metrics::gauge!("flowfabric_warm_instances").set(count(idle) as f64);
}

/// The key whose first (oldest) kept instance has waited longest.
fn oldest_key<T>(idle: &HashMap<WarmKey, Vec<Idle<T>>>) -> Option<WarmKey> {
    idle.iter()
        .filter_map(|(key, kept)| kept.first().map(|w| (w.since, key)))
        .min_by_key(|(since, _)| *since)
        .map(|(_, key)| key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: u128, kind: &str) -> WarmKey {
        WarmKey {
            tenant: TenantId::from(uuid::Uuid::from_u128(tenant)),
            kind: Arc::from(kind),
            digest: Arc::from("d"),
        }
    }

    #[test]
    fn an_instance_serves_only_its_key_newest_first() {
        let pool = WarmPool::new(8);
        assert!(pool.keep(key(1, "a"), 1).is_empty());
        assert!(pool.keep(key(1, "a"), 2).is_empty());
        assert!(pool.keep(key(2, "a"), 3).is_empty());
        assert_eq!(pool.take(&key(1, "b")), None, "another kind");
        assert_eq!(pool.take(&key(3, "a")), None, "another tenant");
        assert_eq!(pool.take(&key(1, "a")), Some(2));
        assert_eq!(pool.take(&key(1, "a")), Some(1));
        assert_eq!(pool.take(&key(1, "a")), None);
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_full_pool_drops_the_oldest_and_an_empty_one_keeps_nothing() {
        let pool = WarmPool::new(2);
        assert!(pool.keep(key(1, "a"), 1).is_empty());
        assert!(pool.keep(key(2, "a"), 2).is_empty());
        assert_eq!(pool.keep(key(1, "a"), 3), vec![1]);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.take(&key(1, "a")), Some(3));
        assert_eq!(pool.take(&key(2, "a")), Some(2));
        let none = WarmPool::new(0);
        assert_eq!(none.keep(key(1, "a"), 7), vec![7]);
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn instances_unused_past_the_limit_are_not_served_and_are_swept() {
        let pool = WarmPool::new(8);
        pool.keep(key(1, "a"), 1);
        pool.keep(key(2, "a"), 2);
        let later = Instant::now() + MAX_IDLE + Duration::from_secs(1);
        assert_eq!(pool.take_at(&key(1, "a"), later), None);
        assert_eq!(pool.take_stale_at(Instant::now()), Vec::<i32>::new());
        assert_eq!(pool.take_stale_at(later), vec![2]);
        assert_eq!(pool.len(), 0);
    }
}
