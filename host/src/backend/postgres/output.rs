//! What a running attempt produces besides its result: frames and progress.
//! Both are worker writes, fenced by the lease like every other.

use super::Connections;

use super::counters;
use super::leases::{rejection, FENCE};
use super::notify_followers;
use super::rows::Args;
use super::PgBackend;
use crate::backend::refusals;
use crate::backend::stored_i64;
use crate::backend::{Fetch, Run};
use crate::backend::{FrameBatch, NewFrame};
use crate::error::{EngineError, Result};
use crate::model::{LeaseHandle, StreamMode, BEST_EFFORT_WINDOW};

crate::backend::traits::implement_output!(PgBackend, pg);

/// One statement checks the lease (locking the execution's row) and hands
/// out the next sequence number from the attempt's counters, so a frame
/// can never land after its lease is gone, and sequence numbers are dense
/// per attempt. A mode's own work (merging the summary, trimming
/// best-effort frames) is part of the same statement.
async fn append_frame(db: &PgBackend, lease: &LeaseHandle, frame: NewFrame<'_>) -> Result<i64> {
    let pool = &db.pool;
    // The cap on the attempt's bytes (`$9`) is part of the fence: a
    // refused frame changes nothing.
    let sql = format!(
        "WITH {fence}, \
              seq AS (INSERT INTO execution_counters AS c \
                          (tenant_id, execution_id, attempt_index, frame_seq, frame_bytes) \
                      SELECT $1, $2, $3, 1, octet_length($8) FROM fence \
                      WHERE octet_length($8) <= $9 \
                      ON CONFLICT (tenant_id, execution_id) DO UPDATE SET {next} \
                      WHERE {held} + excluded.frame_bytes <= $9 \
                      RETURNING frame_seq), \
              inserted AS (INSERT INTO frames (tenant_id, execution_id, attempt_index, seq, \
                               frame_type, mode, payload) \
                           SELECT $1, $2, $3, frame_seq, $6, $7, $8 FROM seq RETURNING seq) \
              {mode_work} \
         SELECT seq, {notify} FROM inserted",
        fence = counters::fenced(),
        next = counters::next_frame(),
        held = counters::attempt_bytes(),
        mode_work = mode_work(frame.mode),
        notify = notify_followers(),
    );
    let args = Args::fence(lease)
        .push(frame.frame_type)
        .push(frame.mode.as_str())
        .push(frame.payload)
        .push(stored_i64(frame.max_attempt_bytes));
    let op = "append frame";
    let args = match frame.mode {
        StreamMode::Durable | StreamMode::Summary => args,
        StreamMode::BestEffort => args.push(BEST_EFFORT_WINDOW),
    }
    .done(op)?;
    Append {
        op,
        sql: &sql,
        args,
        adding: frame.payload.len(),
        max_attempt_bytes: frame.max_attempt_bytes,
    }
    .run(pool, lease)
    .await
}

/// As `append_frame`, for many durable frames in one statement: the
/// counters advance by all of them at once, and the frames take the
/// sequence numbers up to the one the counters return.
async fn append_frames(db: &PgBackend, lease: &LeaseHandle, batch: FrameBatch<'_>) -> Result<i64> {
    let pool = &db.pool;
    let sql = format!(
        "WITH {fence}, \
              batch AS (SELECT b.payload, b.ord FROM unnest($7::bytea[]) \
                            WITH ORDINALITY AS b(payload, ord)), \
              total AS (SELECT count(*) AS n, coalesce(sum(octet_length(payload)), 0) AS bytes \
                        FROM batch), \
              seq AS (INSERT INTO execution_counters AS c \
                          (tenant_id, execution_id, attempt_index, frame_seq, frame_bytes) \
                      SELECT $1, $2, $3, t.n, t.bytes FROM fence, total t \
                      WHERE t.n > 0 AND t.bytes <= $8 \
                      ON CONFLICT (tenant_id, execution_id) DO UPDATE SET {next} \
                      WHERE {held} + excluded.frame_bytes <= $8 \
                      RETURNING frame_seq), \
              inserted AS (INSERT INTO frames (tenant_id, execution_id, attempt_index, seq, \
                               frame_type, mode, payload) \
                           SELECT $1, $2, $3, s.frame_seq - t.n + b.ord, $6, 'durable', b.payload \
                           FROM seq s, total t, batch b RETURNING seq) \
         SELECT l.last, {notify} \
         FROM (SELECT max(seq) AS last FROM inserted) l WHERE l.last IS NOT NULL",
        fence = counters::fenced(),
        next = counters::next_frame(),
        held = counters::attempt_bytes(),
        notify = notify_followers(),
    );
    let op = "append frames";
    let args = Args::fence(lease)
        .push(batch.frame_type)
        .push(batch.payloads)
        .push(stored_i64(batch.max_attempt_bytes))
        .done(op)?;
    Append {
        op,
        sql: &sql,
        args,
        adding: usize::try_from(batch.bytes()).unwrap_or(usize::MAX),
        max_attempt_bytes: batch.max_attempt_bytes,
    }
    .run(pool, lease)
    .await
}

