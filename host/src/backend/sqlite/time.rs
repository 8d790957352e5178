//! Stored times: milliseconds since the Unix epoch, from the host's clock.
//!
//! One process owns an embedded database, so its clock is the only one that
//! decides lease expiry; integers keep comparisons and index order exact.

use crate::backend::{stored_i64, stored_millis};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub(super) type Millis = i64;

pub(super) fn now() -> Millis {
    Utc::now().timestamp_millis()
}

pub(super) fn at(ms: Millis) -> DateTime<Utc> {
    crate::backend::shared::stamp::Stamp::from_millis(ms)
}

pub(super) fn millis_of(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

pub(super) fn after(from: Millis, d: Duration) -> Millis {
    from.saturating_add(stored_millis(d))
}

pub(super) fn after_ms(from: Millis, ms: u64) -> Millis {
    from.saturating_add(stored_i64(ms))
}
