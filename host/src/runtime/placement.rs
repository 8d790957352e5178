//! Where a guest runs: on the caller's thread first, on the guest threads
//! once it has run there for a while.
//!
//! Why: guests run on threads of their own so that a spinning guest cannot
//! starve the host's claims, leases and API (see `Runtime::guests`). But
//! most tasks finish in microseconds, and handing one to a guest thread and
//! its answer back costs two thread wake-ups: 11 to 47 µs a task on a 2 vCPU
//! VM (`bench languages`' hop), more than a Rust guest's whole run on a kept
//! instance and a third of a fresh one. So an attempt starts where its caller
//! is, and an epoch tick that finds it has held that thread for longer than
//! [`INLINE_SLICE`] marks it (`Placement::tick`); the guest yields at that
//! tick as it does at every one, and [`run_here_first`] hands the half-run
//! future to the guest threads. A guest holds the caller's thread for under
//! two ticks (4 ms).
//!
//! What counts is the time the attempt held the caller's thread: the time
//! spent polling its future there, the guest's code and the host calls that
//! finished without waiting alike, and not the time between polls, when
//! the attempt waits on the network, the database, a sleep or a turn and
//! the thread is free. A guest that spends its life waiting would otherwise
//! move after 2 ms of waiting and pay a wake-up of a guest thread at every
//! answer from then on; and a guest cannot hide CPU from the clock behind
//! host calls that answer at once.
//!
//! It still needs a turn (`fair`) before it runs, wherever it runs, so turns
//! are shared between tenants exactly as before. What is new is that a few
//! milliseconds of a guest's CPU may be spent on a host thread, at the
//! host's priority. A component whose attempts keep moving would take that
//! at every start; so once an attempt of a component moved, its next
//! [`SKIP_AFTER_MOVE`] attempts go straight to the guest threads
//! ([`InlineHint`]): a component that spins takes the host's threads in one
//! start in `SKIP_AFTER_MOVE + 1` at most.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;

/// Attempts of a component that go straight to the guest threads after one
/// of its attempts had to move there.
pub(super) const SKIP_AFTER_MOVE: u32 = 16;

/// How long an attempt may have been on the caller's thread and stay there
/// at an epoch tick. Ticks come every 2 ms whatever the attempt, so one
/// lands in 1 of 70 Rust no-ops (30 µs) and in every other JS one (1 ms):
/// moving at any tick would send those to the guest threads for nothing.
/// Attempts shorter than this never move; none stays past its first tick
/// after it, so under 4 ms in all.
pub const INLINE_SLICE: Duration = Duration::from_millis(2);

/// One attempt's place: on the caller's thread until an epoch tick finds it
/// has held that thread for longer than [`INLINE_SLICE`].
#[derive(Debug)]
pub(super) struct Placement {
    /// How long it may hold the caller's thread ([`INLINE_SLICE`] unless
    /// the runtime's configuration says otherwise).
    slice: Duration,
    /// How long it held the caller's thread; `None` once it moved, and for
    /// an attempt that starts on the guest threads.
    on_caller: Mutex<Option<Held>>,
    /// It must leave the caller's thread at its next yield.
    must_move: AtomicBool,
}

/// The time an attempt held the caller's thread: its polls there.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// The polls that returned.
    before: Duration,
    /// When the poll under way began; `None` between polls.
    polled_since: Option<Instant>,
}

impl Held {
    fn total(self) -> Duration {
        self.before
            + self
                .polled_since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }
}

impl Default for Placement {
    fn default() -> Self {
        Self::new(INLINE_SLICE)
    }
}

impl Placement {
    pub(super) fn new(slice: Duration) -> Self {
        Self {
            slice,
            on_caller: Mutex::default(),
            must_move: AtomicBool::default(),
        }
    }

    /// Called at every epoch tick of the guest.
    pub(super) fn tick(&self) {
        let held = *self.on_caller.lock().expect("placement lock");
        if held.is_some_and(|c| c.total() >= self.slice) {
            self.must_move.store(true, Ordering::Relaxed);
        }
    }

    /// A poll of the attempt on the caller's thread begins (`true`) or
    /// returns (`false`).
    fn polling(&self, began: bool) {
        let mut on_caller = self.on_caller.lock().expect("placement lock");
        let Some(held) = on_caller.as_mut() else {
            return;
        };
        if began {
            held.polled_since = Some(Instant::now());
        } else if let Some(since) = held.polled_since.take() {
            held.before += since.elapsed();
        }
    }

    fn set_on_caller(&self, on_caller: bool) {
        *self.on_caller.lock().expect("placement lock") = on_caller.then(Held::default);
    }

    fn must_move(&self) -> bool {
        self.must_move.load(Ordering::Relaxed)
    }
}

/// What a component's last attempts say about where its next one starts.
#[derive(Debug, Default)]
pub(super) struct InlineHint {
    /// Attempts still to send straight to the guest threads.
    skip: AtomicU32,
}

impl InlineHint {
    /// Whether the next attempt may start on the caller's thread (and, if
    /// not, one fewer to skip).
    fn allows(&self) -> bool {
        self.skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    fn moved(&self) {
        self.skip.store(SKIP_AFTER_MOVE, Ordering::Relaxed);
    }
}

/// Where an attempt ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// Start to end on the caller's thread.
    OnCaller,
    /// Started on the caller's thread, moved to the guest threads at an
    /// epoch tick past [`INLINE_SLICE`].
    Moved,
    /// On the guest threads throughout: its component's attempts moved
    /// lately (or it never got the caller's thread).
    OnGuestThreads,
}

