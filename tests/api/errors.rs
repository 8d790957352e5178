//! Bad input on every route gets the documented status and `{error, kind}`,
//! and writes nothing.

use reqwest::Method;
use serde_json::{json, Value};

use flowfabric::api::ApiConfig;
use flowfabric::engine::Limits;
use flowfabric_tests::server::{response_parts, ApiTenant, TestServer, ADMIN_TOKEN};

use crate::{setup, submit};

/// Send a raw body with a content type; returns status and JSON body.
async fn raw(
    server: &TestServer,
    tenant: &ApiTenant,
    method: Method,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let response = server
        .http
        .request(method, server.url(path))
        .bearer_auth(&tenant.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    response_parts(response).await
}

fn assert_error(what: &str, (status, body): &(u16, Value), want_status: u16, want_kind: &str) {
    assert_eq!(*status, want_status, "{what}: {body}");
    assert_eq!(body["kind"], want_kind, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: an error message"
    );
}

#[tokio::test]
async fn create_rejects_bad_bodies_and_writes_nothing() {
    let (server, tenant) = setup().await;
    let json_cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"kind\": ".into(), 400, "invalid_input"),
        ("wrong type", r#"{"kind": 5}"#.into(), 400, "invalid_input"),
        (
            "missing kind",
            r#"{"input": 1}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "unknown field",
            r#"{"kind": "echo", "colour": 1}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "input twice",
            r#"{"kind": "echo", "input": 1, "input_base64": "AA=="}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "bad base64",
            r#"{"kind": "echo", "input_base64": "%%%"}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "unknown kind",
            r#"{"kind": "nope"}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "bad kind name",
            r#"{"kind": "a b"}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "priority range",
            r#"{"kind": "echo", "priority": 99999}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "bad policy",
            r#"{"kind": "echo", "policy": {"retry": {"max_retires": 3}}}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "an attempt timeout no timestamp can hold",
            r#"{"kind": "echo", "policy": {"timeouts": {"attempt_timeout_ms": 9223372036854775807}}}"#
                .into(),
            400,
            "invalid_input",
        ),
        (
            "a deadline no timestamp can hold",
            r#"{"kind": "echo", "policy": {"timeouts": {"execution_deadline_ms": 9223372036854775807}}}"#
                .into(),
            400,
            "invalid_input",
        ),
        (
            "delay until year 0",
            r#"{"kind": "echo", "delay_until": "0000-01-01T00:00:00Z"}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "delay until year 9999",
            r#"{"kind": "echo", "delay_until": "9999-12-31T00:00:00Z"}"#.into(),
            400,
            "invalid_input",
        ),
        (
            "input over the limit",
            json!({ "kind": "echo", "input_base64": base64_of(1 << 20 | 1) }).to_string(),
            413,
            "payload_too_large",
        ),
        (
            "body over the route limit",
            json!({ "kind": "echo", "input": "x".repeat(3 << 20) }).to_string(),
            413,
            "payload_too_large",
        ),
    ];
    for (what, body, status, kind) in json_cases {
        let got = raw(
            &server,
            &tenant,
            Method::POST,
            "/v1/executions",
            "application/json",
            body,
        )
        .await;
        assert_error(what, &got, status, kind);
    }
    let got = raw(
        &server,
        &tenant,
        Method::POST,
        "/v1/executions",
        "text/plain",
        "{}",
    )
    .await;
    assert_error("not JSON", &got, 415, "unsupported_media_type");
    assert_eq!(server.db.count("executions").await, 0);
}

fn base64_of(len: usize) -> String {
    use std::fmt::Write;
    // `A` is six zero bits: a valid encoding of `len` zero bytes when len % 3 == 0.
    let len = len.div_ceil(3) * 3;
    let mut s = String::with_capacity(len / 3 * 4);
    for _ in 0..len / 3 {
        s.write_str("AAAA").unwrap();
    }
    s
}

