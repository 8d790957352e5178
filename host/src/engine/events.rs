//! Event subscriptions: the completion, lease-history and signal-delivery
//! streams of a tenant, read by cursor and followed live.
//!
//! Reads go straight to the backend's outboxes; a follower sleeps on
//! [`Engine::event_wakeups`] between reads and holds no connection meanwhile.

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::Engine;
use crate::error::Result;
use crate::model::{
    CompletionEvent, EventBatch, EventCursor, LeaseEvent, SignalEvent, StreamEvent, TenantId,
};

/// Largest page of events one read returns.
pub const MAX_EVENT_PAGE: u32 = 1_000;

impl Engine {
    pub async fn completion_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<CompletionEvent>> {
        self.backend
            .completion_events(tenant, after, page(limit))
            .await
    }

    pub async fn lease_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<LeaseEvent>> {
        self.backend.lease_events(tenant, after, page(limit)).await
    }

    pub async fn signal_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<SignalEvent>> {
        self.backend.signal_events(tenant, after, page(limit)).await
    }

    /// The tenant whose event streams may have grown: a wake-up, not data.
    pub async fn event_wakeups(&self) -> Result<broadcast::Receiver<TenantId>> {
        self.backend.event_wakeups().await
    }
}

fn page(limit: u32) -> u32 {
    limit.clamp(1, MAX_EVENT_PAGE)
}

/// An event stream a subscriber can read through the engine.
#[async_trait]
pub trait Subscription: StreamEvent + Sized {
    async fn read(
        engine: &Engine,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<Self>>;
}

#[async_trait]
impl Subscription for CompletionEvent {
    async fn read(
        engine: &Engine,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<Self>> {
        engine.completion_events(tenant, after, limit).await
    }
}

#[async_trait]
impl Subscription for LeaseEvent {
    async fn read(
        engine: &Engine,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<Self>> {
        engine.lease_events(tenant, after, limit).await
    }
}

#[async_trait]
impl Subscription for SignalEvent {
    async fn read(
        engine: &Engine,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<Self>> {
        engine.signal_events(tenant, after, limit).await
    }
}
