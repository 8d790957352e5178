//! The storage traits for what an execution waits on and what it makes:
//! suspensions and signals, durable steps, child executions and flows.
//! Like the others in `traits.rs`, each is followed by its method list and
//! implemented in the module of the same name in both backends.

use std::time::Duration;

use async_trait::async_trait;

use super::shared::storage_methods;

use super::params::{
    ChildSpawn, EdgeFilter, FlowCancel, GraphWrite, NewWaitpoint, SignalDelivery, SleepRequest,
    StepRecord, SuspendRequest,
};
use crate::error::Result;
use crate::model::{
    ChildrenOutcome, ExecutionId, FlowEdgeDetail, FlowId, FlowSnapshot, FlowSummary, GraphApplied,
    JournalEntry, LeaseHandle, NewFlow, Page, Signal, SignalOutcome, SpawnedChild, SuspendOutcome,
    TenantId, TimeoutBehavior, Waitpoint, WaitpointId,
};

/// Waitpoints, suspending, signals and resuming.
#[async_trait]
pub trait Suspensions: Send + Sync {
    /// Create a waitpoint of the lease's execution, or return the open one
    /// with this key. Pending waitpoints buffer signals until a suspension.
    /// A new one is refused (`limit_exceeded`) once the execution has
    /// `max_waitpoints`.
    async fn create_waitpoint(
        &self,
        lease: &LeaseHandle,
        new: NewWaitpoint<'_>,
    ) -> Result<Waitpoint>;

    /// Suspend the lease's execution (releasing the lease), unless signals
    /// already buffered satisfy the condition, which are then consumed.
    /// The condition's waitpoints are created as needed, within
    /// `max_waitpoints` for the execution (`limit_exceeded` past it).
    async fn suspend(
        &self,
        lease: &LeaseHandle,
        request: SuspendRequest<'_>,
    ) -> Result<SuspendOutcome>;

    /// Deliver a signal to a waitpoint; resumes the execution when it completes
    /// the condition. Idempotent by the signal's key. `limit_exceeded` once
    /// the execution keeps `max_signals`.
    async fn deliver_signal(
        &self,
        tenant: TenantId,
        delivery: SignalDelivery<'_>,
    ) -> Result<SignalOutcome>;

    /// An operator resumes a suspended execution.
    async fn resume(&self, tenant: TenantId, id: ExecutionId) -> Result<()>;

    /// The signals the resume numbered `seq` consumed.
    async fn resume_signals(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        seq: i32,
    ) -> Result<Vec<Signal>>;

    /// A page of the execution's waitpoints, in id order (ids are
    /// time-ordered, so creation order).
    async fn list_waitpoints(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        page: Page<Option<WaitpointId>>,
    ) -> Result<Vec<Waitpoint>>;
}

