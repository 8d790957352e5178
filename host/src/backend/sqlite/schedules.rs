//! Schedules. With one writer, a firing pass reads the due schedules and
//! fires each in the same write transaction: nothing can fire one between
//! the read and the write.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::executions::{cancel_row, create_one};
use super::record::Exec;
use super::time::now;
use super::{Effects, SqliteBackend};
use crate::backend::shared::schedules::sqlite::{self as shared, still_running};
use crate::backend::shared::schedules::{ScheduleRow, COLUMNS};
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{Created, OverlapAction, Schedule, ScheduleId, TenantId, SUPERSEDED};

crate::backend::configuration::implement_schedules!(SqliteBackend, sqlite);

/// Fire the schedule now, outside its plan; its next fire time stays.
async fn trigger_schedule(db: &SqliteBackend, tenant: TenantId, id: ScheduleId) -> Result<Created> {
    db.write("trigger schedule", async |conn, effects| {
        let found = shared::get_schedule(conn, tenant, id).await?;
        let now = Utc::now();
        let created = fire(conn, &found, &[now], effects).await?;
        shared::record_trigger(conn, &found, now, created).await
    })
    .await
}

async fn fire_due_schedules(db: &SqliteBackend, limit: u32) -> Result<u64> {
    db.write("fire schedules", async |conn, effects| {
        let due: Vec<ScheduleRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_fire_at <= ? \
             ORDER BY next_fire_at LIMIT ?"
        ))
        .bind(now())
        .bind(i64::from(limit))
        .all(&mut *conn, "find due schedules")
        .await?;
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
            shared::record_fire(conn, &due, last_fire, plan.next_fire_at, created.last()).await?;
            fired += created.len() as u64;
        }
        Ok(fired)
    })
    .await
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
