//! Concurrency limits over HTTP, with a real worker pool running a real
//! guest: a key never runs twice at once, sampled from the database while
//! a thousand executions over fifty keys drain; bad input and tenants.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use flowfabric_tests::server::worker_config;

use crate::setup;

#[tokio::test]
async fn a_thousand_executions_over_fifty_keys_never_run_two_of_a_key_at_once() {
    let (mut server, tenant) = setup().await;
    let (status, body) = server
        .call(
            &tenant,
            Method::PUT,
            "/v1/concurrency-limits/kind/testkit",
            Some(json!({ "max_running": 1 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    use base64::Engine as _;
    let input = base64::engine::general_purpose::STANDARD.encode("frames:5");
    for batch in 0..10 {
        let executions: Vec<Value> = (0..100)
            .map(|i| {
                json!({
                    "kind": "testkit",
                    "input_base64": input,
                    // Each key's twenty are submitted together: without the
                    // limit, the pool would take many of one key at once.
                    "concurrency_key": format!("customer-{}", (batch * 100 + i) / 20),
                })
            })
            .collect();
        let (status, body) = server
            .call(
                &tenant,
                Method::POST,
                "/v1/executions/batch",
                Some(json!({ "executions": executions })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    server.start_workers(worker_config(16));

    // Each sample is one statement's snapshot of what runs.
    let (mut samples, mut most_keys) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, active) = server
            .call(
                &tenant,
                Method::GET,
                "/v1/executions?state=active&limit=1000",
                None,
            )
            .await;
        let mut per_key: HashMap<String, usize> = HashMap::new();
        for ex in active["items"].as_array().unwrap() {
            let key = ex["concurrency_key"].as_str().unwrap().to_owned();
            *per_key.entry(key).or_default() += 1;
        }
        samples += 1;
        if let Some((key, n)) = per_key.iter().find(|(_, n)| **n > 1) {
            panic!("{key} ran {n} at once");
        }
        most_keys = most_keys.max(per_key.len());
        let (_, done) = server
            .call(
                &tenant,
                Method::GET,
                "/v1/executions?state=completed&limit=1000",
                None,
            )
            .await;
        if done["items"].as_array().unwrap().len() == 1_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "did not drain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(samples > 10, "only {samples} samples");
    assert!(
        most_keys > 1,
        "keys ran one after another, not side by side ({most_keys})"
    );
}

#[tokio::test]
async fn limits_over_http_refuse_bad_input_and_stay_within_the_tenant() {
    let (server, tenant) = setup().await;
    let put = |path: &str, body: Value| {
        let path = path.to_owned();
        let server = &server;
        let tenant = &tenant;
        async move { server.call(tenant, Method::PUT, &path, Some(body)).await }
    };
    for (path, body, what) in [
        (
            "/v1/concurrency-limits/queue/x",
            json!({"max_running": 1}),
            "expected `kind` or `lane`",
        ),
        (
            "/v1/concurrency-limits/kind/echo",
            json!({"max_running": 0}),
            "max_running",
        ),
        (
            "/v1/concurrency-limits/kind/echo",
            json!({"max_running": 1, "window_ms": 1000}),
            "window_ms",
        ),
        (
            "/v1/concurrency-limits/kind/echo",
            json!({"max_running": 1, "burst": 2}),
            "burst",
        ),
    ] {
        let (status, err) = put(path, body).await;
        assert_eq!(status, 400, "{what}: {err}");
        assert!(err["error"].as_str().unwrap().contains(what), "{err}");
        assert_eq!(err["retryable"], false);
    }
    let (status, set) = put(
        "/v1/concurrency-limits/lane/bulk",
        json!({"max_running": 3, "max_starts": 10}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(
        set,
        json!({"scope": "lane", "name": "bulk", "max_running": 3, "max_starts": 10,
               "window_ms": null})
    );
    let (_, list) = server
        .call(&tenant, Method::GET, "/v1/concurrency-limits", None)
        .await;
    assert_eq!(list["limits"].as_array().unwrap().len(), 1);

    let other = server.tenant("globex").await;
    let (_, theirs) = server
        .call(&other, Method::GET, "/v1/concurrency-limits", None)
        .await;
    assert_eq!(theirs["limits"], json!([]));
    let (status, _) = server
        .call(
            &other,
            Method::DELETE,
            "/v1/concurrency-limits/lane/bulk",
            None,
        )
        .await;
    assert_eq!(status, 404, "another tenant's limit is not found");

    let (status, err) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions",
            Some(json!({"kind": "echo", "concurrency_key": "a\u{7}b"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("concurrency_key"));
    let (status, created) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions",
            Some(json!({"kind": "echo", "concurrency_key": "customer 7"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["execution_id"].as_str().unwrap();
    let (_, shown) = server
        .call(&tenant, Method::GET, &format!("/v1/executions/{id}"), None)
        .await;
    assert_eq!(shown["concurrency_key"], "customer 7");
    assert_eq!(shown["blocking_reason"], "waiting_for_worker");
    let (status, _) = server
        .call(
            &tenant,
            Method::DELETE,
            "/v1/concurrency-limits/lane/bulk",
            None,
        )
        .await;
    assert_eq!(status, 204);
}
