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
    let (mut send, first) = slow_post(&server, &slow, "/v1/components/echo", "application/wasm");
    send.try_send(Ok(half.to_vec())).unwrap();

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

/// A tenant's requests past its share wait for one of its own to finish,
/// while another tenant's requests go straight through.
#[tokio::test]
async fn a_tenants_flood_waits_for_its_own_turns() {
    let config = flowfabric::api::ApiConfig {
        tenant_requests_in_flight: 2,
        ..Default::default()
    };
    let server = TestServer::start_with(Default::default(), config).await;
    let flood = server.tenant("flood").await;
    let other = server.tenant("other").await;
    server.upload(&flood, "echo", "echo").await;
    // Streams it follows do not keep turns: with two open, a request passes.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let response = server
            .http
            .get(server.url("/v1/events/stream"))
            .bearer_auth(&flood.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let (status, _) = server
        .call(&flood, reqwest::Method::GET, "/v1/executions", None)
        .await;
    assert_eq!(status, 200, "two open streams hold no turn");
    drop(streams);
    // Two creates whose bodies arrive slowly hold both of the tenant's turns.
    let mut senders = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (mut send, request) = slow_post(&server, &flood, "/v1/executions", "application/json");
        send.try_send(Ok(br#"{"kind": "echo", "#.to_vec())).unwrap();
        senders.push(send);
        slow.push(request);
    }
    let list = |tenant: &flowfabric_tests::server::ApiTenant| {
        server
            .http
            .get(server.url("/v1/executions"))
            .bearer_auth(&tenant.token)
            .timeout(std::time::Duration::from_millis(300))
            .send()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while list(&flood).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow creates never held their turns"
        );
    }
    let (status, body) = response_parts(list(&other).await.expect("not held up")).await;
    assert_eq!(status, 200, "{body}");

    // Once the slow ones finish, the tenant's next request goes through.
    for mut send in senders {
        send.try_send(Ok(br#""input": 1}"#.to_vec())).unwrap();
    }
    for request in slow {
        let (status, body) = response_parts(request.await.unwrap().unwrap()).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = response_parts(list(&flood).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

/// A tenant keeps at most so many live streams open (each reads again at
/// every wake-up): one more is refused at once with a retryable 429, another
/// tenant's opens, and a stream the client closes frees its place.
#[tokio::test]
async fn a_tenant_has_so_many_streams_open() {
    let config = flowfabric::api::ApiConfig {
        tenant_streams: 2,
        ..Default::default()
    };
    let server = TestServer::start_with(Default::default(), config).await;
    let many = server.tenant("many").await;
    let other = server.tenant("other").await;
    server.upload(&many, "echo", "echo").await;
    let id = crate::submit(&server, &many, "echo", json!(1)).await;
    let open = |tenant: &flowfabric_tests::server::ApiTenant, path: String| {
        server
            .http
            .get(server.url(&path))
            .bearer_auth(&tenant.token)
            .send()
    };
    let events = open(&many, "/v1/events/stream".into()).await.unwrap();
    assert_eq!(events.status(), 200);
    let follow = open(&many, format!("/v1/executions/{id}/stream"))
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let refused = open(&many, "/v1/events/leases/stream".into())
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let (_, body) = response_parts(refused).await;
    assert_eq!(body["kind"], "quota_exceeded", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("open streams"),
        "{body}"
    );
    // The dashboard's live routes count among them, and say so as a page.
    let session = crate::sign_in(&server, &many).await;
    let page = crate::ui_get(&server, &session, "/ui/live/changes").await;
    assert_eq!(page.status(), 429);
    assert_eq!(page.headers()["retry-after"], "1");
    assert!(page.text().await.unwrap().contains("open streams"));
    let theirs = open(&other, "/v1/events/stream".into()).await.unwrap();
    assert_eq!(theirs.status(), 200, "another tenant's streams are its own");
    let (status, _) = server
        .call(&many, Method::GET, "/v1/executions", None)
        .await;
    assert_eq!(status, 200, "streams take no request turns");

    drop(events);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let again = open(&many, "/v1/events/stream".into()).await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "a closed stream never gave its place back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(follow);
}

#[tokio::test]
async fn dashboard_pages_wait_for_their_tenants_turns() {
    let config = flowfabric::api::ApiConfig {
        tenant_requests_in_flight: 1,
        ..Default::default()
    };
    let server = TestServer::start_with(Default::default(), config).await;
    let flood = server.tenant("flood").await;
    let other = server.tenant("other").await;
    server.upload(&flood, "echo", "echo").await;
    let id = crate::submit(&server, &flood, "echo", json!(1)).await;
    let flood_session = crate::sign_in(&server, &flood).await;
    let other_session = crate::sign_in(&server, &other).await;
    let page = |session: &str, path: &str| {
        server
            .http
            .get(server.url(path))
            .header("cookie", session)
            .timeout(std::time::Duration::from_millis(300))
            .send()
    };
    // A page's execution stream uses the turn its page request holds: with
    // one turn a tenant, it must not wait for a second.
    let stream = page(&flood_session, &format!("/ui/executions/{id}/stream"))
        .await
        .expect("the stream starts with the page's own turn");
    assert_eq!(stream.status(), 200);
    drop(stream);

    // A create whose body arrives slowly holds the tenant's one turn.
    let (mut send, slow) = slow_post(&server, &flood, "/v1/executions", "application/json");
    send.try_send(Ok(br#"{"kind": "echo", "#.to_vec())).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while page(&flood_session, "/ui/executions").await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the tenant's pages never waited for its turn"
        );
    }
    let (status, body) = response_parts(
        page(&other_session, "/ui/executions")
            .await
            .expect("another tenant's page is not held up"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    send.try_send(Ok(br#""input": 2}"#.to_vec())).unwrap();
    drop(send); // The body ends.
    let (status, body) = response_parts(slow.await.unwrap().unwrap()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) =
        response_parts(page(&flood_session, "/ui/executions").await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

type Chunks = futures::channel::mpsc::Sender<std::io::Result<Vec<u8>>>;

/// A POST whose body arrives as the test sends it, chunk by chunk; it ends
/// when the sender is dropped.
fn slow_post(
    server: &TestServer,
    tenant: &flowfabric_tests::server::ApiTenant,
    path: &str,
    content_type: &str,
) -> (
    Chunks,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (send, receive) = futures::channel::mpsc::channel(1);
    let request = server
        .http
        .post(server.url(path))
        .bearer_auth(&tenant.token)
        .header("content-type", content_type)
        .body(reqwest::Body::wrap_stream(receive))
        .send();
    (send, tokio::spawn(request))
}
