//! The OpenAPI document, generated from the handlers and types themselves
//! (utoipa), served at `/openapi.json` and checked into the repository as
//! `openapi.json`; a test fails when the two drift apart.

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    admin, budgets, components, concurrency, events, executions, flows, grants, insights, lanes,
    schedules, signals, steps, streams,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FlowFabric",
        description = "Durable WebAssembly task executions. Every `/v1` route except \
            `/v1/admin` is scoped to the tenant of the API key presented as a bearer \
            token; errors are `{error, kind, retryable}`."
    ),
    paths(
        executions::create, executions::create_batch, executions::list, executions::get,
        executions::result, executions::cancel, executions::revoke_lease, executions::priority, executions::replay,
        steps::list, insights::attempts, insights::leases, insights::overview,
        schedules::create, schedules::list, schedules::get, schedules::pause,
        schedules::resume, schedules::trigger, schedules::delete,
        concurrency::list, concurrency::put, concurrency::delete,
        flows::create, flows::extend, flows::get, flows::list, flows::cancel,
        budgets::create, budgets::list, budgets::get, budgets::delete, budgets::reset,
        budgets::adjust,
        budgets::adjustments, lanes::list,
        streams::frames, streams::summary, streams::follow,
        flows::members, flows::edges, flows::edge, signals::deliver, signals::waitpoints, signals::suspended, signals::resume,
        events::completions, events::leases, events::signals,
        events::follow_completions, events::follow_leases, events::follow_signals,
        components::upload, components::list, components::versions, components::get,
        components::deprecate, components::purge,
        admin::whoami, admin::create_tenant, admin::list_tenants, admin::set_limits,
        admin::create_key, admin::list_keys, admin::revoke_key,
        grants::set_ceiling, grants::get_ceiling, grants::own_ceiling, grants::list, grants::put,
        grants::get, grants::delete, grants::list_config, grants::set_config,
        grants::delete_config,
    ),
    modifiers(&Security),
    tags(
        (name = "executions"), (name = "schedules", description = "Recurring executions, fired exactly once per fire time."), (name = "concurrency", description = "Limits per concurrency key (a customer id, say), per kind or lane."), (name = "flows"), (name = "budgets"), (name = "streams"), (name = "signals"), (name = "events"), (name = "components"), (name = "tenant"),
        (name = "grants", description = "What components may reach: outbound HTTP, config values and secrets, scratch space."),
        (name = "admin", description = "Operator routes; need the server's admin token."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["api_key", "admin_token", "waitpoint_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The document as served and as checked in.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

pub async fn serve() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
}
