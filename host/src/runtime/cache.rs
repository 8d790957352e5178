//! Compiled components: ready `InstancePre`s in memory, native artifacts on disk.
//!
//! Disk artifacts are keyed by content digest and the engine's compatibility
//! hash, so a changed engine (new wasmtime, other settings) recompiles instead
//! of loading stale code. Files are written to a temporary name and renamed, so a
//! crash never leaves a truncated artifact behind.
//!
//! The directory is bounded: after each artifact written, the least recently
//! used are deleted until the rest fit in `max_bytes` (a load marks a file
//! used by its modification time). Every distinct component any tenant
//! uploads is compiled, and a JavaScript or Python artifact is ~35 MiB, so an
//! unbounded directory would grow with uploads, and with artifacts of
//! earlier engines after an upgrade, until the disk filled. A deleted
//! artifact costs one compile when it is next needed; deleting one another
//! process has open is harmless (it is mapped, and the mapping outlives the
//! name).

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use wasmtime::component::Component;
use wasmtime::Engine;

use super::{ComponentError, Prepared};

pub(super) struct ArtifactCache {
    dir: Option<PathBuf>,
    /// The most the artifacts in `dir` may take together.
    max_bytes: u64,
    engine_hash: String,
    capacity: usize,
    ready: Mutex<Ready>,
}

#[derive(Default)]
struct Ready {
    by_digest: HashMap<String, Prepared>,
    order: VecDeque<String>,
}

impl ArtifactCache {
    pub(super) fn new(
        engine: &Engine,
        dir: Option<PathBuf>,
        capacity: usize,
        max_bytes: u64,
    ) -> Result<Self, ComponentError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                ComponentError::Internal(format!("creating cache dir {}: {e}", dir.display()))
            })?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            max_bytes,
            engine_hash: format!("{:016x}", hasher.finish()),
            capacity: capacity.max(1),
            ready: Mutex::new(Ready::default()),
        })
    }

    pub(super) fn ready(&self, digest: &str) -> Option<Prepared> {
        self.ready
            .lock()
            .expect("cache lock")
            .by_digest
            .get(digest)
            .cloned()
    }

    pub(super) fn keep_ready(&self, digest: &str, prepared: Prepared) {
        let mut ready = self.ready.lock().expect("cache lock");
        if ready
            .by_digest
            .insert(digest.to_owned(), prepared)
            .is_none()
        {
            ready.order.push_back(digest.to_owned());
        }
        while ready.order.len() > self.capacity {
            if let Some(old) = ready.order.pop_front() {
                ready.by_digest.remove(&old);
            }
        }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_hash)))
    }

    pub(super) fn load_artifact(
        &self,
        engine: &Engine,
        digest: &str,
    ) -> Result<Option<Component>, ComponentError> {
        let Some(path) = self.path(digest).filter(|p| p.exists()) else {
            return Ok(None);
        };
        // SAFETY: the file is one this cache wrote with `Component::serialize` for an
        // engine with the same compatibility hash; the cache directory belongs to
        // this host and is not writable by tenants.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                mark_used(&path);
                Ok(Some(component))
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unreadable artifact");
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    pub(super) fn store_artifact(&self, digest: &str, component: &Component) {
        let Some(path) = self.path(digest) else {
            return;
        };
        let result = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, bytes)
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
            return;
        }
        if let Some(dir) = &self.dir {
            evict_least_used(dir, self.max_bytes, &path);
        }
    }
}

/// Artifacts are `*.cwasm`; a temporary file older than this was left by a
/// process that died while writing it.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// A load counts as a use: the file's modification time becomes now.
fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Delete the least recently used artifacts in `dir`, never `keep` (the
/// one just written), until the rest take at most `max_bytes`; and any
/// abandoned temporary file. Returns how many files went.
pub(super) fn evict_least_used(dir: &Path, max_bytes: u64, keep: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    let mut artifacts = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let is_artifact = path.extension().is_some_and(|e| e == "cwasm");
        let abandoned = now.duration_since(used).unwrap_or_default() > ABANDONED_AFTER;
        if !is_artifact && meta.is_file() && abandoned {
            removed += usize::from(std::fs::remove_file(&path).is_ok());
        } else if is_artifact && path != keep {
            artifacts.push((used, meta.len(), path));
        }
    }
    let kept = std::fs::metadata(keep).map_or(0, |m| m.len());
    let mut total = kept + artifacts.iter().map(|(_, len, _)| len).sum::<u64>();
    artifacts.sort();
    for (_, len, path) in artifacts {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
            removed += 1;
            tracing::debug!(path = %path.display(), "evicted compiled component");
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, len: usize, age: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_artifacts_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let oldest = file(dir.path(), "a-1.cwasm", 100, 3 * hour);
        let older = file(dir.path(), "b-1.cwasm", 100, 2 * hour);
        let recent = file(dir.path(), "c-1.cwasm", 100, hour / 2);
        // The one just written is never evicted, even when it alone is over.
        let written = file(dir.path(), "d-1.cwasm", 100, Duration::ZERO);
        let abandoned = file(dir.path(), "e-1.cwasm.tmp77", 10, 2 * hour);
        let being_written = file(dir.path(), "f-1.cwasm.tmp78", 10, Duration::ZERO);

        assert_eq!(evict_least_used(dir.path(), 250, &written), 3);
        for gone in [&oldest, &older, &abandoned] {
            assert!(!gone.exists(), "{} was evicted", gone.display());
        }
        for kept in [&recent, &written, &being_written] {
            assert!(kept.exists(), "{} is kept", kept.display());
        }
        assert_eq!(evict_least_used(dir.path(), 50, &written), 1);
        assert!(!recent.exists() && written.exists());
    }

    #[test]
    fn a_load_marks_an_artifact_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = file(dir.path(), "a-1.cwasm", 1, Duration::from_secs(7200));
        mark_used(&path);
        let age = SystemTime::now()
            .duration_since(std::fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "{age:?}");
    }
}
