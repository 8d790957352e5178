//! Tenant config values and secrets: named strings a granted guest reads
//! through `wasi:config/store`.
//!
//! Both are encrypted at rest; they differ in what is shown afterwards. A
//! plain value is listed with its value; a secret's value is never shown
//! again after it is set, anywhere: listings carry its name and times only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Largest value, in bytes.
pub const MAX_CONFIG_VALUE_BYTES: usize = 64 << 10;
/// Values one tenant may keep.
pub const MAX_CONFIG_VALUES_PER_TENANT: u32 = 1_000;

/// A value as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigEntry {
    pub name: String,
    pub secret: bool,
    /// The value of a plain config value; never present for a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A value as storage keeps it: sealed under the operator's key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedConfig {
    pub name: String,
    pub secret: bool,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: DateTime<Utc>,
}
