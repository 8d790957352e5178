//! Capability ceilings and component grants, stored as JSON documents:
//! every statement is shared (see `shared/grants.rs`).

use super::SqliteBackend;

crate::backend::configuration::implement_grants!(SqliteBackend, sqlite);
