//! Progress a guest reports, written a few times a second at most.
//!
//! A guest may report progress as often as it likes (the import promises
//! it is cheap), but each write is a fenced update of the execution's row,
//! which costs the database more than a short run costs the worker. So a
//! report is kept, not written: a writer task writes the newest one once
//! [`INTERVAL`] has passed since the attempt's last write (or, for the
//! first, since the report), and reports that arrive meanwhile replace it.
//! What a run reported last and is still unwritten when it ends goes with
//! its end: a completion carries it into the same statement
//! ([`crate::model::Completion`]), and any other end writes it first. A run
//! shorter than the interval that reports progress then costs no write of
//! its own for it.

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use super::claimed::ClaimedTask;
use crate::engine::{truncate_utf8, MAX_MESSAGE_BYTES};
use crate::model::Progress;

/// Progress is written at most this often; the newest value in between wins.
pub(super) const INTERVAL: Duration = Duration::from_millis(250);

/// A report kept until it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Report {
    pub(super) percent: u8,
    pub(super) message: String,
}

impl Report {
    /// The report as a completion carries it.
    pub(super) fn as_progress(&self) -> Progress<'_> {
        Progress {
            percent: self.percent,
            message: &self.message,
        }
    }
}

/// The newest report of an attempt and its writer.
pub(super) struct Reports {
    state: Mutex<State>,
    /// The host's runtime, where the writer runs (reports may come from a
    /// guest thread's runtime).
    host: tokio::runtime::Handle,
}

#[derive(Default)]
struct State {
    /// The newest report not yet written.
    pending: Option<Report>,
    /// Reports so far: a write clears `pending` only if none came since it
    /// read it.
    reported: u64,
    last_write: Option<Instant>,
    /// Whether a writer task is on its way (it disarms itself when nothing
    /// is left to write).
    armed: bool,
    /// The run is over: what is pending was taken, and no writer starts.
    stopped: bool,
}

impl Reports {
    /// Reports of an attempt; call on the host's runtime.
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            host: tokio::runtime::Handle::current(),
        }
    }

    /// Keep `report` as the newest (its message cut to what storage
    /// keeps, so a guest cannot park a large one here), and arm a writer
    /// for it if none is armed.
    pub(super) fn report(&self, owner: &Weak<ClaimedTask>, percent: u8, mut message: String) {
        truncate_utf8(&mut message, MAX_MESSAGE_BYTES);
        let mut state = self.state.lock().expect("progress lock");
        state.pending = Some(Report { percent, message });
        state.reported += 1;
        if !state.armed && !state.stopped {
            let due = state.last_write.unwrap_or_else(Instant::now) + INTERVAL;
            state.armed = true;
            // Not aborted: it stops by itself once the run is over (at
            // most a sleep later), and a write it started is let finish,
            // since a write dropped mid-way could leave its connection
            // inside a transaction.
            drop(self.host.spawn(write_when_due(owner.clone(), due)));
        }
    }

    /// Take what is not written yet, and stop the writer: the run is over.
    /// A write in flight finishes; what it writes is still pending until
    /// then, and so is returned too (written twice, the same value).
    pub(super) fn take(&self) -> Option<Report> {
        let mut state = self.state.lock().expect("progress lock");
        state.stopped = true;
        state.pending.take()
    }

    /// The newest report, if it is unwritten and the run goes on, with how
    /// many reports came before it; or, with nothing left to write, disarm.
    fn next(&self) -> Option<(Report, u64)> {
        let mut state = self.state.lock().expect("progress lock");
        match &state.pending {
            Some(report) if !state.stopped => Some((report.clone(), state.reported)),
            _ => {
                state.armed = false;
                None
            }
        }
    }

    /// A write of the report counted `seen` went through: it is done unless
    /// a newer one came meanwhile. When the next is due, if one is left.
    fn written(&self, seen: u64) -> Option<Instant> {
        let mut state = self.state.lock().expect("progress lock");
        let now = Instant::now();
        state.last_write = Some(now);
        if state.reported == seen {
            state.pending = None;
        }
        match state.pending {
            Some(_) => Some(now + INTERVAL),
            None => {
                state.armed = false;
                None
            }
        }
    }

    fn disarm(&self) {
        self.state.lock().expect("progress lock").armed = false;
    }
}

/// Write the attempt's newest report once it is due, and again every
/// [`INTERVAL`] while new ones come; stop when nothing is left, the run is
/// gone or its lease is.
async fn write_when_due(owner: Weak<ClaimedTask>, mut due: Instant) {
    loop {
        tokio::time::sleep_until(due.into()).await;
        let Some(task) = owner.upgrade() else {
            return;
        };
        let Some((report, seen)) = task.progress.next() else {
            return;
        };
        if task.is_lease_lost() {
            task.progress.disarm();
            return;
        }
        match task
            .engine
            .set_progress(task.lease(), report.percent, &report.message)
            .await
        {
            Ok(()) => match task.progress.written(seen) {
                Some(next) => due = next,
                None => return,
            },
            Err(e) => {
                tracing::debug!(error = %e, "progress not written");
                // The lease is gone: the guest hears it at its next call.
                let _ = task.host_error(e);
                task.progress.disarm();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_report_is_kept_cut_to_what_storage_keeps() {
        let reports = Reports::new();
        let nobody = Weak::new();
        reports.report(&nobody, 10, "first".into());
        reports.report(&nobody, 20, "é".repeat(5_000));
        let Report { percent, message } = reports.take().expect("a report is pending");
        assert_eq!(percent, 20, "the newest wins");
        assert!(
            message.len() <= MAX_MESSAGE_BYTES && message.len() > MAX_MESSAGE_BYTES - 2,
            "{} bytes",
            message.len()
        );
        assert!(message.chars().all(|c| c == 'é'), "cut at a character");
        assert_eq!(reports.take(), None, "taken once");
    }
}