#[tokio::test]
async fn batch_is_all_or_nothing_and_says_which_item_is_wrong() {
    let config = ApiConfig {
        max_batch_body_bytes: 64 << 10,
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(Limits::default(), config).await;
    let tenant = server.tenant("acme").await;
    server.upload(&tenant, "echo", "echo").await;
    let batch = |items: Vec<Value>| Some(json!({ "executions": items }));
    let good = json!({ "kind": "echo" });

    let got = server
        .call(&tenant, Method::POST, "/v1/executions/batch", batch(vec![]))
        .await;
    assert_error("empty batch", &got, 400, "invalid_input");
    let got = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions/batch",
            batch(vec![
                good.clone(),
                json!({ "kind": "echo", "priority": 1e9 as i64 }),
            ]),
        )
        .await;
    assert_error("second item bad", &got, 400, "invalid_input");
    assert!(
        got.1["error"].as_str().unwrap().contains("executions[1]"),
        "{}",
        got.1
    );
    let got = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions/batch",
            batch(vec![
                good.clone(),
                json!({ "kind": "echo", "input_base64": "!" }),
            ]),
        )
        .await;
    assert!(
        got.1["error"].as_str().unwrap().contains("executions[1]"),
        "{}",
        got.1
    );
    let got = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions/batch",
            batch(vec![
                json!({ "kind": "echo", "input": "x".repeat(70 << 10) }),
            ]),
        )
        .await;
    assert_error("batch over the body limit", &got, 413, "payload_too_large");
    let too_many = vec![good; 1_001];
    let config_limit = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions/batch",
            batch(too_many),
        )
        .await;
    assert_error("over max batch", &config_limit, 400, "invalid_input");
    assert_eq!(server.db.count("executions").await, 0);
}

#[tokio::test]
async fn reads_reject_malformed_paths_and_queries() {
    let (server, tenant) = setup().await;
    let id = submit(&server, &tenant, "echo", json!(1)).await;
    let unknown = uuid::Uuid::now_v7();
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            "/v1/executions/not-a-uuid".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            format!("/v1/executions/{unknown}"),
            404,
            "not_found",
        ),
        (
            Method::GET,
            format!("/v1/executions/{unknown}/result"),
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/executions?state=sleeping".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/executions?limit=0".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/executions?limit=abc".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/executions?cursor=zzz".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/executions?tag=novalue".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/executions?colour=red".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            format!("/v1/executions/{id}/attempts/one/frames"),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            format!("/v1/executions/{id}/attempts/1/frames?limit=5000"),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            format!("/v1/executions/{id}/stream?after=x"),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/components/echo/versions/latest".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/components/echo/versions/9".into(),
            404,
            "not_found",
        ),
        (Method::GET, "/v1/components/nope".into(), 404, "not_found"),
        (
            Method::POST,
            "/v1/components/echo/versions/1/purge".into(),
            409,
            "conflict",
        ),
        (
            Method::POST,
            "/v1/components/echo/versions/9/purge".into(),
            404,
            "not_found",
        ),
        (Method::GET, "/v1/nothing-here".into(), 404, "not_found"),
        (
            Method::GET,
            "/v1/events?after=-1".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/events?limit=0".into(),
            400,
            "invalid_input",
        ),
        (
            Method::GET,
            "/v1/events/stream?after=x".into(),
            400,
            "invalid_input",
        ),
    ];
    for (method, path, status, kind) in cases {
        let got = server.call(&tenant, method.clone(), &path, None).await;
        assert_error(&format!("{method} {path}"), &got, status, kind);
    }
}