/// An append statement, bound, that adds `adding` bytes to the attempt's
/// frames: its first column is the last sequence number it handed out (the
/// second, the notify's `void`, is never decoded), and it returns no row
/// when the fence or the attempt's byte cap refused it.
struct Append<'a> {
    op: &'static str,
    sql: &'a str,
    args: sqlx::postgres::PgArguments,
    adding: usize,
    max_attempt_bytes: u64,
}

impl Append<'_> {
    /// The last sequence number, or why the append was refused.
    async fn run(self, pool: &Connections, lease: &LeaseHandle) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar_with(self.sql, self.args)
            .optional(pool, self.op)
            .await?;
        match seq {
            Some(seq) => Ok(seq),
            None => Err(frame_refusal(pool, lease, self.adding, self.max_attempt_bytes).await?),
        }
    }
}

async fn set_progress(
    db: &PgBackend,
    lease: &LeaseHandle,
    percent: u8,
    message: &str,
) -> Result<()> {
    let pool = &db.pool;
    let sql =
        format!("UPDATE executions SET progress_percent = $6, progress_message = $7 WHERE {FENCE}");
    let bound = Args::fence(lease)
        .push(i16::from(percent.min(100)))
        .push(message)
        .done("set progress")?;
    let updated = sqlx::query_with(&sql, bound)
        .run(pool, "set progress")
        .await?
        .rows_affected();
    if updated == 1 {
        Ok(())
    } else {
        Err(rejection(pool, lease, None).await?)
    }
}

/// Why an append matched no row: the lease, or (the lease still held) the cap.
async fn frame_refusal(
    pool: &Connections,
    lease: &LeaseHandle,
    adding: usize,
    max_attempt_bytes: u64,
) -> Result<EngineError> {
    let sql = format!(
        "SELECT {} FROM executions WHERE {FENCE}",
        counters::HELD_FRAME_BYTES
    );
    let held: Option<i64> = sqlx::query_scalar_with(&sql, Args::fence(lease).done("append frame")?)
        .optional(pool, "append frame")
        .await?;
    match held {
        Some(stored) => Ok(refusals::frame_bytes_exceeded(
            max_attempt_bytes,
            stored.max(0) as u64,
            adding,
        )),
        None => rejection(pool, lease, None).await,
    }
}

/// A summary patch is the frame's payload (`$8`, checked to be a JSON object
/// by the engine); `$10` is the best-effort window.
fn mode_work(mode: StreamMode) -> &'static str {
    match mode {
        StreamMode::Durable => "",
        StreamMode::Summary => {
            ", merged AS (INSERT INTO stream_summaries \
                   (tenant_id, execution_id, attempt_index, document, version) \
               SELECT $1, $2, $3, \
                   flowfabric_merge_patch('{}'::jsonb, convert_from($8, 'UTF8')::jsonb), 1 \
               FROM seq \
               ON CONFLICT (tenant_id, execution_id, attempt_index) DO UPDATE \
               SET document = flowfabric_merge_patch(stream_summaries.document, \
                   convert_from($8, 'UTF8')::jsonb), \
                   version = stream_summaries.version + 1, updated_at = now())"
        }
        StreamMode::BestEffort => {
            ", trimmed AS (DELETE FROM frames f USING seq \
               WHERE f.tenant_id = $1 AND f.execution_id = $2 AND f.attempt_index = $3 \
                 AND f.mode = 'best_effort' AND f.seq <= seq.frame_seq - $10::bigint)"
        }
    }
}
