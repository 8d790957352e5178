//! Schedule operations that are the same on both drivers, and the row
//! every read of a schedule decodes.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::caps::{Counted, Rows};
use super::stamp::Stamp;
use crate::backend::refusals;
use crate::backend::{Fetch, Op, Run};
use crate::backend::{PauseChange, ScheduleCreate};
use crate::error::{EngineError, Result};
use crate::model::{Created, ExecutionId, NewSchedule, Page, Schedule, ScheduleId, TenantId};

/// The columns of a schedule, as [`ScheduleRow`] reads them.
pub(crate) const COLUMNS: &str = "tenant_id, schedule_id, spec, input, paused, next_fire_at, \
    last_fire_at, last_execution_id, created_at";

/// A stored schedule. Its execution's input is a column of its own (bytes),
/// not part of the JSON spec.
#[derive(sqlx::FromRow)]
pub(crate) struct ScheduleRow {
    tenant_id: TenantId,
    schedule_id: ScheduleId,
    spec: Json<NewSchedule>,
    input: Vec<u8>,
    paused: bool,
    next_fire_at: Stamp,
    last_fire_at: Option<Stamp>,
    last_execution_id: Option<ExecutionId>,
    created_at: Stamp,
}

impl ScheduleRow {
    pub(crate) fn schedule(self) -> Schedule {
        let Json(mut spec) = self.spec;
        spec.execution.input = self.input;
        Schedule {
            schedule_id: self.schedule_id,
            tenant_id: self.tenant_id,
            spec,
            paused: self.paused,
            next_fire_at: self.next_fire_at.into(),
            last_fire_at: self.last_fire_at.map(Into::into),
            last_execution_id: self.last_execution_id,
            created_at: self.created_at.into(),
        }
    }
}

/// The schedule a statement read or changed, or why there is none.
pub(crate) fn found(
    row: sqlx::Result<Option<ScheduleRow>>,
    id: ScheduleId,
    op: &'static str,
) -> Result<Schedule> {
    match row.map_err(EngineError::storage(op))? {
        Some(row) => Ok(row.schedule()),
        None => Err(refusals::schedule_not_found(id)),
    }
}

for_both_drivers! {
    /// Create a schedule under a name the tenant has not used, then count:
    /// past `max_schedules` the caller's transaction is undone.
    async fn create_schedule(conn, tenant: TenantId, create: ScheduleCreate<'_>)
        -> Result<Schedule>
    {
        let op = "create schedule";
        let row: Option<ScheduleRow> = sqlx::query_as(&format!(
            "INSERT INTO schedules \
                 (tenant_id, schedule_id, name, spec, input, next_fire_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, name) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(tenant)
        .bind(ScheduleId::new())
        .bind(&create.spec.name)
        .bind(Json(create.spec))
        .bind(&create.spec.execution.input)
        .bind(Stamp(create.next_fire_at))
        .bind(Stamp(Utc::now()))
        .optional(&mut *conn, Op::for_tenant(op, tenant))
        .await?;
        let Some(row) = row else {
            return Err(refusals::schedule_name_taken(&create.spec.name));
        };
        let rows = Rows {
            table: "schedules",
            within: None,
        };
        if !caps::within_cap(conn, tenant, rows, create.max_schedules, Counted::AfterWrite, op).await? {
            return Err(refusals::schedules_exceeded(create.max_schedules));
        }
        Ok(row.schedule())
    }

    /// Pausing keeps the next fire time; resuming sets the one given.
    async fn set_schedule_paused(conn, tenant: TenantId, id: ScheduleId, change: PauseChange)
        -> Result<Schedule>
    {
        let row = sqlx::query_as(&format!(
            "UPDATE schedules SET paused = $3, \
                 next_fire_at = CASE WHEN $3 THEN next_fire_at ELSE $4 END \
             WHERE tenant_id = $1 AND schedule_id = $2 RETURNING {COLUMNS}"
        ))
        .bind(tenant)
        .bind(id)
        .bind(change.pauses())
        .bind(change.resume_at().map(Stamp))
        .fetch_optional(&mut *conn)
        .await;
        found(row, id, "pause schedule")
    }

    /// Move a fired schedule on: its next and last fire times, and the
    /// execution it created last (kept when this firing created none).
    async fn record_fire(
        conn,
        schedule: &Schedule,
        last_fire_at: DateTime<Utc>,
        next_fire_at: DateTime<Utc>,
        last: Option<&Created>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE schedules SET next_fire_at = $3, last_fire_at = $4, \
                 last_execution_id = coalesce($5, last_execution_id) \
             WHERE tenant_id = $1 AND schedule_id = $2",
        )
        .bind(schedule.tenant_id)
        .bind(schedule.schedule_id)
        .bind(Stamp(next_fire_at))
        .bind(Stamp(last_fire_at))
        .bind(last.map(|c| c.execution_id))
        .run(&mut *conn, "fire schedule")
        .await?;
        Ok(())
    }

    /// Record a trigger of `schedule` at `now`, outside its plan (its next
    /// fire time stays), and return the execution it created.
    async fn record_trigger(conn, schedule: &Schedule, now: DateTime<Utc>, created: Vec<Created>)
        -> Result<Created>
    {
        record_fire(conn, schedule, now, schedule.next_fire_at, created.last()).await?;
        created
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::Corrupt("a trigger created nothing".into()))
    }

    /// The tenant's schedule `id` (its primary key).
    async fn get_schedule(conn, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        let row = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND schedule_id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await;
        found(row, id, "get schedule")
    }

    /// A page of the tenant's schedules in id (creation) order.
    async fn list_schedules(conn, tenant: TenantId, page: Page<Option<ScheduleId>>)
        -> Result<Vec<Schedule>>
    {
        sqlx::query_as::<_, ScheduleRow>(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND schedule_id > $2 \
             ORDER BY schedule_id LIMIT $3"
        ))
        .bind(tenant)
        .bind(page.after.unwrap_or(ScheduleId::nil()))
        .bind(i64::from(page.limit))
        .all_mapped(&mut *conn, "list schedules", ScheduleRow::schedule)
        .await
    }

    /// Whether the execution the schedule last created has not ended.
    async fn still_running(conn, schedule: &Schedule) -> Result<bool> {
        let Some(last) = schedule.last_execution_id else {
            return Ok(false);
        };
        let running: Option<bool> = sqlx::query_scalar(
            "SELECT lifecycle_phase <> 'terminal' FROM executions \
             WHERE tenant_id = $1 AND execution_id = $2",
        )
        .bind(schedule.tenant_id)
        .bind(last)
        .optional(&mut *conn, "fire schedule")
        .await?;
        Ok(running.unwrap_or(false))
    }

    /// Delete the schedule; whether there was one.
    async fn delete_schedule(conn, tenant: TenantId, id: ScheduleId) -> Result<bool> {
        sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND schedule_id = $2")
            .bind(tenant)
            .bind(id)
            .changed(&mut *conn, "delete schedule")
            .await
    }
}
