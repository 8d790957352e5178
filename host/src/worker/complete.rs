//! Group commit for completions.
//!
//! A completion is one write, and its fixed cost (planning the statement, the
//! round trip, the commit) dwarfs a small guest's run. So runs hand their
//! results to a [`Completer`], and a few flush tasks write whatever has queued
//! up in one `complete_many` call each. Nothing waits for a batch to fill:
//! under light load every flush carries one completion, exactly as before;
//! under heavy load completions arrive while a flush is in flight, and the next
//! flush takes them all.
//!
//! Each completion keeps its own fence and its own answer. If a batch fails as a
//! whole, its completions are written one at a time, so one bad completion
//! cannot fail the others.
//!
//! A run hands its result over ([`Completer::queue`]) and frees its slot
//! before the write commits, so the next run need not wait for it. Queued
//! completions each hold a lease and their result, so their number and their
//! bytes are bounded: when the queue is full, handing over waits, and with it
//! the slot.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex, OwnedSemaphorePermit, Semaphore};

use super::progress::Report;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{Completion, LeaseHandle};

/// Most completions written in one statement, and about the most result
/// bytes (a batch stops growing once it holds this many): large results go
/// in smaller statements rather than one message of hundreds of megabytes.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Most result bytes queued at once, counted in KiB: many small results may
/// queue, but not many large ones.
const MAX_QUEUED_KIB: u32 = 64 << 10;

struct Pending {
    lease: LeaseHandle,
    result: Vec<u8>,
    /// The progress the completion carries.
    progress: Option<Report>,
    reply: oneshot::Sender<Result<()>>,
}

impl Pending {
    fn completion(&self) -> Completion<'_> {
        Completion {
            lease: &self.lease,
            result: &self.result,
            progress: self.progress.as_ref().map(Report::as_progress),
        }
    }
}

/// A completion handed over: its answer, once written.
pub(super) struct Queued {
    answer: oneshot::Receiver<Result<()>>,
    /// Its room in the bounded queue, held until the answer comes.
    _room: Room,
}

/// The queue's bounds: completions, and their result bytes in KiB.
struct Bounds {
    places: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

/// One completion's place in the queue and its bytes' share.
struct Room {
    _place: OwnedSemaphorePermit,
    _kib: OwnedSemaphorePermit,
}

impl Bounds {
    fn new(max_queued: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(max_queued.max(1))),
            kib: Arc::new(Semaphore::new(MAX_QUEUED_KIB as usize)),
        }
    }

    /// Room for a result of `bytes`, once there is room.
    async fn admit(&self, bytes: usize) -> Room {
        let place = self.places.clone().acquire_owned().await;
        let kib = self.kib.clone().acquire_many_owned(kib(bytes)).await;
        Room {
            _place: place.expect("the places semaphore is never closed"),
            _kib: kib.expect("the bytes semaphore is never closed"),
        }
    }
}

/// Hands completions to the flush tasks. The tasks end once every `Completer`
/// clone is gone and the queue is written out.
#[derive(Clone)]
pub(super) struct Completer {
    engine: Engine,
    queue: mpsc::UnboundedSender<Pending>,
    bounds: Arc<Bounds>,
}

impl Completer {
    /// Start `flushers` flush tasks: at most that many completion writes are
    /// in flight at once, with at most `max_queued` completions waiting on them.
    pub(super) fn start(engine: Engine, flushers: usize, max_queued: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..flushers.max(1) {
            tokio::spawn(flush_loop(engine.clone(), receiver.clone()));
        }
        Self {
            engine,
            queue,
            bounds: Arc::new(Bounds::new(max_queued)),
        }
    }

    /// Queue the completion, once there is room; [`Completer::written`]
    /// then waits for its answer.
    pub(super) async fn queue(&self, completion: &Completion<'_>) -> Queued {
        let room = self.bounds.admit(completion.result.len()).await;
        let (reply, answer) = oneshot::channel();
        let _ = self.queue.send(Pending {
            lease: completion.lease.clone(),
            result: completion.result.to_vec(),
            progress: completion.progress.map(|p| Report {
                percent: p.percent,
                message: p.message.to_owned(),
            }),
            reply,
        });
        Queued {
            answer,
            _room: room,
        }
    }

