//! Durable event streams a tenant subscribes to: completions, lease history
//! and signal delivery. Each is an outbox read by an opaque cursor, so a
//! subscriber that was away resumes where it stopped and misses nothing.

use super::ids::WaitpointId;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::ExecutionId;

/// A position in one event stream: events are delivered in cursor order and
/// a read returns only events after the cursor it is given. Written
/// `<txid>-<event id>`; `0` is the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventCursor {
    /// The id of the transaction that wrote the event.
    pub txid: i64,
    pub event_id: i64,
}

impl EventCursor {
    pub const START: EventCursor = EventCursor {
        txid: 0,
        event_id: 0,
    };
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::START {
            return f.write_str("0");
        }
        write!(f, "{}-{}", self.txid, self.event_id)
    }
}

impl FromStr for EventCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "0" {
            return Ok(Self::START);
        }
        let invalid = || format!("`{s}` is not an event cursor (`0`, or one a read returned)");
        let (txid, event_id) = s.split_once('-').ok_or_else(invalid)?;
        let cursor = EventCursor {
            txid: txid.parse().map_err(|_| invalid())?,
            event_id: event_id.parse().map_err(|_| invalid())?,
        };
        if cursor.txid < 0 || cursor.event_id < 0 {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

impl Serialize for EventCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What every stream's events share: a cursor to resume after them, the
/// execution they are about, and what happened (a completion's `outcome`,
/// a lease event's `kind`, a signal's `effect`), which filters match.
pub trait StreamEvent: Serialize + Send + Sync + 'static {
    /// The Server-Sent Events `event:` name.
    const NAME: &'static str;
    /// Every value [`StreamEvent::outcome`] can take.
    const OUTCOMES: &'static [&'static str];
    fn cursor(&self) -> EventCursor;
    fn execution_id(&self) -> ExecutionId;
    fn outcome(&self) -> &str;
}

/// The kind and lane of an execution an event is about, for filters on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionOrigin {
    pub execution_id: ExecutionId,
    pub kind: String,
    pub lane: String,
}

/// What a subscriber wants from a stream: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub execution: Option<ExecutionId>,
    /// The execution's kind.
    pub kind: Option<String>,
    /// The execution's lane.
    pub lane: Option<String>,
    /// A completion's `outcome`, a lease event's `kind`, a signal's `effect`.
    pub outcome: Option<String>,
}

impl EventFilter {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether matching needs each event's execution kind and lane, which
    /// the outboxes do not keep.
    pub fn needs_origin(&self) -> bool {
        self.kind.is_some() || self.lane.is_some()
    }

    /// Whether `event` passes. `origin` is its execution's kind and lane
    /// (`None` when that execution no longer exists: then a kind or lane
    /// condition does not hold).
    pub fn matches<E: StreamEvent>(&self, event: &E, origin: Option<&ExecutionOrigin>) -> bool {
        let wanted = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        self.execution.is_none_or(|id| id == event.execution_id())
            && wanted(&self.outcome, Some(event.outcome()))
            && wanted(&self.kind, origin.map(|o| o.kind.as_str()))
            && wanted(&self.lane, origin.map(|o| o.lane.as_str()))
    }

    /// The first condition `E`'s stream can never meet, as `(field, reason)`.
    pub fn unmeetable<E: StreamEvent>(&self) -> Option<(&'static str, String)> {
        let outcome = self.outcome.as_deref()?;
        (!E::OUTCOMES.contains(&outcome)).then(|| {
            (
                "outcome",
                format!(
                    "`{outcome}` is not one of {} for {} events",
                    E::OUTCOMES.join(", "),
                    E::NAME
                ),
            )
        })
    }
}

/// An execution ended (completed, failed, cancelled, expired or skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CompletionEvent {
    #[schema(value_type = String)]
    pub cursor: EventCursor,
    pub event_id: i64,
    #[schema(value_type = uuid::Uuid)]
    pub execution_id: ExecutionId,
    pub attempt_index: i32,
    pub outcome: String,
    pub created_at: DateTime<Utc>,
}

