//! An execution's lease history as the page draws it: one lane per attempt,
//! one bar per lease (attempt and epoch) from when it was acquired to when
//! it ended (or now, while held), coloured by how it ended, with renewals as
//! ticks. Drawn server-side as SVG, like the flow graph, so the page needs
//! no script for it; the events are listed as text under it too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::view;
use crate::model::LeaseEvent;

/// Left margin for the lane labels, and the width bars are scaled into.
const LABEL: u32 = 90;
const PLOT: u32 = 640;
const LANE: u32 = 28;
const TOP: u32 = 8;

pub struct Timeline {
    pub width: u32,
    pub height: u32,
    pub lanes: Vec<Lane>,
    /// The first and last instants drawn, and the axis's y.
    pub start: String,
    pub end: String,
    pub axis_y: u32,
    pub events: Vec<EventLine>,
}

pub struct Lane {
    pub label: String,
    pub y: u32,
    pub bars: Vec<Bar>,
    pub ticks: Vec<u32>,
}

pub struct Bar {
    pub x: u32,
    pub w: u32,
    /// `held`, `released`, `expired` or `revoked`.
    pub ended: &'static str,
    pub title: String,
}

pub struct EventLine {
    pub at: String,
    pub attempt: i32,
    pub epoch: i64,
    pub kind: String,
    pub expires: String,
}

/// One lease as the events tell it.
struct Lease {
    attempt: i32,
    epoch: i64,
    from: DateTime<Utc>,
    to: Option<(DateTime<Utc>, &'static str)>,
    renewals: Vec<DateTime<Utc>>,
}

fn ending(kind: &str) -> Option<&'static str> {
    match kind {
        "released" => Some("released"),
        "expired" => Some("expired"),
        "revoked" => Some("revoked"),
        _ => None,
    }
}

/// The timeline of `events` (oldest first), drawn up to `now` for a lease
/// still held; `None` when there are none.
pub fn draw(events: &[LeaseEvent], now: DateTime<Utc>) -> Option<Timeline> {
    let first = events.first()?.created_at;
    let mut leases: BTreeMap<(i32, i64), Lease> = BTreeMap::new();
    for e in events {
        let lease = leases
            .entry((e.attempt_index, e.lease_epoch))
            .or_insert_with(|| Lease {
                attempt: e.attempt_index,
                epoch: e.lease_epoch,
                from: e.created_at,
                to: None,
                renewals: Vec::new(),
            });
        match (e.kind.as_str(), ending(&e.kind)) {
            ("renewed", _) => lease.renewals.push(e.created_at),
            (_, Some(how)) => lease.to = Some((e.created_at, how)),
            _ => {}
        }
    }
    let last = events.last().map_or(first, |e| e.created_at);
    let held = leases.values().any(|l| l.to.is_none());
    let end = if held { now.max(last) } else { last };
    let span = (end - first).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        LABEL + ((t - first).num_milliseconds().max(0) as f64 / span * f64::from(PLOT)) as u32
    };
    let mut lanes: Vec<Lane> = Vec::new();
    for lease in leases.values() {
        if lanes.last().is_none_or(|l| l.label != label(lease.attempt)) {
            lanes.push(Lane {
                label: label(lease.attempt),
                y: TOP + LANE * lanes.len() as u32,
                bars: Vec::new(),
                ticks: Vec::new(),
            });
        }
        let lane = lanes.last_mut().expect("just pushed");
        let (to, ended) = lease.to.unwrap_or((end, "held"));
        let x0 = x(lease.from);
        lane.bars.push(Bar {
            x: x0,
            w: x(to).saturating_sub(x0).max(2),
            ended,
            title: format!(
                "attempt {} epoch {}: {} → {} ({ended}, {} renewals)",
                lease.attempt,
                lease.epoch,
                view::time(lease.from),
                view::time(to),
                lease.renewals.len()
            ),
        });
        lane.ticks.extend(lease.renewals.iter().map(|t| x(*t)));
    }
    let axis_y = TOP + LANE * lanes.len() as u32;
    Some(Timeline {
        width: LABEL + PLOT + 10,
        height: axis_y + 24,
        lanes,
        start: view::time(first),
        end: view::time(end),
        axis_y,
        events: events
            .iter()
            .map(|e| EventLine {
                at: view::time(e.created_at),
                attempt: e.attempt_index,
                epoch: e.lease_epoch,
                kind: e.kind.clone(),
                expires: view::time_opt(e.lease_expires_at),
            })
            .collect(),
    })
}

fn label(attempt: i32) -> String {
    format!("attempt {attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventCursor, ExecutionId};

    fn event(at: i64, attempt: i32, epoch: i64, kind: &str) -> LeaseEvent {
        LeaseEvent {
            cursor: EventCursor::default(),
            event_id: at,
            execution_id: ExecutionId::new(),
            attempt_index: attempt,
            lease_epoch: epoch,
            kind: kind.into(),
            lease_expires_at: None,
            phase: String::new(),
            created_at: DateTime::from_timestamp(at, 0).unwrap(),
        }
    }

    #[test]
    fn leases_become_bars_per_attempt_and_renewals_ticks() {
        let events = [
            event(0, 1, 1, "acquired"),
            event(10, 1, 1, "renewed"),
            event(20, 1, 1, "expired"),
            event(20, 2, 2, "reclaimed"),
            event(40, 2, 2, "released"),
            event(40, 2, 3, "acquired"),
        ];
        let now = DateTime::from_timestamp(80, 0).unwrap();
        let t = draw(&events, now).unwrap();
        assert_eq!(t.lanes.len(), 2);
        let first = &t.lanes[0];
        assert_eq!(first.label, "attempt 1");
        assert_eq!((first.bars[0].x, first.bars[0].w), (LABEL, PLOT / 4));
        assert_eq!(first.bars[0].ended, "expired");
        assert_eq!(first.ticks, [LABEL + PLOT / 8]);
        let second = &t.lanes[1];
        let ends: Vec<_> = second.bars.iter().map(|b| b.ended).collect();
        assert_eq!(
            ends,
            ["released", "held"],
            "epoch 3 still holds: drawn to now"
        );
        assert_eq!(second.bars[1].x + second.bars[1].w, LABEL + PLOT);
        assert_eq!(t.events.len(), 6);
        assert!(draw(&[], now).is_none());
    }
}