    /// What [`Engine::complete_with`] would have returned for a queued
    /// completion.
    pub(super) async fn written(&self, queued: Queued, completion: &Completion<'_>) -> Result<()> {
        match queued.answer.await {
            Ok(written) => written,
            // The flush tasks are gone (a panic in one): write it directly.
            Err(_) => self.engine.complete_with(completion).await,
        }
    }
}

/// A result's share of [`MAX_QUEUED_KIB`]: at least one, at most all of it.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_QUEUED_KIB)
}

async fn flush_loop(engine: Engine, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>) {
    while let Some(batch) = next_batch(&receiver).await {
        write(&engine, batch).await;
    }
}

/// Wait for one completion, then take others already queued, up to the caps.
async fn next_batch(receiver: &Mutex<mpsc::UnboundedReceiver<Pending>>) -> Option<Vec<Pending>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut bytes = first.result.len();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        match receiver.try_recv() {
            Ok(next) => {
                bytes += next.result.len();
                batch.push(next);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn write(engine: &Engine, batch: Vec<Pending>) {
    metrics::histogram!("flowfabric_completion_batch_size").record(batch.len() as f64);
    let written = {
        let completions: Vec<Completion<'_>> = batch.iter().map(Pending::completion).collect();
        engine.complete_many_with(&completions).await
    };
    match written {
        Ok(results) => {
            for (pending, result) in batch.into_iter().zip(results) {
                let _ = pending.reply.send(result);
            }
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                count = batch.len(),
                "batched completion failed; writing one at a time"
            );
            for pending in batch {
                let result = engine.complete_with(&pending.completion()).await;
                let _ = pending.reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(result_bytes: usize) -> Pending {
        let id = uuid::Uuid::now_v7();
        Pending {
            lease: LeaseHandle {
                tenant_id: id.into(),
                execution_id: id.into(),
                attempt_index: 1,
                lease_id: id,
                lease_epoch: 1,
            },
            result: vec![0; result_bytes],
            progress: None,
            reply: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_up_to_its_caps() {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Mutex::new(receiver);
        for _ in 0..300 {
            queue.send(pending(10)).unwrap();
        }
        let sizes = [
            next_batch(&receiver).await.unwrap().len(),
            next_batch(&receiver).await.unwrap().len(),
        ];
        assert_eq!(sizes, [MAX_BATCH, 300 - MAX_BATCH]);

        for _ in 0..3 {
            queue.send(pending(5 << 20)).unwrap();
        }
        assert_eq!(
            next_batch(&receiver).await.unwrap().len(),
            2,
            "two results of 5 MiB pass the byte cap"
        );
        assert_eq!(next_batch(&receiver).await.unwrap().len(), 1);

        drop(queue);
        assert!(next_batch(&receiver).await.is_none(), "closed and drained");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_by_count_and_by_bytes() {
        use futures::FutureExt;

        let bounds = Bounds::new(3);
        let rooms = [
            bounds.admit(0).await,
            bounds.admit(10).await,
            bounds.admit(10).await,
        ];
        assert!(
            bounds.admit(0).now_or_never().is_none(),
            "three places, all taken"
        );
        drop(rooms);

        let large = 4 << 20;
        let bounds = Bounds::new(1_000);
        let mut rooms = Vec::new();
        for _ in 0..(MAX_QUEUED_KIB as usize * 1024 / large) {
            rooms.push(
                bounds
                    .admit(large)
                    .now_or_never()
                    .expect("room for these bytes"),
            );
        }
        assert!(
            bounds.admit(1).now_or_never().is_none(),
            "the bytes are all taken"
        );
        rooms.pop();
        assert!(
            bounds.admit(large).now_or_never().is_some(),
            "freed bytes admit again"
        );
        assert_eq!(
            kib(usize::MAX),
            MAX_QUEUED_KIB,
            "a result never needs more than all"
        );
    }
}
