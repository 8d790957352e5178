//! Schedules. With one writer, a firing pass reads the due schedules and
//! fires each in the same write transaction: nothing can fire one between
//! the read and the write.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::SqliteConnection;

use super::executions::{cancel_row, create_one};
use super::record::Exec;
use super::tenancy::get_tenant;
use super::time::{millis_of, now};
use super::{Effects, SqliteBackend};
use crate::backend::refusals;
use crate::backend::refusals::unknown_tenant;
use crate::backend::shared::schedules::sqlite::{self as shared, still_running};
use crate::backend::shared::schedules::{ScheduleRow, COLUMNS};
use crate::backend::{PauseChange, ScheduleCreate, Schedules};
use crate::error::{EngineError, Result};
use crate::model::{Created, OverlapAction, Page, Schedule, ScheduleId, TenantId, SUPERSEDED};

#[async_trait]
impl Schedules for SqliteBackend {
    async fn create_schedule(
        &self,
        tenant: TenantId,
        create: ScheduleCreate<'_>,
    ) -> Result<Schedule> {
        let op = "create schedule";
        self.write(op, async |conn, _| {
            get_tenant(conn, tenant)
                .await
                .map_err(|_| unknown_tenant(tenant))?;
            let count: i64 =
                sqlx::query_scalar("SELECT count(*) FROM schedules WHERE tenant_id = ?")
                    .bind(tenant)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(EngineError::storage(op))?;
            if count >= i64::from(create.max_schedules) {
                return Err(refusals::schedules_exceeded(create.max_schedules));
            }
            let row: Option<ScheduleRow> = sqlx::query_as(&format!(
                "INSERT INTO schedules (tenant_id, schedule_id, name, spec, input, next_fire_at, \
                     created_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, name) DO NOTHING RETURNING {COLUMNS}"
            ))
            .bind(tenant)
            .bind(ScheduleId::new())
            .bind(&create.spec.name)
            .bind(Json(create.spec))
            .bind(&create.spec.execution.input)
            .bind(millis_of(create.next_fire_at))
            .bind(now())
            .fetch_optional(&mut *conn)
            .await
            .map_err(EngineError::storage(op))?;
            let row = row.ok_or_else(|| refusals::schedule_name_taken(&create.spec.name))?;
            Ok(row.schedule())
        })
        .await
    }

    async fn get_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule> {
        self.read("get schedule", async |conn| {
            shared::get_schedule(conn, tenant, id).await
        })
        .await
    }

    async fn list_schedules(
        &self,
        tenant: TenantId,
        page: Page<Option<ScheduleId>>,
    ) -> Result<Vec<Schedule>> {
        self.read("list schedules", async |conn| {
            shared::list_schedules(conn, tenant, page).await
        })
        .await
    }

    async fn set_schedule_paused(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        change: PauseChange,
    ) -> Result<Schedule> {
        self.write("pause schedule", async |conn, _| {
            sqlx::query(
                "UPDATE schedules SET paused = ?3, \
                     next_fire_at = CASE WHEN ?3 THEN next_fire_at ELSE ?4 END \
                 WHERE tenant_id = ?1 AND schedule_id = ?2",
            )
            .bind(tenant)
            .bind(id)
            .bind(change.pauses())
            .bind(change.resume_at().map(millis_of))
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("pause schedule"))?;
            shared::get_schedule(conn, tenant, id).await
        })
        .await
    }

    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<bool> {
        self.write("delete schedule", async |conn, _| {
            shared::delete_schedule(conn, tenant, id).await
        })
        .await
    }

    async fn trigger_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Created> {
        self.write("trigger schedule", async |conn, effects| {
            let found = shared::get_schedule(conn, tenant, id).await?;
            let now = Utc::now();
            let created = fire(conn, &found, &[now], effects).await?;
            record_fire(conn, &found, now, found.next_fire_at, created.last()).await?;
            created
                .into_iter()
                .next()
                .ok_or_else(|| EngineError::Corrupt("a trigger created nothing".into()))
        })
        .await
    }

    async fn fire_due_schedules(&self, limit: u32) -> Result<u64> {
        self.write("fire schedules", async |conn, effects| {
            let due: Vec<ScheduleRow> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_fire_at <= ? \
                 ORDER BY next_fire_at LIMIT ?"
            ))
            .bind(now())
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await
            .map_err(EngineError::storage("find due schedules"))?;
            let mut fired = 0;
            for row in due {
                let due = row.schedule();
                let mut plan = due.plan(Utc::now())?;
                let running = plan.needs_overlap_check(&due) && still_running(conn, &due).await?;
                if plan.settle_overlap(&due, running) == OverlapAction::CancelThenFire {
                    cancel_previous(conn, &due, effects).await?;
                }
                let created = fire(conn, &due, &plan.fire, effects).await?;
                let last_fire = plan.last_fire_at(&due);
                record_fire(conn, &due, last_fire, plan.next_fire_at, created.last()).await?;
                fired += created.len() as u64;
            }
            Ok(fired)
        })
        .await
    }
}

async fn fire(
    conn: &mut SqliteConnection,
    schedule: &Schedule,
    at: &[DateTime<Utc>],
    effects: &mut Effects,
) -> Result<Vec<Created>> {
    let mut created = Vec::with_capacity(at.len());
    for t in at {
        let new = schedule.execution_at(*t, rand::random::<f64>());
        created.push(create_one(conn, schedule.tenant_id, &new, None, effects).await?);
    }
    Ok(created)
}

async fn record_fire(
    conn: &mut SqliteConnection,
    schedule: &Schedule,
    last_fire_at: DateTime<Utc>,
    next_fire_at: DateTime<Utc>,
    last: Option<&Created>,
) -> Result<()> {
    sqlx::query(
        "UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, \
             last_execution_id = coalesce(?, last_execution_id) \
         WHERE tenant_id = ? AND schedule_id = ?",
    )
    .bind(millis_of(next_fire_at))
    .bind(millis_of(last_fire_at))
    .bind(last.map(|c| c.execution_id))
    .bind(schedule.tenant_id)
    .bind(schedule.schedule_id)
    .execute(&mut *conn)
    .await
    .map_err(EngineError::storage("fire schedule"))?;
    Ok(())
}

/// Cancel the execution the schedule last created, as an operator's
/// cancel does (its lease is revoked and its guest stopped).
async fn cancel_previous(
    conn: &mut SqliteConnection,
    schedule: &Schedule,
    effects: &mut Effects,
) -> Result<()> {
    if let Some(last) = schedule.last_execution_id {
        let mut row = Exec::get(conn, schedule.tenant_id, last).await?;
        if !row.is_terminal() {
            cancel_row(conn, &mut row, SUPERSEDED, effects).await?;
        }
    }
    Ok(())
}