#[tokio::test]
async fn operations_reject_bad_bodies_and_change_nothing() {
    let (server, tenant) = setup().await;
    let id = submit(&server, &tenant, "echo", json!(1)).await;
    let priority = format!("/v1/executions/{id}/priority");
    let cancel = format!("/v1/executions/{id}/cancel");
    for (what, path, body) in [
        ("priority type", &priority, r#"{"priority": "high"}"#),
        ("priority range", &priority, r#"{"priority": 5000}"#),
        ("priority missing", &priority, "{}"),
        ("cancel malformed", &cancel, "{reason"),
        ("cancel unknown field", &cancel, r#"{"why": "x"}"#),
    ] {
        let method = if path == &priority {
            Method::PUT
        } else {
            Method::POST
        };
        let got = raw(&server, &tenant, method, path, "application/json", body).await;
        assert_error(what, &got, 400, "invalid_input");
    }
    let stored = server
        .db
        .engine
        .get(tenant.id, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!((stored.state.as_str(), stored.priority), ("waiting", 0));
}

#[tokio::test]
async fn uploads_reject_anything_but_a_task_component() {
    let limits = Limits {
        max_component_bytes: 4 << 20,
        ..Limits::default()
    };
    let server = TestServer::start_with(limits, ApiConfig::default()).await;
    let tenant = server.tenant("acme").await;
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "not wasm",
            "/v1/components/x",
            b"hello".to_vec(),
            400,
            "invalid_component",
        ),
        (
            "empty",
            "/v1/components/x",
            Vec::new(),
            400,
            "invalid_component",
        ),
        (
            "core module",
            "/v1/components/x",
            core_module,
            400,
            "invalid_component",
        ),
        (
            "garbage after header",
            "/v1/components/x",
            b"\0asm\x0d\0\x01\0garbage".to_vec(),
            400,
            "invalid_component",
        ),
        (
            "over the limit",
            "/v1/components/x",
            vec![0; 5 << 20],
            413,
            "payload_too_large",
        ),
        (
            "bad kind",
            "/v1/components/a%20b",
            flowfabric_tests::guest("echo"),
            400,
            "invalid_input",
        ),
    ];
    for (what, path, body, status, kind) in cases {
        let got = raw(
            &server,
            &tenant,
            Method::POST,
            path,
            "application/wasm",
            body,
        )
        .await;
        assert_error(what, &got, status, kind);
    }
    assert_eq!(server.db.count("components").await, 0);
    assert_eq!(server.db.count("component_blobs").await, 0);
}

#[tokio::test]
async fn quotas_answer_429_and_admin_input_is_validated() {
    let (server, tenant) = setup().await;
    let admin = |method: Method, path: String, body: Value| {
        let request = server
            .http
            .request(method, server.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body);
        async move { response_parts(request.send().await.unwrap()).await }
    };
    let got = admin(
        Method::PUT,
        format!("/v1/admin/tenants/{}/limits", tenant.id),
        json!({ "max_queued": 2 }),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    submit(&server, &tenant, "echo", json!(1)).await;
    submit(&server, &tenant, "echo", json!(2)).await;
    let got = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions",
            Some(json!({ "kind": "echo" })),
        )
        .await;
    assert_error("over max_queued", &got, 429, "quota_exceeded");
    assert_eq!(got.1["retryable"], true);
    let refused = server
        .http
        .post(server.url("/v1/executions"))
        .bearer_auth(&tenant.token)
        .json(&json!({ "kind": "echo" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1", "when to try again");
    assert_eq!(server.db.count("executions").await, 2);

    let got = admin(
        Method::POST,
        "/v1/admin/tenants".into(),
        json!({ "name": "acme" }),
    )
    .await;
    assert_error("duplicate tenant", &got, 409, "conflict");
    let got = admin(
        Method::POST,
        "/v1/admin/tenants".into(),
        json!({ "name": "a b" }),
    )
    .await;
    assert_error("bad tenant name", &got, 400, "invalid_input");
    let got = admin(
        Method::POST,
        "/v1/admin/tenants".into(),
        json!({ "name": "zero", "limits": { "max_running": 0 } }),
    )
    .await;
    assert_error("zero limit", &got, 400, "invalid_input");
    let got = admin(
        Method::PUT,
        format!("/v1/admin/tenants/{}/limits", uuid::Uuid::now_v7()),
        json!({}),
    )
    .await;
    assert_error("unknown tenant", &got, 404, "not_found");
    assert_eq!(server.db.count("tenants").await, 1, "nothing half-created");
}
