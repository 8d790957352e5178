//! Schedule operations that are the same on both drivers.

use crate::error::{EngineError, Result};
use crate::model::{Schedule, ScheduleId, TenantId};

for_both_drivers! {
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
