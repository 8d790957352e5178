//! The runtime and worker pool with real compiled guests and a real Postgres
//! (guest suspension, signals and children run on SQLite as well).

#[macro_use]
extern crate flowfabric_tests;

mod components;
mod grants;
mod guest_control;
mod hardening;
mod http_usage;
mod keep_alive;
mod languages;
mod placement;
mod pool;
mod reuse;
mod sandbox;
mod scratch;
mod steps;
mod suspension;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use flowfabric::engine::Limits;
use flowfabric::model::TenantId;
use flowfabric::model::{Backoff, Execution, ExecutionId, Frame, NewExecution, PublicState};
use flowfabric::runtime::{Runtime, SandboxLimits};
use flowfabric::worker::{WorkerConfig, WorkerPool};
use flowfabric_tests::{guest, runtime, Store, TestDb};

pub struct Env {
    pub db: TestDb,
    pub tenant: TenantId,
    pub runtime: Arc<Runtime>,
}

impl Env {
    /// A database with one tenant that has `echo` and `testkit` registered.
    pub async fn new() -> Self {
        Self::on(Store::Postgres).await
    }

    /// [`Env::new`] on either backend.
    pub async fn on(store: Store) -> Self {
        Self::on_with(store, |_| {}).await
    }

    /// [`Env::on`] with the engine's limits as `adjust` changes them.
    pub async fn on_with(store: Store, adjust: impl FnOnce(&mut Limits)) -> Self {
        let db = TestDb::on_with(store, adjust).await;
        let tenant = db.tenant("acme").await;
        let runtime = runtime();
        for name in ["echo", "testkit"] {
            flowfabric::components::register(&db.engine, &runtime, tenant, name, &guest(name))
                .await
                .expect("register guest");
        }
        Self {
            db,
            tenant,
            runtime,
        }
    }

    pub fn pool(&self, config: WorkerConfig) -> WorkerPool {
        WorkerPool::start(self.db.engine.clone(), self.runtime.clone(), config)
    }

    /// Submit a `testkit` execution with no retries unless `retries` says so.
    pub async fn submit(&self, kind: &str, input: &str, retries: u32) -> ExecutionId {
        let mut new = NewExecution::new(kind, input.as_bytes());
        new.policy.retry.max_retries = retries;
        new.policy.retry.backoff = Backoff::Fixed { delay_ms: 0 };
        self.db
            .engine
            .create(self.tenant, new)
            .await
            .expect("create")
            .execution_id
    }

    /// Run testkit with `input` (retried up to `retries` times), which must
    /// complete, and return its result as text.
    pub async fn completed_text(&self, input: &str, retries: u32) -> String {
        let id = self.submit("testkit", input, retries).await;
        let ex = self.wait_terminal(id).await;
        assert_eq!(
            ex.state,
            PublicState::Completed,
            "{input}: {:?}",
            ex.last_failure
        );
        text(&ex.result)
    }

    /// Up to `limit` frames of the execution's first attempt, in order.
    pub async fn first_attempt_frames(&self, id: ExecutionId, limit: u32) -> Vec<Frame> {
        self.db
            .engine
            .read_frames(self.tenant, id, 1, 0, limit)
            .await
            .expect("read frames")
    }

    pub async fn wait_terminal(&self, id: ExecutionId) -> Execution {
        self.wait_terminal_within(id, Duration::from_secs(30)).await
    }

    pub async fn wait_terminal_within(&self, id: ExecutionId, limit: Duration) -> Execution {
        self.db.wait_terminal(self.tenant, id, limit).await
    }

    pub async fn wait_state(&self, id: ExecutionId, state: PublicState) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ex = self.db.engine.get(self.tenant, id).await.expect("get");
            if ex.state == state {
                return;
            }
            assert!(
                !ex.state.is_terminal() && tokio::time::Instant::now() < deadline,
                "execution {id} never reached {state}: it is {} after attempt {} ({:?})",
                ex.state,
                ex.attempt_index,
                ex.last_failure
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn config(slots: usize) -> WorkerConfig {
    WorkerConfig {
        slots,
        lease_ttl: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
        sandbox: SandboxLimits {
            timeout: Duration::from_secs(10),
            memory_bytes: 64 << 20,
            ..SandboxLimits::default()
        },
        drain_timeout: Duration::from_secs(5),
        ..WorkerConfig::default()
    }
}

pub fn text(bytes: &Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(bytes.as_deref().unwrap_or_default()).into_owned()
}
