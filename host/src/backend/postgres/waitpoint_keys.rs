//! The keys that sign waitpoint tokens: every statement is shared (see
//! `shared/waitpoint_keys.rs`).

use super::PgBackend;

crate::backend::configuration::implement_waitpoint_keys!(PgBackend, pg);
