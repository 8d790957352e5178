//! Schedules: recurring executions, fired exactly once per fire time.
//!
//! A schedule keeps its next fire time in the database. Whichever scanner
//! reaches a due schedule first locks it, creates the executions its due
//! fire times call for and moves the next fire time on, in one transaction:
//! no leader, no double fire when several processes scan, and no lost tick
//! when one dies (the next fire time only moves when the executions exist).
//! What to do about fire times that passed while nothing ran (the host was
//! down) is the schedule's [`MissedPolicy`]; what to do when the previous
//! run is still going is its [`OverlapPolicy`]. The arithmetic is here, so
//! both backends fire the same way.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::{ExecutionId, ExecutionPolicy, NewExecution, ScheduleId, TenantId};
use crate::error::EngineError;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The shortest interval (cron's own resolution is a second too).
pub const MIN_INTERVAL_MS: u64 = 1_000;
/// The longest interval (a year).
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 3_600 * 1_000;
/// The most jitter (an hour).
pub const MAX_JITTER_MS: u64 = 3_600 * 1_000;
/// The most fire times one backfill creates.
pub const MAX_BACKFILL: u32 = 100;
/// Schedules one tenant may have.
pub const MAX_SCHEDULES_PER_TENANT: u32 = 1_000;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cadence {
    /// A cron expression of 5 fields (minute to weekday) or 6 (seconds
    /// first), in a named time zone (IANA, default `UTC`). A time that a
    /// daylight-saving change skips fires at the first instant after the
    /// change; a time that occurs twice fires once.
    Cron {
        expression: String,
        #[serde(default = "utc")]
        time_zone: String,
    },
    /// Every `every_ms`, counted from the schedule's creation.
    Interval { every_ms: u64 },
}

fn utc() -> String {
    "UTC".into()
}

/// What to do with fire times that passed unfired (the host was down, or
/// the schedule was paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MissedPolicy {
    /// Forget them; fire again at the next time to come.
    Skip,
    /// Fire once for all of them (for the latest), then carry on.
    #[default]
    RunOnce,
    /// Fire each of them, oldest first, up to `max` (at most 100); older
    /// ones are dropped.
    Backfill { max: u32 },
}

/// What to do at a fire time when the execution the schedule last created
/// has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Start another one beside it.
    #[default]
    Allow,
    /// Skip this fire time.
    Skip,
    /// Cancel the running one (its lease is revoked), then start the new one.
    CancelPrevious,
}

/// What a fire does about the execution the schedule last created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapAction {
    Fire,
    Skip,
    CancelThenFire,
}

impl OverlapPolicy {
    /// The policy applied: `previous_running` says whether the last
    /// execution has not ended.
    pub fn action(self, previous_running: bool) -> OverlapAction {
        match (self, previous_running) {
            (_, false) | (Self::Allow, true) => OverlapAction::Fire,
            (Self::Skip, true) => OverlapAction::Skip,
            (Self::CancelPrevious, true) => OverlapAction::CancelThenFire,
        }
    }
}

/// The reason a `cancel_previous` schedule gives the run it cancels.
pub const SUPERSEDED: &str = "superseded by the schedule's next fire";

/// What each fire creates: an execution of `kind` with this input and policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduledExecution {
    pub kind: String,
    #[serde(default = "default_lane")]
    pub lane: String,
    /// Kept in a column of its own, not in the schedule's JSON document.
    #[serde(skip)]
    #[schema(ignore)]
    pub input: Vec<u8>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub policy: ExecutionPolicy,
    /// Each fire's execution carries this concurrency key.
    #[serde(default)]
    pub concurrency_key: Option<String>,
}

fn default_lane() -> String {
    super::DEFAULT_LANE.to_owned()
}

/// A schedule to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// Unique within the tenant.
    pub name: String,
    pub cadence: Cadence,
    /// Each fire's execution is due up to this much later, at random.
    #[serde(default)]
    pub jitter_ms: u64,
    #[serde(default)]
    pub missed: MissedPolicy,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    pub execution: ScheduledExecution,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    #[schema(value_type = Uuid)]
    pub schedule_id: ScheduleId,
    #[schema(value_type = Uuid)]
    pub tenant_id: TenantId,
    pub spec: NewSchedule,
    pub paused: bool,
    /// When it fires next (while not paused).
    pub next_fire_at: DateTime<Utc>,
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The execution its last fire created.
    #[schema(value_type = Option<Uuid>)]
    pub last_execution_id: Option<ExecutionId>,
    pub created_at: DateTime<Utc>,
}

