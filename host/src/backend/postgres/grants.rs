//! Capability ceilings and component grants, stored as JSON documents:
//! every statement is shared (see `shared/grants.rs`).

use super::PgBackend;

crate::backend::configuration::implement_grants!(PgBackend, pg);
