//! Tenant config values and secrets, as sealed by the engine: every
//! statement is shared (see `shared/config_values.rs`).

use super::PgBackend;

crate::backend::configuration::implement_config_values!(PgBackend, pg);