impl Ran {
    /// The `ran` label of `flowfabric_guest_runs_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnCaller => "caller",
            Self::Moved => "moved",
            Self::OnGuestThreads => "guest_threads",
        }
    }
}

/// Run `attempt` on the caller's thread until it ends or an epoch tick
/// past [`INLINE_SLICE`], then on `guests`; straight on `guests` when `hint` says so. A
/// panic inside it, or a guest task that ends abnormally, is `Err` with
/// what happened, as a spawned task's would be.
pub(super) async fn run_here_first<T: Send + 'static>(
    attempt: Pin<Box<dyn Future<Output = T> + Send>>,
    placement: &Placement,
    hint: &InlineHint,
    guests: &tokio::runtime::Handle,
) -> (Result<T, String>, Ran) {
    if !hint.allows() {
        return (on_guest_threads(attempt, guests).await, Ran::OnGuestThreads);
    }
    placement.set_on_caller(true);
    let mut attempt = Some(attempt);
    let here = std::future::poll_fn(|cx| {
        let running = attempt.as_mut().expect("polled until it leaves");
        placement.polling(true);
        let polled = AssertUnwindSafe(running.as_mut())
            .catch_unwind()
            .poll_unpin(cx);
        placement.polling(false);
        match polled {
            Poll::Ready(done) => Poll::Ready(Some(done)),
            Poll::Pending if placement.must_move() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    placement.set_on_caller(false);
    match here {
        Some(done) => (done.map_err(panic_message), Ran::OnCaller),
        None => {
            hint.moved();
            let rest = attempt.take().expect("left half-run");
            (on_guest_threads(rest, guests).await, Ran::Moved)
        }
    }
}

/// The rest of an attempt on the guest threads; stopped when the caller
/// stops waiting for it.
async fn on_guest_threads<T: Send + 'static>(
    attempt: Pin<Box<dyn Future<Output = T> + Send>>,
    guests: &tokio::runtime::Handle,
) -> Result<T, String> {
    let mut task = super::AbortOnDrop(guests.spawn(attempt));
    (&mut task.0).await.map_err(|e| e.to_string())
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_move_sends_the_next_attempts_straight_to_the_guest_threads() {
        let hint = InlineHint::default();
        assert!(hint.allows());
        hint.moved();
        for _ in 0..SKIP_AFTER_MOVE {
            assert!(!hint.allows());
        }
        assert!(hint.allows());
    }

    #[test]
    fn only_a_tick_on_the_callers_thread_makes_an_attempt_move() {
        let placement = Placement::default();
        placement.tick();
        assert!(!placement.must_move(), "not on the caller's thread");
        placement.set_on_caller(true);
        placement.tick();
        assert!(!placement.must_move(), "a tick too soon after the start");
        placement.polling(true);
        held_for(&placement, INLINE_SLICE);
        placement.tick();
        assert!(placement.must_move());
    }

    /// As if the poll under way had begun `ago`.
    fn held_for(placement: &Placement, ago: Duration) {
        let mut held = placement.on_caller.lock().unwrap();
        held.as_mut().unwrap().polled_since = Some(Instant::now() - ago);
    }

    #[test]
    fn time_between_polls_is_not_holding_the_thread() {
        let placement = Placement::default();
        placement.set_on_caller(true);
        // Long waits between short polls.
        for _ in 0..10 {
            placement.polling(true);
            held_for(&placement, INLINE_SLICE / 20);
            placement.polling(false);
            std::thread::sleep(INLINE_SLICE / 4);
        }
        placement.polling(true);
        placement.tick();
        assert!(!placement.must_move(), "half the slice held in all");
        held_for(&placement, INLINE_SLICE / 2);
        placement.tick();
        assert!(placement.must_move(), "the polls add up to the slice");
    }

    #[tokio::test]
    async fn an_attempt_that_yields_after_its_tick_ends_on_the_guest_threads() {
        let guests = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-guest")
            .build()
            .unwrap();
        let placement = Arc::new(Placement::default());
        let hint = InlineHint::default();
        let seen = placement.clone();
        let attempt = Box::pin(async move {
            let first = std::thread::current().name().map(str::to_owned);
            held_for(&seen, INLINE_SLICE);
            seen.tick();
            tokio::task::yield_now().await;
            (first, std::thread::current().name().map(str::to_owned))
        });
        let (answer, ran) = run_here_first(attempt, &placement, &hint, guests.handle()).await;
        let (first, last) = answer.unwrap();
        assert_eq!(ran, Ran::Moved);
        assert_ne!(first.as_deref(), Some("test-guest"));
        assert_eq!(last.as_deref(), Some("test-guest"));
        assert!(
            !hint.allows(),
            "the next attempt starts on the guest threads"
        );
        guests.shutdown_background();
    }

    #[tokio::test]
    async fn a_panic_on_the_callers_thread_is_an_error_not_a_crash() {
        let guests = tokio::runtime::Runtime::new().unwrap();
        let attempt: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(async { panic!("guest bug") });
        let (answer, ran) = run_here_first(
            attempt,
            &Placement::default(),
            &InlineHint::default(),
            guests.handle(),
        )
        .await;
        assert_eq!(ran, Ran::OnCaller);
        assert!(answer.unwrap_err().contains("guest bug"));
        guests.shutdown_background();
    }
}
