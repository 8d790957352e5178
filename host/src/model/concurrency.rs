//! Concurrency keys: limits per customer (or any key) inside a tenant.
//!
//! An execution may carry a free-form `concurrency_key`, such as a customer
//! id. A tenant sets limits per kind or per lane: at most `max_running` of a
//! key at once, and optionally at most `max_starts` starts of a key per
//! window. The limit for an execution is its kind's if the tenant set one,
//! else its lane's; an execution without a key, or with no limit for its kind
//! or lane, is not held back.
//!
//! Each (limit, key) pair is a *slot*: a row that counts the key's running
//! executions and its starts in the current window. A claim locks the slots
//! of its candidates and takes no more than their room, in the same statement
//! that leases them, so concurrent claimers never run more of a key than its
//! limit. A candidate whose key has no room is moved out of the claim's way
//! (`blocked_by_concurrency_key`), with the rest of that key's queue, so a key
//! with a backlog never delays the other keys; when one of the key's runs
//! ends, the next one of the key becomes claimable in the same transaction.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// The longest concurrency key, in bytes.
pub const MAX_CONCURRENCY_KEY_BYTES: usize = 256;
/// Concurrency limits one tenant may set.
pub const MAX_CONCURRENCY_LIMITS_PER_TENANT: u32 = 1_000;
/// The most `max_running` or `max_starts` a limit may name.
pub const MAX_PER_KEY: u32 = 100_000;
/// The shortest start window.
pub const MIN_START_WINDOW_MS: u64 = 100;
/// The longest start window (a day).
pub const MAX_START_WINDOW_MS: u64 = 24 * 3_600 * 1_000;
/// The start window when a limit names `max_starts` without one.
pub const DEFAULT_START_WINDOW_MS: u64 = 1_000;
/// What `blocking_reason` reads while a key's limit holds an execution back.
pub const BLOCKED_BY_CONCURRENCY_KEY: &str = "blocked_by_concurrency_key";

/// What a concurrency limit applies to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyScope {
    /// Executions of one kind (component).
    Kind,
    /// Executions in one lane.
    Lane,
}

impl ConcurrencyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Lane => "lane",
        }
    }
}

impl std::str::FromStr for ConcurrencyScope {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self, EngineError> {
        match s {
            "kind" => Ok(Self::Kind),
            "lane" => Ok(Self::Lane),
            other => Err(EngineError::invalid(
                "scope",
                format!("`{other}` is neither `kind` nor `lane`"),
            )),
        }
    }
}

/// How much of one key a limit lets run: the part a tenant writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimit {
    /// At most this many executions of one key running at once.
    pub max_running: u32,
    /// At most this many starts of one key per `window_ms`.
    #[serde(default)]
    pub max_starts: Option<u32>,
    /// The start window, 100 ms to a day (default a second); only with
    /// `max_starts`.
    #[serde(default)]
    pub window_ms: Option<u64>,
}

impl KeyLimit {
    /// Range-check every number, naming the field at fault.
    pub fn validate(&self) -> Result<(), EngineError> {
        let per_key = |field: &str, n: u32| {
            if (1..=MAX_PER_KEY).contains(&n) {
                Ok(())
            } else {
                Err(EngineError::invalid(
                    field,
                    format!("must be between 1 and {MAX_PER_KEY}"),
                ))
            }
        };
        per_key("max_running", self.max_running)?;
        if let Some(n) = self.max_starts {
            per_key("max_starts", n)?;
        }
        match (self.max_starts, self.window_ms) {
            (None, Some(_)) => Err(EngineError::invalid(
                "window_ms",
                "only applies with max_starts",
            )),
            (_, Some(ms)) if !(MIN_START_WINDOW_MS..=MAX_START_WINDOW_MS).contains(&ms) => {
                Err(EngineError::invalid(
                    "window_ms",
                    format!("must be between {MIN_START_WINDOW_MS} and {MAX_START_WINDOW_MS}"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The start window, when starts are limited.
    pub fn window_ms(&self) -> Option<u64> {
        self.max_starts
            .map(|_| self.window_ms.unwrap_or(DEFAULT_START_WINDOW_MS))
    }
}

/// A tenant's limit for one kind or lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConcurrencyLimit {
    pub scope: ConcurrencyScope,
    /// The kind or lane it applies to.
    pub name: String,
    #[serde(flatten)]
    pub limit: KeyLimit,
}

impl ConcurrencyLimit {
    /// A limit as both stores keep it (scope as text, numbers as integers),
    /// or why the row cannot be one.
    pub fn from_stored(
        scope: &str,
        name: String,
        max_running: i64,
        max_starts: Option<i64>,
        window_ms: Option<i64>,
    ) -> Result<Self, EngineError> {
        let corrupt = |what: String| EngineError::Corrupt(format!("concurrency limit: {what}"));
        let count = |n: i64| u32::try_from(n).map_err(|_| corrupt(format!("count {n}")));
        Ok(Self {
            scope: scope
                .parse()
                .map_err(|_| corrupt(format!("scope `{scope}`")))?,
            name,
            limit: KeyLimit {
                max_running: count(max_running)?,
                max_starts: max_starts.map(count).transpose()?,
                window_ms: window_ms
                    .map(|ms| u64::try_from(ms).map_err(|_| corrupt(format!("window {ms}"))))
                    .transpose()?,
            },
        })
    }
}

/// A concurrency key must be 1 to 256 bytes with no control characters: it
/// is shown in listings and logs as written.
pub fn check_concurrency_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty() || key.len() > MAX_CONCURRENCY_KEY_BYTES {
        return Err(EngineError::invalid(
            "concurrency_key",
            format!("must be 1 to {MAX_CONCURRENCY_KEY_BYTES} bytes"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "concurrency_key",
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max_running: u32, max_starts: Option<u32>, window_ms: Option<u64>) -> KeyLimit {
        KeyLimit {
            max_running,
            max_starts,
            window_ms,
        }
    }

    #[test]
    fn limits_are_range_checked_field_by_field() {
        assert!(limit(1, None, None).validate().is_ok());
        assert!(limit(5, Some(10), Some(60_000)).validate().is_ok());
        let field = |l: KeyLimit| match l.validate() {
            Err(EngineError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(limit(0, None, None)), "max_running");
        assert_eq!(field(limit(MAX_PER_KEY + 1, None, None)), "max_running");
        assert_eq!(field(limit(1, Some(0), None)), "max_starts");
        assert_eq!(field(limit(1, None, Some(1_000))), "window_ms");
        assert_eq!(field(limit(1, Some(1), Some(99))), "window_ms");
        assert_eq!(
            field(limit(1, Some(1), Some(MAX_START_WINDOW_MS + 1))),
            "window_ms"
        );
        assert_eq!(limit(1, Some(1), None).window_ms(), Some(1_000));
        assert_eq!(limit(1, None, None).window_ms(), None);
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(check_concurrency_key("customer-42@example.com").is_ok());
        assert!(check_concurrency_key("").is_err());
        assert!(check_concurrency_key(&"k".repeat(MAX_CONCURRENCY_KEY_BYTES + 1)).is_err());
        assert!(check_concurrency_key("a\nb").is_err());
    }
}
