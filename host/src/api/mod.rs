//! The HTTP API (axum): tenants upload components and submit, watch and
//! operate executions; operators manage tenants.
//!
//! The API is the only layer that knows HTTP. It authenticates the caller
//! (`auth`), turns JSON into engine requests and engine errors into the
//! stable `{error, kind}` shape ([`error`]), and nothing else: validation,
//! limits and tenancy filtering live in the engine and storage, so the worker
//! pool and the CLI get the same rules.

mod admin;
mod auth;
mod budgets;
mod components;
pub mod error;
mod events;

pub use admin::{CreateTenant, TenantCreated, TenantList};
pub use budgets::AdjustmentList;
pub use components::{ComponentList, Uploaded};
pub use concurrency::ConcurrencyLimitList;
pub use events::EventPage;
pub use executions::{
    BatchCreated, CancelBody, Cancelled, CreateBatch, CreateExecution, ExecutionPage,
    ExecutionResult, LeaseRevoked, Replayed,
};
pub use flows::{CancelFlowBody, EdgeList, FlowCancelled, FlowPage};
pub use grants::{ConfigList, GrantList, SetConfig};
pub use insights::{AttemptList, LeaseHistory};
pub use payload::Payload;
pub use schedules::{CreateSchedule, ScheduleList, ScheduleView, ScheduledBody};
pub use signals::SuspendedPage;
pub use steps::StepList;
pub use streams::{FrameView, StateChange};
mod concurrency;
mod executions;
mod flows;
mod grants;
mod health;
mod insights;
mod lanes;
pub mod listen;
mod live;
pub mod metrics;
pub mod openapi;
mod payload;
mod schedules;
mod signals;
mod steps;
mod streams;
mod turns;
pub mod ui;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;
use crate::runtime::Runtime;

pub use auth::hash_admin_token;

#[derive(Clone)]
pub struct ApiConfig {
    /// Enables `/v1/admin`; requests there must present it as a bearer token.
    pub admin_token: Option<String>,
    /// Largest body of a bulk create.
    pub max_batch_body_bytes: usize,
    /// More checks `/readyz` makes besides the database's, each named:
    /// `("worker_pool", is it running)`.
    pub readiness: Vec<(&'static str, Readiness)>,
    /// The web dashboard at `/ui`; `None` turns it off.
    pub ui: Option<ui::UiConfig>,
    /// Requests of one tenant handled at once; more wait their turn (see
    /// `turns`). Keep it under the API's database connections, so that no
    /// one tenant can hold them all.
    pub tenant_requests_in_flight: usize,
    /// Live streams (Server-Sent Events) one tenant may have open at once in
    /// this process; more are refused with 429.
    pub tenant_streams: usize,
}

/// One readiness check: true while its part is up.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            max_batch_body_bytes: 32 << 20,
            readiness: Vec::new(),
            ui: Some(ui::UiConfig::default()),
            tenant_requests_in_flight: 8,
            tenant_streams: 32,
        }
    }
}

