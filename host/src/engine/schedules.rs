//! Schedules: validation before storage sees one (see
//! [`crate::model::Schedule`] for how firing works).

use chrono::Utc;

use super::Engine;
use crate::backend::{PauseChange, ScheduleCreate};
use crate::error::{EngineError, Result};
use crate::model::{
    Created, MissedPolicy, NewSchedule, Page, Schedule, ScheduleId, TenantId, MAX_BACKFILL,
    MAX_JITTER_MS, MAX_SCHEDULES_PER_TENANT,
};

/// Schedules one listing returns at most.
pub const MAX_SCHEDULE_PAGE: u32 = 1_000;

impl Engine {
    /// Create a schedule; it first fires at its cadence's next time. A bad
    /// cadence, policy or template is refused with the field at fault and
    /// nothing is written.
    pub async fn create_schedule(&self, tenant: TenantId, spec: NewSchedule) -> Result<Schedule> {
        self.check_name("name", &spec.name)?;
        spec.cadence.validate()?;
        if spec.jitter_ms > MAX_JITTER_MS {
            return Err(EngineError::invalid(
                "jitter_ms",
                format!("must be at most {MAX_JITTER_MS}"),
            ));
        }
        if let MissedPolicy::Backfill { max } = spec.missed {
            if !(1..=MAX_BACKFILL).contains(&max) {
                return Err(EngineError::invalid(
                    "missed.max",
                    format!("must be 1 to {MAX_BACKFILL}"),
                ));
            }
        }
        // The template is checked as the executions it creates will be
        // (their schedule tags included), against the tenant's limits.
        let now = Utc::now();
        let probe = Schedule {
            schedule_id: ScheduleId::nil(),
            tenant_id: tenant,
            spec: spec.clone(),
            paused: false,
            next_fire_at: now,
            last_fire_at: None,
            last_execution_id: None,
            created_at: now,
        }
        .execution_at(now, 0.0);
        self.admit(tenant, &[&probe], "execution").await?;
        let next_fire_at = spec.cadence.next_after(now, now)?;
        let create = ScheduleCreate {
            spec: &spec,
            next_fire_at,
            max_schedules: MAX_SCHEDULES_PER_TENANT,
        };
        self.backend.create_schedule(tenant, create).await
    }

    pub async fn get_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        self.backend.get_schedule(tenant, id).await
    }

    pub async fn list_schedules(
        &self,
        tenant: TenantId,
        after: Option<ScheduleId>,
        limit: u32,
    ) -> Result<Vec<Schedule>> {
        self.backend
            .list_schedules(tenant, Page::new(after, limit.clamp(1, MAX_SCHEDULE_PAGE)))
            .await
    }

    /// Pause a schedule (no fires until resumed), or resume it: it fires
    /// next at its cadence's first time after now (times that passed while
    /// paused are not fired).
    pub async fn pause_schedule(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        paused: bool,
    ) -> Result<Schedule> {
        // Pausing keeps the next fire time; resuming moves it past now.
        let change = match paused {
            true => PauseChange::Pause,
            false => {
                let current = self.backend.get_schedule(tenant, id).await?;
                let next = current
                    .spec
                    .cadence
                    .next_after(Utc::now(), current.next_fire_at)?;
                PauseChange::ResumeAt(next)
            }
        };
        self.backend.set_schedule_paused(tenant, id, change).await
    }

    pub async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<bool> {
        self.backend.delete_schedule(tenant, id).await
    }

    /// Fire a schedule now, outside its cadence.
    pub async fn trigger_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Created> {
        self.backend.trigger_schedule(tenant, id).await
    }
}
