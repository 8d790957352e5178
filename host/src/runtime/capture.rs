//! An attempt's stdout and stderr: bounded in-memory buffers that the worker
//! turns into frames.
//!
//! Why not wasmtime-wasi's `MemoryOutputPipe`, which behaves the same way
//! for one attempt: a store that runs several attempts (see `warm`) must
//! hand each attempt's output over and start the next one empty, while the
//! guest keeps the stream handles it already holds. The pipe can only be
//! read, never emptied; a capture is emptied by [`Capture::take`], and
//! every handle the guest holds writes into what comes after.
//!
//! Within an attempt it keeps the pipe's rules: a write that does not fit
//! what is left of the capacity is refused as a trap, and once the buffer is
//! full the stream reads as closed.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// One output stream of a store, shared by every handle to it.
#[derive(Debug, Clone)]
pub(super) struct Capture(Arc<Mutex<Buffer>>);

#[derive(Debug)]
struct Buffer {
    bytes: BytesMut,
    capacity: usize,
}

impl Capture {
    pub(super) fn new(capacity: usize) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            bytes: BytesMut::new(),
            capacity,
        })))
    }

    /// What was written since the last `take`, handed over; what comes next
    /// starts empty, with room for `capacity` bytes.
    pub(super) fn take(&self, capacity: usize) -> Vec<u8> {
        let mut buffer = self.buffer();
        buffer.capacity = capacity;
        std::mem::take(&mut buffer.bytes).to_vec()
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding the lock leaves plain bytes behind: still
        // consistent, so a poisoned lock is used as it is.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append as much of `bytes` as fits, returning how much did.
    fn append_some(&self, bytes: &[u8]) -> usize {
        let mut buffer = self.buffer();
        let fits = bytes.len().min(buffer.capacity - buffer.bytes.len());
        buffer.bytes.extend_from_slice(&bytes[..fits]);
        fits
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let mut buffer = self.buffer();
        if bytes.len() > buffer.capacity - buffer.bytes.len() {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "write beyond the capacity of the captured output"
            )));
        }
        buffer.bytes.extend_from_slice(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        let buffer = self.buffer();
        match buffer.capacity - buffer.bytes.len() {
            0 => Err(StreamError::Closed),
            room => Ok(room),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(self.append_some(buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_hands_over_the_output_and_the_handles_write_on() {
        let capture = Capture::new(8);
        let mut handle = capture.clone();
        handle.write(Bytes::from_static(b"first")).unwrap();
        assert_eq!(capture.take(4), b"first");
        // The same handle, after the take, with the new capacity.
        handle.write(Bytes::from_static(b"next")).unwrap();
        assert!(matches!(handle.check_write(), Err(StreamError::Closed)));
        assert!(matches!(
            handle.write(Bytes::from_static(b"!")),
            Err(StreamError::Trap(_))
        ));
        assert_eq!(capture.take(8), b"next");
        assert_eq!(capture.take(8), b"", "a take empties it");
    }

    #[test]
    fn a_write_that_does_not_fit_is_refused_whole() {
        let capture = Capture::new(4);
        let mut handle = capture.clone();
        handle.write(Bytes::from_static(b"ab")).unwrap();
        assert_eq!(handle.check_write().unwrap(), 2);
        assert!(handle.write(Bytes::from_static(b"cde")).is_err());
        assert_eq!(capture.append_some(b"cde"), 2);
        assert_eq!(capture.take(4), b"abcd");
    }
}
