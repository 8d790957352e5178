//! Unsigned numbers as SQL stores them.
//!
//! Limits, sizes and durations are unsigned in the model; Postgres and
//! SQLite integers are signed. A value past the signed range is stored as
//! the largest signed value: for a limit or a deadline that large the two
//! mean the same (nothing is ever refused or due because of it), and a bind
//! never fails on a number a caller was allowed to pass.

/// `v` as a signed 64-bit integer, saturating.
pub(crate) fn stored_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `v` as a signed 32-bit integer, saturating.
pub(crate) fn stored_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// A duration's whole milliseconds, saturating.
pub(crate) fn stored_millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_past_the_signed_range_are_stored_as_the_largest() {
        assert_eq!(stored_i64(7), 7);
        assert_eq!(stored_i64(u64::MAX), i64::MAX);
        assert_eq!(stored_i32(u32::MAX), i32::MAX);
        assert_eq!(stored_millis(std::time::Duration::from_millis(1500)), 1500);
        assert_eq!(stored_millis(std::time::Duration::MAX), i64::MAX);
    }
}