// Every write (fenced, or resuming) is the backend's own.
storage_methods! { $ implement_suspension: impl Suspensions in suspension {
    read {
        "read resume signals" resume_signals(tenant: TenantId, id: ExecutionId, seq: i32)
            -> Vec<Signal>;
        "list waitpoints" list_waitpoints(
            tenant: TenantId,
            id: ExecutionId,
            page: Page<Option<WaitpointId>>
        ) -> Vec<Waitpoint>;
    }
    write {}
    own {
        deliver_signal(tenant: TenantId, delivery: SignalDelivery<'_>) -> SignalOutcome;
        resume(tenant: TenantId, id: ExecutionId) -> ();
    }
    held {
        "create waitpoint" create_waitpoint(lease: &LeaseHandle, new: NewWaitpoint<'_>)
            -> Waitpoint;
        "suspend" suspend(lease: &LeaseHandle, request: SuspendRequest<'_>) -> SuspendOutcome;
    }
} }

/// Durable steps: each execution's journal of what its runs already did
/// (see [`crate::model::JournalEntry`]).
#[async_trait]
pub trait Steps: Send + Sync {
    /// A page of the execution's journal, in position order.
    async fn journal(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        page: Page<Option<u32>>,
    ) -> Result<Vec<JournalEntry>>;

    /// Record a step of the lease's execution and append `frame` (a durable
    /// `step` frame announcing it) to the attempt, in one transaction fenced
    /// by the lease. Past `limits` nothing is written (`limit_exceeded`). A
    /// position already recorded is refused (`conflict`), unless this lease
    /// recorded the same step there (a replayed call: `Ok`).
    async fn record_step(&self, lease: &LeaseHandle, record: StepRecord<'_>) -> Result<()>;

    /// Suspend the lease's execution until `wake_at`, releasing the lease,
    /// in one transaction with recording `step` (a new sleep, with its
    /// frame) when given; an existing sleep woken early passes `None`.
    async fn sleep(&self, lease: &LeaseHandle, request: SleepRequest<'_>) -> Result<()>;
}

// The fenced writes are the backend's own.
storage_methods! { $ implement_steps: impl Steps in steps {
    read {
        "read journal" journal(tenant: TenantId, id: ExecutionId, page: Page<Option<u32>>)
            -> Vec<JournalEntry>;
    }
    write {}
    own {
        record_step(lease: &LeaseHandle, record: StepRecord<'_>) -> ();
    }
    held {
        "sleep" sleep(lease: &LeaseHandle, request: SleepRequest<'_>) -> ();
    }
} }

/// Children an execution spawns and waits for.
#[async_trait]
pub trait Children: Send + Sync {
    /// Create a child of the lease's execution in its flow (creating a flow
    /// with the parent as member `root` if it has none), or return the child
    /// it already spawned under `key`.
    async fn spawn_child(&self, lease: &LeaseHandle, spawn: ChildSpawn<'_>)
        -> Result<SpawnedChild>;

    /// The lease's children if all have ended; otherwise suspend the execution
    /// (releasing the lease) until the last one does.
    async fn wait_children(
        &self,
        lease: &LeaseHandle,
        timeout: Option<Duration>,
        on_timeout: TimeoutBehavior,
    ) -> Result<ChildrenOutcome>;
}

storage_methods! { $ implement_children: impl Children in children {
    read {}
    write {}
    own {
        spawn_child(lease: &LeaseHandle, spawn: ChildSpawn<'_>) -> SpawnedChild;
    }
    held {
        "wait children" wait_children(
            lease: &LeaseHandle,
            timeout: Option<Duration>,
            on_timeout: TimeoutBehavior
        ) -> ChildrenOutcome;
    }
} }

/// Flows: graph changes, snapshots and cancellation.
#[async_trait]
pub trait Flows: Send + Sync {
    /// Create a flow and its first members and edges, in one transaction.
    async fn create_flow(
        &self,
        tenant: TenantId,
        flow: &NewFlow,
        write: GraphWrite<'_>,
    ) -> Result<GraphApplied>;

    /// Add members and edges to a flow, in one transaction: refused whole if an
    /// edge would close a cycle, point at a member that no longer waits, or
    /// the flow moved past `change.expected_revision`.
    async fn extend_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        write: GraphWrite<'_>,
    ) -> Result<GraphApplied>;

    async fn get_flow(&self, tenant: TenantId, flow: FlowId) -> Result<FlowSnapshot>;

    /// The flow's edges in (from, to) key order: only those out of the
    /// member keyed `from`, and into the member keyed `to`, when given.
    /// `not_found` when the tenant has no such flow.
    async fn flow_edges(
        &self,
        tenant: TenantId,
        flow: FlowId,
        filter: EdgeFilter<'_>,
    ) -> Result<Vec<FlowEdgeDetail>>;

    /// A page of the tenant's flows, in id (creation) order.
    async fn list_flows(
        &self,
        tenant: TenantId,
        page: Page<Option<FlowId>>,
    ) -> Result<Vec<FlowSummary>>;

    /// Close a flow to new members and cancel the members `policy` names;
    /// returns how many were cancelled. Idempotent.
    async fn cancel_flow(&self, tenant: TenantId, cancel: FlowCancel<'_>) -> Result<u64>;
}

// A graph change follows each backend's own lock order (see their `flows`
// modules), so every write is the backend's own; the reads are shared.
storage_methods! { $ implement_flows: impl Flows in flows {
    read {
        "read flow" get_flow(tenant: TenantId, flow: FlowId) -> FlowSnapshot;
        "list flows" list_flows(tenant: TenantId, page: Page<Option<FlowId>>) -> Vec<FlowSummary>;
        "read flow edges" flow_edges(tenant: TenantId, flow: FlowId, filter: EdgeFilter<'_>) -> Vec<FlowEdgeDetail>;
    }
    write {}
    own {
        create_flow(tenant: TenantId, flow: &NewFlow, write: GraphWrite<'_>) -> GraphApplied;
        extend_flow(tenant: TenantId, flow: FlowId, write: GraphWrite<'_>) -> GraphApplied;
        cancel_flow(tenant: TenantId, cancel: FlowCancel<'_>) -> u64;
    }
} }
