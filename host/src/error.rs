//! Typed engine errors.
//!
//! Each variant is a distinct answer a caller can act on (retry, fix the input,
//! give up the lease); `kind()` is the stable machine-readable name the HTTP API
//! and CLI expose, so renaming a variant never breaks a client.

use crate::model::PublicState;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: String, reason: String },

    #[error("{field} is {size} bytes, over the limit of {limit}")]
    PayloadTooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },

    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    /// The handle no longer names the live lease: it expired and was reclaimed, was
    /// revoked, or a newer attempt holds the execution.
    #[error(
        "stale lease for execution {execution_id} (attempt {attempt_index}, epoch {lease_epoch}): {reason}"
    )]
    StaleLease {
        execution_id: crate::model::ExecutionId,
        attempt_index: i32,
        lease_epoch: i64,
        reason: &'static str,
    },

    /// A lease operation reached an execution that already ended another way.
    #[error("execution {execution_id} is not active: it is {state}")]
    NotActive {
        execution_id: crate::model::ExecutionId,
        state: PublicState,
    },

    #[error("execution {execution_id} is not runnable: it is {state}")]
    NotRunnable {
        execution_id: crate::model::ExecutionId,
        state: PublicState,
    },

    /// A tenant limit refuses the request; it may succeed once work drains.
    #[error("{what} quota exceeded: the limit is {limit}")]
    QuotaExceeded { what: &'static str, limit: u64 },

    /// A limit on what one execution or tenant may hold or make (children,
    /// waitpoints, frame bytes, stored bytes, a counter's range) was
    /// reached. Unlike a quota, waiting does not help: the same request is
    /// refused again.
    #[error("limit exceeded: {limit} is {value}, and {detail}")]
    LimitExceeded {
        limit: &'static str,
        value: u64,
        detail: String,
    },

    /// No valid credentials were presented.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),

    /// A waitpoint token is missing, malformed, forged or signed by a retired key.
    #[error("{message}")]
    Token {
        kind: &'static str,
        message: &'static str,
    },

    #[error("conflict: {0}")]
    Conflict(String),

    /// A flow graph change was refused: `kind` says why (`cycle_detected`,
    /// `dependency_exists`, `member_exists`, `member_started`,
    /// `graph_revision_conflict`, `flow_cancelled`).
    #[error("{message}")]
    Graph { kind: &'static str, message: String },

    /// Storage refused the request for the reason `kind` names
    /// (`waitpoint_expired`); the same request is refused again.
    #[error("{message}")]
    Refused { kind: &'static str, message: String },

    /// Uploaded bytes are not a component implementing the task world.
    #[error("{0}")]
    InvalidComponent(String),

    /// The wasm runtime failed for a reason of its own (not the guest's).
    #[error("runtime error: {0}")]
    Runtime(String),

    /// The cause is part of the message rather than a chained `source()`, so
    /// error reports that print the chain do not repeat it.
    #[error("storage error during {op}: {cause}")]
    Storage {
        op: &'static str,
        cause: sqlx::Error,
    },

    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn graph(kind: &'static str, message: impl Into<String>) -> Self {
        Self::Graph {
            kind,
            message: message.into(),
        }
    }

    /// `limit` (its name) allows `value`; `detail` says what went past it.
    pub fn limit(limit: &'static str, value: u64, detail: impl Into<String>) -> Self {
        Self::LimitExceeded {
            limit,
            value,
            detail: detail.into(),
        }
    }

    /// No `what` (a kind of object, as the error names it) with this id
    /// that the caller may see.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }

    pub fn storage(op: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |cause| Self::Storage { op, cause }
    }

    /// Stable machine-readable name of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidInput { .. } => "invalid_input",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::NotFound { .. } => "not_found",
            Self::StaleLease { .. } => "stale_lease",
            Self::NotActive { .. } => "not_active",
            Self::NotRunnable { .. } => "not_runnable",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::LimitExceeded { .. } => "limit_exceeded",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Token { kind, .. } => kind,
            Self::Conflict(_) => "conflict",
            Self::Graph { kind, .. } => kind,
            Self::Refused { kind, .. } => kind,
            Self::InvalidComponent(_) => "invalid_component",
            Self::Runtime(_) => "runtime",
            Self::Storage { .. } => "storage",
            Self::Corrupt(_) => "corrupt",
        }
    }

    /// Whether the same call may succeed if simply retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Storage { .. } | Self::QuotaExceeded { .. })
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
