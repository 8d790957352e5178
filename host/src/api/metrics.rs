//! Prometheus metrics: one process-wide recorder behind the `metrics` facade,
//! so the worker pool and the API record without knowing about the exporter,
//! and `/metrics` renders the text format.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use super::auth::MetricsReader;
use super::AppState;

const SECONDS_BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// The process's recorder, installed on first use. Several servers in one
/// process (tests) share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics is empty");
            }
            handle
        })
        .clone()
}

/// The Prometheus text, for the operator (see [`MetricsReader`]).
pub async fn render(State(state): State<Arc<AppState>>, _reader: MetricsReader) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// A span per request (the tenant is recorded once authenticated) and request
/// count and latency by route template, never by raw path, so ids cannot blow
/// up the label set.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!("http", %method, %route, tenant = tracing::field::Empty);
    let started = Instant::now();
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route)];
    metrics::histogram!("flowfabric_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    let [method, route] = labels;
    metrics::counter!(
        "flowfabric_http_requests_total",
        &[method, route, ("status", status)]
    )
    .increment(1);
    response
}
