//! Scratch space: an opt-in directory of each attempt's own, preopened as
//! `/scratch`, holding at most the bytes its grant allows.
//!
//! wasmtime-wasi preopens a host directory through cap-std, which keeps the
//! guest inside it (no `..`, no absolute paths, no symlink out), but it has
//! no notion of how much the guest writes. So the runtime shadows the few
//! `wasi:filesystem/types` functions that make a file longer or create an
//! entry, charges each against the attempt's [`Quota`] first, and then hands
//! the call to wasmtime-wasi unchanged. Every other filesystem call is
//! wasmtime-wasi's own.
//!
//! The quota counts what the guest *writes*, not what it holds: bytes
//! written (an overwrite counts again, a delete gives nothing back), growth
//! by `set-size`, and one block ([`ENTRY_BYTES`]) for every file, directory
//! or link it creates, so a guest cannot exhaust inodes with empty files. No
//! file may reach past the quota either, so a write at a far offset cannot
//! make a huge sparse file. That bounds disk use without walking the tree,
//! and it cannot be raced: the charge is taken before the write, in the
//! store. The directory lives for one attempt only, so the guest needs no
//! more. A write past the quota fails with `insufficient-space` (ENOSPC) and
//! writes nothing; the guest decides what to do about it.
//!
//! The directory is created when the attempt's store is, under a root of the
//! runtime's own, with an unguessable name and mode 0700, and removed when the
//! store is dropped: when the run ends however it ends, or when it is aborted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::{DynOutputStream, FsResult, OutputStream, Pollable, StreamError};

use super::capture::Capture;
use super::sandbox::StoreState;

/// What creating one file, directory or link costs against the quota.
pub const ENTRY_BYTES: u64 = 4096;

/// The interface whose write paths are metered, as wasmtime-wasi links it.
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Bytes one attempt may still write to its scratch directory. An attempt
/// without scratch has a quota of zero, so nothing it could reach is
/// writable even if a descriptor appeared.
#[derive(Default)]
pub(super) struct Quota {
    limit: u64,
    used: AtomicU64,
    /// Where the first refusal is explained (the attempt's stderr): a
    /// stream write's error reaches most guests' libc as a bare EIO, since
    /// it does not ask `filesystem-error-code` what it was.
    notice: Option<Capture>,
    noticed: AtomicBool,
}

impl Quota {
    pub(super) fn new(limit: u64, notice: Capture) -> Self {
        Self {
            limit,
            notice: Some(notice),
            ..Self::default()
        }
    }

    /// Take `bytes` from the quota, or refuse without taking any.
    fn charge(&self, bytes: u64) -> Result<(), ErrorCode> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|_| self.refused())
    }

    fn refused(&self) -> ErrorCode {
        if let Some(notice) = &self.notice {
            if !self.noticed.swap(true, Ordering::AcqRel) {
                let line = format!(
                    "flowfabric: a write to /scratch was refused: this attempt's scratch quota \
                     of {} bytes is used up (writes and a block per created entry count)\n",
                    self.limit
                );
                let _ = notice.clone().write(Bytes::from(line));
            }
        }
        ErrorCode::InsufficientSpace
    }

    /// Give back what a refused or short operation did not use.
    fn refund(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// Refuse to let any file reach past `end` (the quota's own size).
    fn check_end(&self, end: Option<u64>) -> Result<(), ErrorCode> {
        match end {
            Some(end) if end <= self.limit => Ok(()),
            _ => Err(self.refused()),
        }
    }

    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Where a runtime makes its attempts' directories: the operator's, or by
/// default one of the runtime's own under the system's temporary directory,
/// removed with the runtime.
pub(super) enum ScratchRoot {
    Given(PathBuf),
    Own(tempfile::TempDir),
}

impl ScratchRoot {
    pub(super) fn new(given: Option<PathBuf>) -> std::io::Result<Self> {
        Ok(match given {
            Some(path) => {
                std::fs::create_dir_all(&path)?;
                Self::Given(path)
            }
            None => Self::Own(
                tempfile::Builder::new()
                    .prefix("flowfabric-scratch-")
                    .tempdir()?,
            ),
        })
    }

    pub(super) fn path(&self) -> &Path {
        match self {
            Self::Given(path) => path,
            Self::Own(dir) => dir.path(),
        }
    }

    /// A fresh directory for one attempt, removed when the returned handle
    /// is dropped.
    pub(super) fn attempt_dir(&self) -> std::io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("attempt-")
            .tempdir_in(self.path())
    }
}

type Fd = Resource<Descriptor>;
type Reply<T> = wasmtime::Result<(Result<T, ErrorCode>,)>;

/// A wasmtime-wasi result as the guest sees it: an error code, or a trap.
fn reply<T>(result: FsResult<T>) -> Reply<T> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(e) => Ok((Err(e.downcast()?),)),
    }
}

/// A second handle to a descriptor the guest lent for one call.
fn lend(fd: &Fd) -> Fd {
    Resource::new_borrow(fd.rep())
}

/// Run `op` with `bytes` taken from the quota first, given back if it fails.
async fn charged<T>(
    quota: &Quota,
    bytes: u64,
    op: impl std::future::Future<Output = FsResult<T>>,
) -> Reply<T> {
    if let Err(e) = quota.charge(bytes) {
        return Ok((Err(e),));
    }
    let result = op.await;
    if result.is_err() {
        quota.refund(bytes);
    }
    reply(result)
}

