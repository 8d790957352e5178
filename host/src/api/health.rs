//! Liveness and readiness, as orchestrators probe them.
//!
//! `/healthz` answers while the process serves HTTP at all: restart it when
//! that fails. `/readyz` says whether it should get traffic: the database
//! answers, it has every migration this build expects, and the parts the
//! process runs besides the API (its worker pool) are up. It names each
//! check and never says more than `ok` or what is wrong in a word: no
//! storage error text reaches a probe.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::error::Json;
use super::AppState;

pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let mut checks = Map::new();
    let mut ready = true;
    let mut check = |name: &str, outcome: Result<(), String>| {
        let value = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(problem) => {
                ready = false;
                problem
            }
        };
        checks.insert(name.to_owned(), Value::String(value));
    };
    match state.engine.backend().pending_migrations().await {
        Ok(pending) => {
            check("database", Ok(()));
            let migrations = match pending.as_slice() {
                [] => Ok(()),
                versions => Err(format!("pending: {versions:?}")),
            };
            check("migrations", migrations);
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the database did not answer");
            check("database", Err("unreachable".into()));
        }
    }
    for (name, probe) in &state.readiness {
        check(name, probe().then_some(()).ok_or_else(|| "down".to_owned()));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": checks });
    (status, Json(body))
}
