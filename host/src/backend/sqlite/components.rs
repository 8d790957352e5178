//! Component versions and their wasm bytes: every statement is shared (see
//! `shared/components.rs`).

use super::SqliteBackend;

crate::backend::traits::implement_components!(SqliteBackend, sqlite);