pub struct AppState {
    engine: Engine,
    runtime: Arc<Runtime>,
    admin_token_sha256: Option<[u8; 32]>,
    metrics: PrometheusHandle,
    readiness: Vec<(&'static str, Readiness)>,
    ui: Option<ui::UiConfig>,
    turns: turns::TenantTurns,
    streams: turns::TenantTurns,
}

/// Small JSON bodies: everything that is not an upload or a create.
const SMALL_BODY: usize = 64 << 10;

pub fn router(engine: Engine, runtime: Arc<Runtime>, config: &ApiConfig) -> Router {
    let limits = engine.limits().clone();
    // Which store serves this process, as a constant series dashboards can
    // join on (`flowfabric_backend_info{backend="…"} 1`).
    let handle = metrics::handle();
    ::metrics::gauge!("flowfabric_backend_info", "backend" => engine.backend().name()).set(1.0);
    // An input travels as JSON text or base64 (4/3 of its size), plus the
    // rest of the request.
    let create_body = limits.max_input_bytes * 2 + SMALL_BODY;
    let state = Arc::new(AppState {
        engine,
        runtime,
        admin_token_sha256: config.admin_token.as_deref().map(hash_admin_token),
        metrics: handle,
        readiness: config.readiness.clone(),
        ui: config.ui.clone(),
        turns: turns::TenantTurns::new("requests in flight", config.tenant_requests_in_flight),
        streams: turns::TenantTurns::new("open streams", config.tenant_streams),
    });
    let v1 = Router::new()
        .route(
            "/executions",
            post(executions::create)
                .layer(DefaultBodyLimit::max(create_body))
                .get(executions::list),
        )
        .route(
            "/executions/batch",
            post(executions::create_batch)
                .layer(DefaultBodyLimit::max(config.max_batch_body_bytes)),
        )
        .route("/executions/{id}", get(executions::get))
        .route("/executions/{id}/result", get(executions::result))
        .route("/executions/{id}/cancel", post(executions::cancel))
        .route(
            "/executions/{id}/revoke-lease",
            post(executions::revoke_lease),
        )
        .route("/executions/{id}/priority", put(executions::priority))
        .route("/executions/{id}/replay", post(executions::replay))
        .route("/executions/{id}/resume", post(signals::resume))
        .route("/executions/{id}/waitpoints", get(signals::waitpoints))
        .route("/suspended", get(signals::suspended))
        .route("/executions/{id}/steps", get(steps::list))
        .route("/executions/{id}/attempts", get(insights::attempts))
        .route("/executions/{id}/leases", get(insights::leases))
        .route("/overview", get(insights::overview))
        .route(
            "/schedules",
            post(schedules::create)
                .layer(DefaultBodyLimit::max(create_body))
                .get(schedules::list),
        )
        .route(
            "/schedules/{id}",
            get(schedules::get).delete(schedules::delete),
        )
        .route("/schedules/{id}/pause", post(schedules::pause))
        .route("/schedules/{id}/resume", post(schedules::resume))
        .route("/schedules/{id}/trigger", post(schedules::trigger))
        .route("/concurrency-limits", get(concurrency::list))
        .route(
            "/concurrency-limits/{scope}/{name}",
            put(concurrency::put).delete(concurrency::delete),
        )
        .route(
            "/signals",
            post(signals::deliver).layer(DefaultBodyLimit::max(SMALL_BODY * 8)),
        )
        .route("/executions/{id}/stream", get(streams::follow))
        .route(
            "/executions/{id}/attempts/{attempt}/frames",
            get(streams::frames),
        )
        .route(
            "/executions/{id}/attempts/{attempt}/summary",
            get(streams::summary),
        )
        .route(
            "/flows",
            post(flows::create)
                .layer(DefaultBodyLimit::max(config.max_batch_body_bytes))
                .get(flows::list),
        )
        .route("/flows/{id}", get(flows::get))
        .route(
            "/flows/{id}/members",
            post(flows::extend)
                .layer(DefaultBodyLimit::max(config.max_batch_body_bytes))
                .get(flows::members),
        )
        .route("/flows/{id}/cancel", post(flows::cancel))
        .route("/flows/{id}/edges", get(flows::edges))
        .route("/flows/{id}/edges/{from}/{to}", get(flows::edge))
        .route("/budgets", post(budgets::create).get(budgets::list))
        .route("/lanes", get(lanes::list))
        .route("/budgets/{id}", get(budgets::get).delete(budgets::delete))
        .route("/budgets/{id}/reset", post(budgets::reset))
        .route("/budgets/{id}/usage", post(budgets::adjust))
        .route("/budgets/{id}/adjustments", get(budgets::adjustments))
        .route("/components", get(components::list))
        .route(
            "/components/{kind}",
            post(components::upload)
                .layer(DefaultBodyLimit::max(limits.max_component_bytes))
                .get(components::versions),
        )
        .route(
            "/components/{kind}/versions/{version}",
            get(components::get).delete(components::deprecate),
        )
        .route(
            "/components/{kind}/versions/{version}/purge",
            post(components::purge),
        )
        .route("/events", get(events::completions))
        .route("/events/stream", get(events::follow_completions))
        .route("/events/leases", get(events::leases))
        .route("/events/leases/stream", get(events::follow_leases))
        .route("/events/signals", get(events::signals))
        .route("/events/signals/stream", get(events::follow_signals))
        .route("/capabilities", get(grants::own_ceiling))
        .route("/grants", get(grants::list))
        .route(
            "/grants/{kind}",
            put(grants::put).get(grants::get).delete(grants::delete),
        )
        .route("/config", get(grants::list_config))
        .route(
            "/config/{name}",
            put(grants::set_config).delete(grants::delete_config),
        )
        .route("/tenant", get(admin::whoami))
        .route(
            "/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route("/admin/tenants/{tenant}/limits", put(admin::set_limits))
        .route(
            "/admin/tenants/{tenant}/capabilities",
            put(grants::set_ceiling).get(grants::get_ceiling),
        )
        .route(
            "/admin/tenants/{tenant}/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/admin/tenants/{tenant}/keys/{key}",
            delete(admin::revoke_key),
        )
        .layer(DefaultBodyLimit::max(SMALL_BODY));
    let mut app = Router::new().nest("/v1", v1);
    if config.ui.is_some() {
        app = app
            .nest("/ui", ui::router(limits.max_component_bytes))
            .route(
                "/ui/",
                get(|| async { axum::response::Redirect::to("/ui") }),
            );
    }
    app.route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Serve until `shutdown` resolves, then finish in-flight requests, with
/// the default [`listen::ServeLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(listener, router, listen::ServeLimits::default(), shutdown).await
}
