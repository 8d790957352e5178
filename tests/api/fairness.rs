//! One tenant's backlog does not starve another: with thousands of executions
//! queued by one tenant, a second tenant's handful all start within a bounded
//! number of the first tenant's starts (measured in executions, not seconds,
//! so the bound holds on any machine).

use reqwest::Method;
use serde_json::json;

use flowfabric_tests::server::{response_parts, worker_config, TestServer};

const BIG_BACKLOG: usize = 5_000;
const SMALL: usize = 10;

#[tokio::test]
async fn a_big_backlog_does_not_starve_a_small_tenant() {
    let mut server = TestServer::start().await;
    let big = server.tenant("big").await;
    let small = server.tenant("small").await;
    for tenant in [&big, &small] {
        server.upload(tenant, "echo", "echo").await;
    }
    let batch: Vec<_> = (0..1_000)
        .map(|i| json!({ "kind": "echo", "input": i }))
        .collect();
    for _ in 0..BIG_BACKLOG / 1_000 {
        let (status, body) = server
            .call(
                &big,
                Method::POST,
                "/v1/executions/batch",
                Some(json!({ "executions": batch })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let small_batch: Vec<_> = (0..SMALL)
        .map(|i| json!({ "kind": "echo", "input": i }))
        .collect();
    let (status, _) = server
        .call(
            &small,
            Method::POST,
            "/v1/executions/batch",
            Some(json!({ "executions": small_batch })),
        )
        .await;
    assert_eq!(status, 200);

    // The small tenant's work was submitted last, behind the whole backlog.
    server.start_workers(worker_config(4));
    loop {
        let (_, page) = server
            .call(&small, Method::GET, "/v1/executions?state=completed", None)
            .await;
        if page["items"].as_array().unwrap().len() == SMALL {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Every small execution started; count the big tenant's starts up to the
    // small tenant's last start.
    let last_small_start: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(started_at) FROM executions WHERE tenant_id = $1")
            .bind(small.id)
            .fetch_one(server.db.pg())
            .await
            .unwrap();
    let big_started_before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM executions WHERE tenant_id = $1 AND started_at <= $2",
    )
    .bind(big.id)
    .bind(last_small_start)
    .fetch_one(server.db.pg())
    .await
    .unwrap();
    // Claims alternate tenants (in random order within a turn): about SMALL of
    // the big tenant's run alongside, plus what was in flight. The bound is
    // over four standard deviations above that; first-come-first-served
    // would start the whole backlog first.
    let bound = (SMALL * 4) as i64;
    assert!(
        big_started_before <= bound,
        "{big_started_before} of the big tenant's executions started before the small \
         tenant's last one; the bound is {bound} (backlog {BIG_BACKLOG})"
    );
}

/// A tenant's second upload while its first is still arriving is refused at
/// once (`429`, retryable), before its body is read; another tenant's upload
/// goes through meanwhile, and the first completes when its bytes arrive.
#[tokio::test]
async fn a_tenant_uploads_one_component_at_a_time() {
    let server = TestServer::start().await;
    let slow = server.tenant("slow").await;
    let other = server.tenant("other").await;
    let wasm = flowfabric_tests::guest("echo");
    let (half, rest) = wasm.split_at(wasm.len() / 2);
    let (send, receive) = futures::channel::mpsc::channel::<std::io::Result<Vec<u8>>>(1);
    let mut send = send;
    send.try_send(Ok(half.to_vec())).unwrap();
    let first = server
        .http
        .post(server.url("/v1/components/echo"))
        .bearer_auth(&slow.token)
        .header("content-type", "application/wasm")
        .body(reqwest::Body::wrap_stream(receive))
        .send();
    let first = tokio::spawn(first);

    // Once the first upload holds its tenant's turn (the server's engine is
    // this one), a second is refused without waiting for the first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.db.engine.begin_upload(slow.id).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first never began"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let upload = |tenant: &flowfabric_tests::server::ApiTenant| {
        server
            .http
            .post(server.url("/v1/components/echo"))
            .bearer_auth(&tenant.token)
            .header("content-type", "application/wasm")
            .body(wasm.clone())
            .send()
    };
    let (status, body) = response_parts(upload(&slow).await.unwrap()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["kind"], "quota_exceeded", "{body}");
    assert_eq!(body["retryable"], true, "{body}");
    let (status, body) = response_parts(upload(&other).await.unwrap()).await;
    assert_eq!(status, 201, "another tenant is not held up: {body}");

    send.try_send(Ok(rest.to_vec())).unwrap();
    drop(send);
    let (status, body) = response_parts(first.await.unwrap().unwrap()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = response_parts(upload(&slow).await.unwrap()).await;
    assert_eq!(
        status, 200,
        "the turn came back (same bytes: no new version): {body}"
    );
}