/// Shadow the write paths of `wasi:filesystem/types` (see the module docs).
/// Call after wasmtime-wasi has linked its own.
pub(super) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store, (fd, buf, offset): (Fd, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let len = buf.len() as u64;
                let quota = state.scratch_quota.clone();
                if let Err(e) = quota.check_end(offset.checked_add(len)) {
                    return Ok((Err(e),));
                }
                if let Err(e) = quota.charge(len) {
                    return Ok((Err(e),));
                }
                let written = state.filesystem().write(fd, buf, offset).await;
                quota.refund(len - written.as_ref().map_or(0, |n| (*n).min(len)));
                reply(written)
            })
        },
    )?;
    types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store, (fd, offset): (Fd, u64)| {
            let state = store.data_mut();
            if let Err(e) = state.scratch_quota.check_end(Some(offset)) {
                return Ok((Err(e),));
            }
            let stream = state.filesystem().write_via_stream(fd, offset);
            metered(state, stream, Some(offset))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store, (fd,): (Fd,)| {
            let state = store.data_mut();
            let stream = state.filesystem().append_via_stream(fd);
            metered(state, stream, None)
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store, (fd, size): (Fd, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.scratch_quota.clone();
                if let Err(e) = quota.check_end(Some(size)) {
                    return Ok((Err(e),));
                }
                let current = match state.filesystem().stat(lend(&fd)).await {
                    Ok(stat) => stat.size,
                    Err(e) => return reply(Err(e)),
                };
                let mut fs = state.filesystem();
                charged(&quota, size.saturating_sub(current), fs.set_size(fd, size)).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (fd, path_flags, path, open_flags, flags): (
            Fd,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.scratch_quota.clone();
                let creates = open_flags.contains(OpenFlags::CREATE)
                    && state
                        .filesystem()
                        .stat_at(lend(&fd), path_flags, path.clone())
                        .await
                        .is_err();
                let charge = if creates { ENTRY_BYTES } else { 0 };
                let mut fs = state.filesystem();
                let open = fs.open_at(fd, path_flags, path, open_flags, flags);
                charged(&quota, charge, open).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.create-directory-at",
        |mut store, (fd, path): (Fd, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.scratch_quota.clone();
                let mut fs = state.filesystem();
                charged(&quota, ENTRY_BYTES, fs.create_directory_at(fd, path)).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (fd, old, new): (Fd, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.scratch_quota.clone();
                let mut fs = state.filesystem();
                charged(&quota, ENTRY_BYTES, fs.symlink_at(fd, old, new)).await
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store, (fd, path_flags, old, new_dir, new): (Fd, PathFlags, String, Fd, String)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.scratch_quota.clone();
                let mut fs = state.filesystem();
                let link = fs.link_at(fd, path_flags, old, new_dir, new);
                charged(&quota, ENTRY_BYTES, link).await
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Put a metered stream in place of the one wasmtime-wasi opened.
fn metered(
    state: &mut StoreState,
    opened: FsResult<Resource<DynOutputStream>>,
    start: Option<u64>,
) -> Reply<Resource<DynOutputStream>> {
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => return reply(Err(e)),
    };
    let inner = state.table.delete(stream)?;
    let stream: DynOutputStream = Box::new(MeteredStream {
        inner,
        quota: state.scratch_quota.clone(),
        position: start,
    });
    Ok((Ok(state.table.push(stream)?),))
}

/// A file's output stream that charges every byte before it is written.
struct MeteredStream {
    inner: DynOutputStream,
    quota: Arc<Quota>,
    /// Where the next byte lands, for a stream that writes at an offset
    /// (an appending stream's end is the file's, which the quota bounds).
    position: Option<u64>,
}

impl MeteredStream {
    fn charge(&mut self, bytes: usize) -> Result<(), StreamError> {
        let bytes = bytes as u64;
        let end = self.position.map(|p| p.checked_add(bytes));
        let charged = match end {
            Some(end) => self.quota.check_end(end),
            None => Ok(()),
        }
        .and_then(|()| self.quota.charge(bytes));
        match charged {
            Ok(()) => {
                self.position = end.flatten();
                Ok(())
            }
            // A guest that asks `filesystem-error-code` reads ENOSPC as
            // `insufficient-space`; others see EIO and the stderr notice.
            Err(_) => Err(StreamError::LastOperationFailed(
                std::io::Error::from_raw_os_error(libc::ENOSPC).into(),
            )),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for MeteredStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl OutputStream for MeteredStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.charge(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> Result<(), StreamError> {
        self.charge(nelem)?;
        self.inner.write_zeroes(nelem)
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.charge(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    async fn write_ready(&mut self) -> Result<usize, StreamError> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_refuses_without_taking_and_refunds() {
        let stderr = Capture::new(1024);
        let quota = Quota::new(10, stderr.clone());
        quota.charge(6).unwrap();
        assert_eq!(quota.charge(5), Err(ErrorCode::InsufficientSpace));
        assert_eq!(quota.used(), 6, "a refused charge takes nothing");
        quota.refund(2);
        quota.charge(6).unwrap();
        assert_eq!(quota.used(), 10);
        assert_eq!(
            Quota::default().charge(1),
            Err(ErrorCode::InsufficientSpace)
        );
        assert!(quota.check_end(Some(10)).is_ok());
        assert!(quota.check_end(Some(11)).is_err());
        assert!(quota.check_end(None).is_err(), "an offset that overflows");
        let notice = String::from_utf8(stderr.take(0)).unwrap();
        assert_eq!(notice.matches("quota of 10 bytes").count(), 1, "{notice}");
    }
}
