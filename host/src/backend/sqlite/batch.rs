//! Many rows' transitions saved in a few round trips.
//!
//! A claim leases dozens of rows and a completion batch ends dozens. Saved
//! one at a time, each row costs the writer a hand-off to its connection's
//! thread and back ([`super::writes`]), and with one writer those hand-offs
//! are what bound the embedded backend's throughput. So a batch changes its
//! rows in memory first and sends their statements together.
//!
//! A chunk of rows is one hand-off: its statements run together on the
//! writer's handle, each distinct text prepared once for the chunk (a chunk
//! of one row goes to sqlx, as a single transition does; see
//! [`super::writes`]). Chunks hold at most [`MAX_CHUNK`] rows, which bounds how long
//! one hand-off keeps the calling thread.
//!
//! Whatever reads the database in the middle of a batch (a key's running
//! count, a budget check) must see the rows changed so far: the caller saves
//! what is pending before such a read.

use super::lease_history::LeaseBefore;
use super::record::Exec;
use super::tx::{Tx, LOCKS_PER_PING};
use super::writes::Writes;
use super::Effects;
use crate::error::{EngineError, Result};

/// The most rows whose statements go in one round trip.
const MAX_CHUNK: usize = 64;

/// A row changed in memory and not yet saved: its lease before the change
/// (for the lease event) and what its transition needs to write the rest.
pub(super) struct Pending<X> {
    pub row: Exec,
    pub before: Option<LeaseBefore>,
    pub extra: X,
}

/// Rows changed in memory, with how many of them are saved.
pub(super) struct Batch<X> {
    rows: Vec<Pending<X>>,
    saved: usize,
}

impl<X> Batch<X> {
    pub fn new() -> Self {
        Self {
            rows: Vec::new(),
            saved: 0,
        }
    }

    pub fn push(&mut self, row: Exec, before: Option<LeaseBefore>, extra: X) {
        self.rows.push(Pending { row, before, extra });
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Save every row not yet saved: each row's own statements, then what
    /// `more` adds for it (its attempt, its outbox row), chunk by chunk.
    pub async fn save(
        &mut self,
        tx: &mut Tx<'_>,
        effects: &mut Effects,
        more: impl Fn(&Exec, &X, &mut Writes<'_>, &mut Effects),
    ) -> Result<()> {
        let mut chunks = 0;
        while self.saved < self.rows.len() {
            // Through sqlx each chunk locks the handle: keep the messages
            // those locks leave sqlx's thread few (see `super::tx`).
            chunks += 1;
            if let Tx::Sqlx(conn) = tx {
                if chunks % LOCKS_PER_PING == 0 && !super::tx::ping(conn).await {
                    return Err(EngineError::storage("write executions")(
                        sqlx::Error::WorkerCrashed,
                    ));
                }
            }
            let n = chunk_len(self.rows.len() - self.saved);
            let chunk = &mut self.rows[self.saved..self.saved + n];
            let stored: Vec<Option<Box<Exec>>> =
                chunk.iter_mut().map(|p| p.row.begin_save()).collect();
            let mut writes = Writes::default();
            for (p, stored) in chunk.iter().zip(&stored) {
                p.row
                    .write_save(stored.as_deref(), p.before, &mut writes, effects);
                more(&p.row, &p.extra, &mut writes, effects);
            }
            tx.run(writes, "write executions").await?;
            for (p, stored) in chunk.iter_mut().zip(stored) {
                p.row.end_save(stored, p.before, tx, effects).await?;
            }
            self.saved += n;
        }
        Ok(())
    }

    /// The rows, once saved.
    pub fn into_rows(self) -> impl Iterator<Item = Pending<X>> {
        debug_assert_eq!(self.saved, self.rows.len(), "every row is saved first");
        self.rows.into_iter()
    }
}

/// The next chunk's length for `left` rows.
fn chunk_len(left: usize) -> usize {
    debug_assert!(left > 0);
    left.min(MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::chunk_len;

    #[test]
    fn chunks_cover_the_rows_at_most_max_chunk_at_a_time() {
        for left in 1..=300 {
            let mut rest = left;
            let mut sizes = Vec::new();
            while rest > 0 {
                let n = chunk_len(rest);
                assert!(
                    (1..=super::MAX_CHUNK).contains(&n) && n <= rest,
                    "{left}: {n}"
                );
                sizes.push(n);
                rest -= n;
            }
            assert_eq!(
                sizes.len(),
                left.div_ceil(super::MAX_CHUNK),
                "{left}: {sizes:?}"
            );
        }
        assert_eq!(chunk_len(1), 1);
        assert_eq!(chunk_len(37), 37);
        assert_eq!(chunk_len(1000), 64);
    }
}
