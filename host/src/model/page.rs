//! A page of a listing, as storage is asked for one.
//!
//! Every listing reads by cursor: the items after the last one the caller
//! saw, in the listing's own order, at most so many. The cursor's type is
//! the listing's (an id, a position, an event cursor), so a page of flows
//! cannot be asked for after a schedule's id.

/// The items after `after` (for an `Option`, from the start when `None`), at
/// most `limit`. The engine bounds `limit` before storage sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page<After> {
    pub after: After,
    pub limit: u32,
}

impl<After> Page<After> {
    pub fn new(after: After, limit: u32) -> Self {
        Self { after, limit }
    }
}
