//! Component versions and their wasm bytes: every statement is shared (see
//! `shared/components.rs`).

use super::PgBackend;

crate::backend::traits::implement_components!(PgBackend, pg);
