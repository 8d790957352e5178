//! The dashboard's HTTP contract, without a browser: the headers every page
//! carries, the session cookie's attributes, what sign-in refuses, and that
//! `--no-ui` leaves no `/ui` route. (The pages themselves: `tests/browser`.)

use std::time::Duration;

use flowfabric::api::ApiConfig;
use flowfabric::engine::Limits;
use flowfabric_tests::server::TestServer;
use reqwest::redirect::Policy;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_refuses_bad_keys_and_other_sites() {
    let (server, tenant) = crate::setup().await;
    let http = client();
    let login = http.get(server.url("/ui/login")).send().await.unwrap();
    assert_eq!(login.status(), 200);
    let csp = login.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(login.headers()["x-frame-options"], "DENY");
    assert_eq!(login.headers()["x-content-type-options"], "nosniff");

    let bad = http
        .post(server.url("/ui/login"))
        .form(&[("token", "ffk_nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().get("set-cookie").is_none());

    let cross_site = http
        .post(server.url("/ui/login"))
        .header("origin", "http://evil.example")
        .form(&[("token", tenant.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    assert!(cross_site.headers().get("set-cookie").is_none());

    let ok = http
        .post(server.url("/ui/login"))
        .form(&[("token", tenant.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(
        !cookie.contains(&tenant.token),
        "the key is not in the cookie"
    );
    let session = cookie.split(';').next().unwrap();
    let page = http
        .get(server.url("/ui/executions"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(!page.text().await.unwrap().contains(&tenant.token));

    // A tampered cookie is no session.
    let forged = format!("{}x", session);
    let page = http
        .get(server.url("/ui/executions"))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303, "back to sign-in");
    // Nor is the API key itself a session: pages want the cookie.
    let page = http
        .get(server.url("/ui/executions"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
}

#[tokio::test]
async fn without_the_ui_there_is_no_ui_route() {
    let config = ApiConfig {
        ui: None,
        ..ApiConfig::default()
    };
    let server = TestServer::start_with(Limits::default(), config).await;
    let response = client().get(server.url("/ui/login")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

/// The dashboard's live stream tells a tenant of its own new work, and
/// nothing of another tenant's: new work wakes every stream, and what
/// reaches the page must not say when others submit.
#[tokio::test]
async fn the_live_stream_tells_a_tenant_only_of_its_own_work() {
    let (server, mine) = crate::setup().await;
    let theirs = server.tenant("theirs").await;
    server.upload(&theirs, "echo", "echo").await;
    let session = crate::sign_in(&server, &mine).await;
    let live = crate::ui_get(&server, &session, "/ui/live/changes").await;
    assert_eq!(live.status(), 200);
    let mut live = Box::pin(live.bytes_stream());
    crate::submit(&server, &theirs, "echo", serde_json::json!(1)).await;
    assert!(
        !told(&mut live, 1_500).await,
        "told of another tenant's work"
    );
    crate::submit(&server, &mine, "echo", serde_json::json!(2)).await;
    assert!(told(&mut live, 5_000).await, "not told of its own work");
}

/// A change within the stream's coalescing wait (750 ms) after it told the
/// page came after the page's read: the page is told again once the wait
/// ends, not left showing the state it read.
#[tokio::test]
async fn a_change_during_the_live_streams_wait_is_told_after_it() {
    let (server, mine) = crate::setup().await;
    let session = crate::sign_in(&server, &mine).await;
    let live = crate::ui_get(&server, &session, "/ui/live/changes").await;
    let mut live = Box::pin(live.bytes_stream());
    crate::submit(&server, &mine, "echo", serde_json::json!(1)).await;
    assert!(told(&mut live, 5_000).await, "not told of its own work");
    // Claimed at once, inside the wait: the page read it queued.
    let request = flowfabric::model::ClaimRequest {
        worker_id: "test".into(),
        worker_instance: "test".into(),
        lanes: vec!["default".into()],
        capabilities: vec![],
        limit: 1,
        lease_ttl: Duration::from_secs(30),
        exclude_tenants: Vec::new(),
    };
    assert_eq!(server.db.engine.claim(&request).await.unwrap().len(), 1);
    assert!(told(&mut live, 3_000).await, "not told of the claim");
}

/// Whether the stream says `changed` within `wait_ms`.
async fn told(
    live: &mut (impl futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin),
    wait_ms: u64,
) -> bool {
    use futures::StreamExt;
    match tokio::time::timeout(Duration::from_millis(wait_ms), live.next()).await {
        Ok(Some(chunk)) => String::from_utf8_lossy(&chunk.unwrap()).contains("changed"),
        _ => false,
    }
}