impl StreamEvent for CompletionEvent {
    const NAME: &'static str = "completion";
    const OUTCOMES: &'static [&'static str] =
        &["success", "failed", "cancelled", "expired", "skipped"];
    fn cursor(&self) -> EventCursor {
        self.cursor
    }
    fn execution_id(&self) -> ExecutionId {
        self.execution_id
    }
    fn outcome(&self) -> &str {
        &self.outcome
    }
}

/// A lease changed: `acquired` (a claim; `reclaimed` after the previous lease
/// expired), `renewed`, `released` (its holder completed, failed, retried or
/// suspended), `expired` (the engine took it back after its deadline passed)
/// or `revoked` (a cancel or the execution's deadline ended it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaseEvent {
    #[schema(value_type = String)]
    pub cursor: EventCursor,
    pub event_id: i64,
    #[schema(value_type = uuid::Uuid)]
    pub execution_id: ExecutionId,
    pub attempt_index: i32,
    pub lease_epoch: i64,
    pub kind: String,
    /// While the lease is held: when it runs out unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The execution's phase after the change.
    pub phase: String,
    pub created_at: DateTime<Utc>,
}

impl StreamEvent for LeaseEvent {
    const NAME: &'static str = "lease";
    const OUTCOMES: &'static [&'static str] = &[
        "acquired",
        "reclaimed",
        "renewed",
        "released",
        "expired",
        "revoked",
    ];
    fn cursor(&self) -> EventCursor {
        self.cursor
    }
    fn execution_id(&self) -> ExecutionId {
        self.execution_id
    }
    fn outcome(&self) -> &str {
        &self.kind
    }
}

/// A signal was delivered: it `resumed` the execution, was `buffered` (the
/// condition is not met yet, or the execution is not suspended yet), or was a
/// `duplicate` of an earlier delivery with the same idempotency key (then
/// `signal_id` is the earlier signal's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignalEvent {
    #[schema(value_type = String)]
    pub cursor: EventCursor,
    pub event_id: i64,
    #[schema(value_type = uuid::Uuid)]
    pub execution_id: ExecutionId,
    /// The nil id for the engine's own timeout signal.
    pub waitpoint_id: WaitpointId,
    pub signal_id: Uuid,
    pub name: String,
    pub effect: String,
    pub created_at: DateTime<Utc>,
}

impl StreamEvent for SignalEvent {
    const NAME: &'static str = "signal";
    const OUTCOMES: &'static [&'static str] = &["resumed", "buffered", "duplicate"];
    fn cursor(&self) -> EventCursor {
        self.cursor
    }
    fn execution_id(&self) -> ExecutionId {
        self.execution_id
    }
    fn outcome(&self) -> &str {
        &self.effect
    }
}

/// A page of events and whether more are on their way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch<E> {
    pub events: Vec<E>,
    /// Events exist past the page that are not deliverable yet (a transaction
    /// older than theirs is still running): read again shortly.
    pub pending: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_outcomes_are_the_terminal_outcomes() {
        let terminal: Vec<_> = crate::model::rules::TerminalOutcome::ALL
            .iter()
            .map(|o| o.as_str())
            .collect();
        assert_eq!(CompletionEvent::OUTCOMES, terminal);
    }

    #[test]
    fn cursors_round_trip_and_order() {
        let a = EventCursor {
            txid: 7,
            event_id: 12,
        };
        assert_eq!(a.to_string(), "7-12");
        assert_eq!("7-12".parse::<EventCursor>(), Ok(a));
        assert_eq!("0".parse::<EventCursor>(), Ok(EventCursor::START));
        assert!(EventCursor::START < a);
        assert!(
            a < EventCursor {
                txid: 8,
                event_id: 1
            }
        );
        for bad in ["", "7", "7-", "-1-2", "a-b", "1-2-3", "7-12 "] {
            assert!(bad.parse::<EventCursor>().is_err(), "{bad:?}");
        }
    }
}