/// The tag keys a fired execution carries.
pub const SCHEDULE_TAG: &str = "flowfabric.schedule";
pub const FIRE_TIME_TAG: &str = "flowfabric.fire_time";

impl Cadence {
    /// Check the cadence; a precise error names what is wrong.
    pub fn validate(&self) -> Result<(), EngineError> {
        match self {
            Self::Interval { every_ms } => {
                if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(every_ms) {
                    return Err(EngineError::invalid(
                        "cadence.every_ms",
                        format!("must be {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"),
                    ));
                }
                Ok(())
            }
            Self::Cron {
                expression,
                time_zone,
            } => {
                // Cron's resolution is a second: no expression fires more
                // often than MIN_INTERVAL_MS. One that never fires is refused.
                let cron = parse_cron(expression)?;
                let tz = parse_zone(time_zone)?;
                next_cron(&cron, Utc::now().with_timezone(&tz))?;
                Ok(())
            }
        }
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(
        &self,
        after: DateTime<Utc>,
        anchor: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, EngineError> {
        match self {
            Self::Interval { every_ms } => {
                let every = (*every_ms).max(MIN_INTERVAL_MS) as i64;
                let since = (after - anchor).num_milliseconds().max(-1);
                let periods = since.div_euclid(every) + 1;
                Ok(anchor + TimeDelta::milliseconds(periods.saturating_mul(every)))
            }
            Self::Cron {
                expression,
                time_zone,
            } => {
                let cron = parse_cron(expression)?;
                let tz = parse_zone(time_zone)?;
                Ok(next_cron(&cron, after.with_timezone(&tz))?.with_timezone(&Utc))
            }
        }
    }
}

fn parse_cron(expression: &str) -> Result<croner::Cron, EngineError> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) || expression.len() > 256 {
        return Err(EngineError::invalid(
            "cadence.expression",
            format!("`{expression}` must have 5 fields (minute to weekday) or 6 (seconds first)"),
        ));
    }
    croner::Cron::from_str(expression).map_err(|e| {
        EngineError::invalid(
            "cadence.expression",
            format!("`{expression}` is not a cron expression: {e}"),
        )
    })
}

fn parse_zone(name: &str) -> Result<chrono_tz::Tz, EngineError> {
    name.parse().map_err(|_| {
        EngineError::invalid(
            "cadence.time_zone",
            format!("`{name}` is not a time zone name (IANA, e.g. `Europe/Berlin` or `UTC`)"),
        )
    })
}

fn next_cron(
    cron: &croner::Cron,
    after: DateTime<chrono_tz::Tz>,
) -> Result<DateTime<chrono_tz::Tz>, EngineError> {
    cron.find_next_occurrence(&after, false).map_err(|e| {
        EngineError::invalid(
            "cadence.expression",
            format!("`{}` never fires: {e}", cron.pattern),
        )
    })
}

/// What a scanner does with one due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// The fire times to create an execution for, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// The schedule's next fire time afterwards.
    pub next_fire_at: DateTime<Utc>,
}

impl FirePlan {
    /// Whether the overlap policy needs to know if the schedule's last
    /// execution is still running (a read): only when something would fire,
    /// the policy is not `allow`, and there is a last execution.
    pub fn needs_overlap_check(&self, schedule: &Schedule) -> bool {
        !self.fire.is_empty()
            && schedule.spec.overlap != OverlapPolicy::Allow
            && schedule.last_execution_id.is_some()
    }

    /// Apply the schedule's overlap policy, given whether its last execution
    /// is still running: a skipped fire drops its fire times. Returns what
    /// the caller must do before firing.
    pub fn settle_overlap(&mut self, schedule: &Schedule, previous_running: bool) -> OverlapAction {
        let action = match self.fire.is_empty() {
            true => OverlapAction::Fire,
            false => schedule.spec.overlap.action(previous_running),
        };
        if action == OverlapAction::Skip {
            self.fire.clear();
        }
        action
    }

