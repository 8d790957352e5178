//! Schedule operations that are the same on both drivers, and the row
//! every read of a schedule decodes.

use sqlx::types::Json;

use super::stamp::Stamp;
use crate::backend::refusals;
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, NewSchedule, Page, Schedule, ScheduleId, TenantId};

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
        let rows: Vec<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE tenant_id = $1 AND schedule_id > $2 \
             ORDER BY schedule_id LIMIT $3"
        ))
        .bind(tenant)
        .bind(page.after.unwrap_or(ScheduleId::nil()))
        .bind(i64::from(page.limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage("list schedules"))?;
        Ok(rows.into_iter().map(ScheduleRow::schedule).collect())
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
        .fetch_optional(&mut *conn)
        .await
        .map_err(EngineError::storage("fire schedule"))?;
        Ok(running.unwrap_or(false))
    }

    /// Delete the schedule; whether there was one.
    async fn delete_schedule(conn, tenant: TenantId, id: ScheduleId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM schedules WHERE tenant_id = $1 AND schedule_id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("delete schedule"))?;
        Ok(done.rows_affected() > 0)
    }
}
