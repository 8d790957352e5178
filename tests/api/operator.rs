//! The operator's routes: tenants and their keys under the admin token,
//! readiness that names what is not ready, and health, metrics and the
//! OpenAPI document.

use reqwest::Method;
use serde_json::json;

use flowfabric_tests::server::{worker_config, TestServer};

use crate::{setup, submit};

#[tokio::test]
async fn operator_routes_manage_tenants_and_keys() {
    let server = TestServer::start().await;
    let tenant = server.tenant("acme").await;
    let admin = |method, path: &str| {
        server
            .http
            .request(method, server.url(path))
            .bearer_auth(flowfabric_tests::server::ADMIN_TOKEN)
    };
    let response = admin(Method::GET, "/v1/admin/tenants")
        .send()
        .await
        .unwrap();
    let (status, list) = flowfabric_tests::server::response_parts(response).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["name"], "acme");

    let response = admin(
        Method::PUT,
        &format!("/v1/admin/tenants/{}/limits", tenant.id),
    )
    .json(&json!({ "max_running": 3, "max_queued": 100 }))
    .send()
    .await
    .unwrap();
    let (status, updated) = flowfabric_tests::server::response_parts(response).await;
    assert_eq!(status, 200, "{updated}");
    let (_, me) = server.call(&tenant, Method::GET, "/v1/tenant", None).await;
    assert_eq!(me["limits"]["max_running"], 3);

    // A second key; revoking the first leaves the second working.
    let response = admin(
        Method::POST,
        &format!("/v1/admin/tenants/{}/keys", tenant.id),
    )
    .json(&json!({ "name": "rotated" }))
    .send()
    .await
    .unwrap();
    let (status, second) = flowfabric_tests::server::response_parts(response).await;
    assert_eq!(status, 201, "{second}");
    let response = admin(
        Method::GET,
        &format!("/v1/admin/tenants/{}/keys", tenant.id),
    )
    .send()
    .await
    .unwrap();
    let (_, keys) = flowfabric_tests::server::response_parts(response).await;
    let first_key = keys["items"][0]["key_id"].as_str().unwrap().to_owned();
    assert!(
        keys["items"][0].get("token").is_none(),
        "tokens are never listed"
    );
    let response = admin(
        Method::DELETE,
        &format!("/v1/admin/tenants/{}/keys/{first_key}", tenant.id),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = server.call(&tenant, Method::GET, "/v1/tenant", None).await;
    assert_eq!(status, 401, "the revoked key is refused");
    let rotated = flowfabric_tests::server::ApiTenant {
        id: tenant.id,
        token: second["token"].as_str().unwrap().to_owned(),
    };
    let (status, _) = server.call(&rotated, Method::GET, "/v1/tenant", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn readiness_names_what_is_not_ready() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pool_up = std::sync::Arc::new(AtomicBool::new(true));
    let probe = pool_up.clone();
    let config = flowfabric::api::ApiConfig {
        readiness: vec![(
            "worker_pool",
            std::sync::Arc::new(move || probe.load(Ordering::Acquire)),
        )],
        ..Default::default()
    };
    let server = TestServer::start_with(flowfabric::engine::Limits::default(), config).await;
    let ready = || async {
        let response = server.http.get(server.url("/readyz")).send().await.unwrap();
        flowfabric_tests::server::response_parts(response).await
    };
    let (status, body) = ready().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok", "worker_pool": "ok"}})
    );

    pool_up.store(false, Ordering::Release);
    let (status, body) = ready().await;
    assert_eq!(
        (status, &body["checks"]["worker_pool"]),
        (503, &json!("down"))
    );

    // A database behind this build's migrations is not ready either.
    pool_up.store(true, Ordering::Release);
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(server.db.pg())
    .await
    .unwrap();
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["migrations"]
            .as_str()
            .unwrap()
            .starts_with("pending: ["),
        "{body}"
    );
    assert_eq!(body["status"], "not_ready");
    // Liveness does not depend on any of it.
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let (mut server, tenant) = setup().await;
    server.start_workers(worker_config(2));
    let id = submit(&server, &tenant, "echo", json!("m")).await;
    server.wait_terminal(&tenant, &id).await;
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The metrics name tenants: the operator's alone, not a tenant's.
    for key in [None, Some(tenant.token.as_str())] {
        let mut request = server.http.get(server.url("/metrics"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let refused = request.send().await.unwrap();
        assert_eq!(refused.status(), 401, "{key:?}");
    }
    let metrics = server.metrics().await;
    for name in [
        "flowfabric_http_requests_total",
        "flowfabric_http_request_duration_seconds_bucket",
        "flowfabric_claimed_executions_total",
        "flowfabric_attempts_finished_total",
        "flowfabric_completion_batch_size",
        // Where the run went: the worker's thread, or the guest threads.
        r#"flowfabric_guest_runs_total{ran=""#,
        r#"flowfabric_backend_info{backend="postgres"} 1"#,
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(
        metrics.contains(r#"route="/v1/executions/{id}""#),
        "routes are labelled by template, not raw path"
    );
    assert!(!metrics.contains(&id), "no ids in labels");
}
