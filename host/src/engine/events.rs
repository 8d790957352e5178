//! Event subscriptions: the completion, lease-history and signal-delivery
//! streams of a tenant, read by cursor and followed live.
//!
//! Reads go straight to the backend's outboxes; a follower sleeps on
//! [`Engine::event_wakeups`] between reads and holds no connection meanwhile.
//!
//! A filtered read scans one window of the stream (at most
//! [`MAX_EVENT_PAGE`] events, one range scan of the outbox's primary key)
//! and keeps what matches, so a filter that matches little costs no more per
//! read than one that matches everything. The cursor it hands back is the
//! last event it looked at, matched or not: the next read starts past it.
//! The outboxes keep no kind or lane, so a filter on those reads them from
//! the scanned events' executions in one more query.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{
    CompletionEvent, EventBatch, EventCursor, EventFilter, ExecutionOrigin, LeaseEvent, Page,
    SignalEvent, StreamEvent, TenantId,
};

/// Largest page of events one read returns, and the window a filtered read
/// scans.
pub const MAX_EVENT_PAGE: u32 = 1_000;

/// A page read through a filter.
#[derive(Debug)]
pub struct FilteredBatch<E> {
    pub events: Vec<E>,
    /// Where the next read starts: the last event this one looked at.
    pub next: EventCursor,
    /// Events exist past the page that are not deliverable yet.
    pub pending: bool,
    /// The read stopped before the end of the deliverable events (the page
    /// filled, or the scan window ran out): read again at once.
    pub more: bool,
}

impl Engine {
    pub async fn completion_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<CompletionEvent>> {
        self.backend
            .completion_events(tenant, Page::new(after, page(limit)))
            .await
    }

    pub async fn lease_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<LeaseEvent>> {
        self.backend
            .lease_events(tenant, Page::new(after, page(limit)))
            .await
    }

    pub async fn signal_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<SignalEvent>> {
        self.backend
            .signal_events(tenant, Page::new(after, page(limit)))
            .await
    }

    /// Up to `limit` of the tenant's events after `after` that `filter`
    /// lets through, oldest first.
    pub async fn read_events<E: Subscription>(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<FilteredBatch<E>> {
        self.check_filter::<E>(filter)?;
        let limit = page(limit);
        let scan = if filter.is_empty() {
            limit
        } else {
            MAX_EVENT_PAGE
        };
        let batch = E::read(self, tenant, after, scan).await?;
        let scanned_all = batch.events.len() < scan as usize;
        let origins = if filter.needs_origin() {
            self.origins(tenant, &batch.events).await?
        } else {
            HashMap::new()
        };
        let mut page = FilteredBatch {
            events: Vec::new(),
            next: after,
            pending: batch.pending,
            more: !scanned_all,
        };
        for event in batch.events {
            if page.events.len() == limit as usize {
                page.more = true;
                break;
            }
            page.next = event.cursor();
            if filter.matches(&event, origins.get(&event.execution_id())) {
                page.events.push(event);
            }
        }
        Ok(page)
    }

    /// Refuse a filter `E`'s stream can never meet (an unknown outcome word,
    /// a malformed kind or lane).
    pub fn check_filter<E: StreamEvent>(&self, filter: &EventFilter) -> Result<()> {
        if let Some((field, reason)) = filter.unmeetable::<E>() {
            return Err(EngineError::invalid(field, reason));
        }
        if let Some(kind) = &filter.kind {
            self.check_name("kind", kind)?;
        }
        if let Some(lane) = &filter.lane {
            self.check_name("lane", lane)?;
        }
        Ok(())
    }

    /// The kind and lane of each execution `events` are about.
    async fn origins<E: StreamEvent>(
        &self,
        tenant: TenantId,
        events: &[E],
    ) -> Result<HashMap<crate::model::ExecutionId, ExecutionOrigin>> {
        let mut ids: Vec<_> = events.iter().map(|e| e.execution_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let found = self.backend.execution_origins(tenant, &ids).await?;
        Ok(found.into_iter().map(|o| (o.execution_id, o)).collect())
    }

    /// The tenant whose event streams may have grown: a wake-up, not data.
    pub async fn event_wakeups(&self, tenant: TenantId) -> Result<broadcast::Receiver<()>> {
        self.backend.event_wakeups(tenant).await
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
