//! The counters a frame append and a step record advance: the attempt's frame
//! sequence and bytes, the journal's step count and bytes.
//!
//! They live in `execution_counters` (migration 0029), not on the execution's
//! row: an update of `executions` pays for its constraints, generated
//! column, indexes and statement triggers, none of which a frame concerns,
//! and a guest writes one such statement per frame and per step. The lease
//! is still checked on the execution's row, locked `FOR SHARE` by the same
//! statement ([`fenced`]), so a revoke either waits for the write or makes
//! it match nothing, as the fenced update of the row did.
//!
//! A row is written by the first frame or step. The frame counters belong to
//! the attempt named on the row; a write for another attempt starts them
//! again (a resumed attempt keeps its index, and its sequence carries on).

use super::leases::FENCE;

/// The statement's first CTE, `fence`: one row while the lease holds, the
/// execution's row locked `FOR SHARE` until the statement's transaction ends.
pub(super) fn fenced() -> String {
    format!("fence AS (SELECT 1 FROM executions WHERE {FENCE} FOR SHARE)")
}

/// The row being written, `c`, against the proposed one, `excluded`: whether
/// the stored frame counters are this attempt's.
const SAME_ATTEMPT: &str = "c.attempt_index = excluded.attempt_index";

/// The bytes this attempt's frames hold before the write.
pub(super) fn attempt_bytes() -> String {
    format!("(CASE WHEN {SAME_ATTEMPT} THEN c.frame_bytes ELSE 0 END)")
}

/// `SET` assignments that advance the frame counters by the proposed row's
/// frames: `frame_seq` of them (1 for one frame; the proposed row, written
/// as it is when there is none yet, holds that many) with `frame_bytes`.
pub(super) fn next_frame() -> String {
    format!(
        "attempt_index = excluded.attempt_index, \
         frame_seq = (CASE WHEN {SAME_ATTEMPT} THEN c.frame_seq ELSE 0 END) \
             + excluded.frame_seq, \
         frame_bytes = {bytes} + excluded.frame_bytes",
        bytes = attempt_bytes()
    )
}

/// The bytes an attempt's frames hold, read outside a write: `$1`, `$2` the
/// execution, `$3` the attempt; 0 before its first frame.
pub(super) const HELD_FRAME_BYTES: &str = "coalesce((SELECT CASE WHEN c.attempt_index = $3 \
    THEN c.frame_bytes ELSE 0 END FROM execution_counters c \
    WHERE c.tenant_id = $1 AND c.execution_id = $2), 0)";
