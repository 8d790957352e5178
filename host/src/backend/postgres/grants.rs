//! Capability ceilings and component grants, stored as JSON documents:
//! every statement is shared (see `shared/grants.rs`).

use super::PgBackend;

crate::backend::shared::grants::implement!(PgBackend, pg);
