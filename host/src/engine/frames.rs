//! What a guest streams while it runs (frames, in three modes, and its
//! progress) and reading it back: each frame checked against the
//! installation's and the tenant's limits before storage sees it.

use super::caps::stored_size;
use super::{clipped, Engine};
use crate::backend::{FrameBatch, NewFrame};
use crate::error::{EngineError, Result};
use crate::model::{
    AttemptRef, ExecutionId, Frame, LeaseHandle, Page, StreamMode, StreamSummary, TenantId,
};

/// Frames one `append_frames` call may write.
pub const MAX_FRAMES_PER_BATCH: usize = 1_000;

impl Engine {
    pub async fn append_frame(
        &self,
        lease: &LeaseHandle,
        frame_type: &str,
        mode: StreamMode,
        payload: &[u8],
    ) -> Result<i64> {
        self.check_name("frame type", frame_type)?;
        self.check_frame_size(payload)?;
        if mode == StreamMode::Summary {
            let patch: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
                EngineError::invalid("frame", format!("a summary frame must be JSON: {e}"))
            })?;
            if !patch.is_object() {
                return Err(EngineError::invalid(
                    "frame",
                    "a summary frame must be a JSON object (a merge patch)",
                ));
            }
        }
        let max_attempt_bytes = self
            .frame_room(lease, stored_size(payload.len(), 1))
            .await?;
        let frame = NewFrame {
            frame_type,
            mode,
            payload,
            max_attempt_bytes,
        };
        self.backend.append_frame(lease, frame).await
    }

    /// Durable frames of one type in one write (a worker's own records,
    /// such as an attempt's HTTP log): each checked as `append_frame`
    /// checks one, stored all or none; returns the last sequence number.
    pub async fn append_frames(
        &self,
        lease: &LeaseHandle,
        frame_type: &str,
        payloads: &[Vec<u8>],
    ) -> Result<i64> {
        self.check_name("frame type", frame_type)?;
        if payloads.is_empty() || payloads.len() > MAX_FRAMES_PER_BATCH {
            return Err(EngineError::invalid(
                "frames",
                format!("give 1 to {MAX_FRAMES_PER_BATCH}"),
            ));
        }
        for payload in payloads {
            self.check_frame_size(payload)?;
        }
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        let max_attempt_bytes = self
            .frame_room(lease, stored_size(bytes, payloads.len()))
            .await?;
        let batch = FrameBatch {
            frame_type,
            payloads,
            max_attempt_bytes,
        };
        self.backend.append_frames(lease, batch).await
    }

    fn check_frame_size(&self, payload: &[u8]) -> Result<()> {
        if payload.len() > self.limits.max_frame_bytes {
            return Err(EngineError::PayloadTooLarge {
                field: "frame",
                size: payload.len(),
                limit: self.limits.max_frame_bytes,
            });
        }
        Ok(())
    }

    /// Check `stored` more (payload and records) against the tenant's
    /// stored-bytes quota; returns
    /// the cap on the bytes one attempt's frames may hold.
    async fn frame_room(&self, lease: &LeaseHandle, stored: usize) -> Result<u64> {
        self.check_storage(lease.tenant_id, stored).await?;
        Ok(self.caps(lease.tenant_id).await?.frame_bytes_per_attempt)
    }

    pub async fn read_summary(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        attempt_index: i32,
    ) -> Result<StreamSummary> {
        let attempt = AttemptRef {
            execution: id,
            index: attempt_index,
        };
        self.backend
            .read_summary(tenant, attempt)
            .await?
            .ok_or_else(|| EngineError::not_found("summary of attempt", attempt))
    }

    pub async fn read_frames(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        attempt_index: i32,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Frame>> {
        let attempt = AttemptRef {
            execution: id,
            index: attempt_index,
        };
        let page = Page::new(after, limit.clamp(1, 1_000));
        self.backend.read_frames(tenant, attempt, page).await
    }

    pub async fn set_progress(
        &self,
        lease: &LeaseHandle,
        percent: u8,
        message: &str,
    ) -> Result<()> {
        self.backend
            .set_progress(lease, percent.min(100), clipped(message))
            .await
    }
}
