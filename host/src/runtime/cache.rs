//! Compiled components: ready `InstancePre`s in memory, native artifacts on disk.
//!
//! Disk artifacts are keyed by content digest and the engine's compatibility
//! hash, so a changed engine (new wasmtime, other settings) recompiles instead
//! of loading stale code. Files are written to a temporary name and renamed, so a
//! crash never leaves a truncated artifact behind.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex;

use wasmtime::component::Component;
use wasmtime::Engine;

use super::{ComponentError, Prepared};

pub(super) struct ArtifactCache {
    dir: Option<PathBuf>,
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
            Ok(component) => Ok(Some(component)),
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
        }
    }
}