    /// The schedule's last fire time once this plan is carried out: the
    /// newest time fired; with nothing fired, the previous one (or, before
    /// any, the time that came due).
    pub fn last_fire_at(&self, schedule: &Schedule) -> DateTime<Utc> {
        self.fire
            .last()
            .copied()
            .or(schedule.last_fire_at)
            .unwrap_or(schedule.next_fire_at)
    }
}

impl Schedule {
    /// The fire times due at `now` and the next one after, as the missed
    /// policy says (the overlap policy is the caller's: it needs the last
    /// execution's state).
    pub fn plan(&self, now: DateTime<Utc>) -> Result<FirePlan, EngineError> {
        let cadence = &self.spec.cadence;
        // An interval keeps the phase of the fire time it reached.
        let anchor = self.next_fire_at;
        let mut due = Vec::new();
        let mut at = self.next_fire_at;
        let cap = match self.spec.missed {
            MissedPolicy::Backfill { max } => max.clamp(1, MAX_BACKFILL) as usize,
            _ => 1,
        };
        // Walk the passed fire times, keeping the newest `cap` of them; a
        // schedule down for a year at one per second stops walking after a
        // bounded number of steps and jumps ahead.
        let mut steps = 0;
        while at <= now {
            due.push(at);
            if due.len() > cap {
                due.remove(0);
            }
            steps += 1;
            at = if steps > 10_000 {
                cadence.next_after(now, anchor)?
            } else {
                cadence.next_after(at, anchor)?
            };
        }
        let fire = match self.spec.missed {
            // The fire time that just came due fires; older ones are missed.
            MissedPolicy::Skip => due
                .last()
                .filter(|last| now - **last < TimeDelta::seconds(60))
                .copied()
                .into_iter()
                .collect(),
            MissedPolicy::RunOnce => due.last().copied().into_iter().collect(),
            MissedPolicy::Backfill { .. } => due,
        };
        Ok(FirePlan {
            fire,
            next_fire_at: at,
        })
    }

    /// The execution a fire at `at` creates: the template, tagged with the
    /// schedule and fire time, due after the jitter (`jitter` in 0..=1).
    pub fn execution_at(&self, at: DateTime<Utc>, jitter: f64) -> NewExecution {
        let template = &self.spec.execution;
        let mut new = NewExecution::new(template.kind.clone(), template.input.clone());
        new.lane = template.lane.clone();
        new.priority = template.priority;
        new.tags = template.tags.clone();
        new.tags
            .insert(SCHEDULE_TAG.into(), self.schedule_id.to_string());
        new.tags.insert(
            FIRE_TIME_TAG.into(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        new.policy = template.policy.clone();
        new.concurrency_key = template.concurrency_key.clone();
        let delay = (self.spec.jitter_ms as f64 * jitter.clamp(0.0, 1.0)) as i64;
        if delay > 0 {
            new.delay_until = Some(Utc::now() + TimeDelta::milliseconds(delay));
        }
        new
    }

    /// The next `n` fire times from now (for listing).
    pub fn upcoming(&self, n: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(n);
        let mut at = self.next_fire_at;
        while times.len() < n {
            times.push(at);
            match self.spec.cadence.next_after(at, self.next_fire_at) {
                Ok(next) => at = next,
                Err(_) => break,
            }
        }
        times
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(cadence: Cadence, missed: MissedPolicy, created: DateTime<Utc>) -> Schedule {
        let next = cadence.next_after(created, created).unwrap();
        Schedule {
            schedule_id: ScheduleId::nil(),
            tenant_id: TenantId::nil(),
            spec: NewSchedule {
                name: "s".into(),
                cadence,
                jitter_ms: 0,
                missed,
                overlap: OverlapPolicy::Allow,
                execution: ScheduledExecution {
                    kind: "k".into(),
                    lane: "default".into(),
                    input: Vec::new(),
                    priority: 0,
                    tags: BTreeMap::new(),
                    policy: ExecutionPolicy::default(),
                    concurrency_key: None,
                },
            },
            paused: false,
            next_fire_at: next,
            last_fire_at: None,
            last_execution_id: None,
            created_at: created,
        }
    }

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, s).unwrap()
    }

    #[test]
    fn intervals_count_from_creation() {
        let c = Cadence::Interval { every_ms: 60_000 };
        assert_eq!(c.next_after(t(0, 0, 30), t(0, 0, 0)).unwrap(), t(0, 1, 0));
        assert_eq!(c.next_after(t(0, 1, 0), t(0, 0, 0)).unwrap(), t(0, 2, 0));
    }

    #[test]
    fn missed_policies_pick_their_fire_times() {
        let c = Cadence::Interval { every_ms: 60_000 };
        // Due at 00:01; now is 00:05:30, so 00:01 … 00:05 passed.
        let now = t(0, 5, 30);
        let once = schedule(c.clone(), MissedPolicy::RunOnce, t(0, 0, 0));
        let plan = once.plan(now).unwrap();
        assert_eq!(plan.fire, [t(0, 5, 0)]);
        assert_eq!(plan.next_fire_at, t(0, 6, 0));
        let back = schedule(c.clone(), MissedPolicy::Backfill { max: 3 }, t(0, 0, 0));
        assert_eq!(
            back.plan(now).unwrap().fire,
            [t(0, 3, 0), t(0, 4, 0), t(0, 5, 0)]
        );
        let skip = schedule(c.clone(), MissedPolicy::Skip, t(0, 0, 0));
        assert_eq!(skip.plan(now).unwrap().fire, [t(0, 5, 0)], "just due");
        assert!(
            skip.plan(t(0, 5, 0) + TimeDelta::minutes(10))
                .unwrap()
                .fire
                .len()
                <= 1
        );
        let long_ago = skip.plan(t(3, 0, 0) + TimeDelta::seconds(59)).unwrap();
        assert_eq!(long_ago.fire, [t(3, 0, 0)]);
        assert_eq!(long_ago.next_fire_at, t(3, 1, 0));
    }

    #[test]
    fn overlap_is_read_only_when_it_can_change_the_fire() {
        let c = Cadence::Interval { every_ms: 60_000 };
        let mut s = schedule(c, MissedPolicy::RunOnce, t(0, 0, 0));
        let now = t(0, 1, 30);
        // No last execution, or `allow`: nothing to read.
        assert!(!s.plan(now).unwrap().needs_overlap_check(&s));
        s.last_execution_id = Some(ExecutionId::nil());
        assert!(!s.plan(now).unwrap().needs_overlap_check(&s));
        s.spec.overlap = OverlapPolicy::Skip;
        let mut plan = s.plan(now).unwrap();
        assert!(plan.needs_overlap_check(&s));
        assert_eq!(plan.settle_overlap(&s, true), OverlapAction::Skip);
        assert!(plan.fire.is_empty());
        assert_eq!(
            plan.last_fire_at(&s),
            s.next_fire_at,
            "nothing fired before: the time that came due"
        );
        s.spec.overlap = OverlapPolicy::CancelPrevious;
        let mut plan = s.plan(now).unwrap();
        assert_eq!(plan.settle_overlap(&s, true), OverlapAction::CancelThenFire);
        assert_eq!(plan.fire, [t(0, 1, 0)]);
        assert_eq!(plan.settle_overlap(&s, false), OverlapAction::Fire);
    }

    #[test]
    fn cron_follows_its_time_zone_across_daylight_saving() {
        let c = Cadence::Cron {
            expression: "30 2 * * *".into(),
            time_zone: "Europe/Berlin".into(),
        };
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin.
        let before = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let gap = c.next_after(before, before).unwrap();
        assert_eq!(gap, Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap());
        let after = c.next_after(gap, before).unwrap();
        assert_eq!(after, Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap());
    }

    #[test]
    fn bad_cadences_are_refused_precisely() {
        let cron = |e: &str, z: &str| Cadence::Cron {
            expression: e.into(),
            time_zone: z.into(),
        };
        let err = |c: Cadence| c.validate().unwrap_err().to_string();
        assert!(err(cron("61 * * * *", "UTC")).contains("not a cron expression"));
        assert!(err(cron("* * *", "UTC")).contains("5 fields"));
        assert!(err(cron("0 * * * *", "Mars/Olympus")).contains("not a time zone"));
        assert!(err(cron("0 0 31 2 *", "UTC")).contains("never fires"));
        assert!(
            cron("* * * * * *", "UTC").validate().is_ok(),
            "every second is the minimum"
        );
        assert!(err(Cadence::Interval { every_ms: 10 }).contains("every_ms"));
        assert!(cron("*/5 * * * *", "America/New_York").validate().is_ok());
    }
}
