//! Capability grants with real guests: outbound HTTP against a loopback
//! server the test starts (allowed through an explicit operator range),
//! config values and secrets, and the refusals around them.

use std::time::Duration;

use flowfabric::model::{
    BudgetScope, CapabilityCeiling, ComponentGrant, DimensionLimit, FailureClass, HardLimitAction,
    NewBudget, PublicState,
};
use flowfabric_tests::Store;

use crate::upstream::{
    allow_upstream, grant, http_grant, loopback_ceiling, tenant_with_testkit, Upstream,
};
use crate::{config, text, Env};

#[tokio::test]
async fn an_allowed_call_succeeds_and_is_logged_without_its_path() {
    let env = Env::new().await;
    let up = Upstream::start().await;
    env.db
        .engine
        .set_ceiling(env.tenant, &loopback_ceiling())
        .await
        .unwrap();
    let origin = format!("http://127.0.0.1:{}", up.port);
    grant(
        &env,
        env.tenant,
        "testkit",
        http_grant(std::slice::from_ref(&origin)),
    )
    .await;
    let pool = env.pool(config(2));

    let id = env
        .submit(
            "testkit",
            &format!("http:POST:{}", up.url("/echo?token=abc")),
            0,
        )
        .await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(text(&ex.result), "status=200 bytes=4 body=ping");
    assert_eq!(up.hits(), 1);
    let frames = env.first_attempt_frames(id, 100).await;
    let http: Vec<serde_json::Value> = frames
        .iter()
        .filter(|f| f.frame_type == "http")
        .map(|f| serde_json::from_slice(&f.payload).unwrap())
        .collect();
    assert_eq!(http.len(), 1, "{frames:?}");
    assert_eq!(http[0]["method"], "POST");
    assert_eq!(http[0]["origin"], origin.as_str());
    assert_eq!(http[0]["status"], 200);
    assert_eq!(http[0]["bytes_in"], 4);
    assert_eq!(http[0]["bytes_out"], 4, "the guest sends `ping`");
    let logged = String::from_utf8_lossy(
        &frames
            .iter()
            .flat_map(|f| f.payload.clone())
            .collect::<Vec<_>>(),
    )
    .into_owned();
    assert!(
        !logged.contains("token=abc"),
        "the path is never logged: {logged}"
    );
    pool.shutdown().await;
}

#[tokio::test]
async fn refused_calls_get_typed_errors_and_send_nothing() {
    let env = Env::new().await;
    let up = Upstream::start().await;
    let pool = env.pool(config(2));

    // No grant at all: nothing is allowed.
    let denied = env
        .completed_text(&format!("http:GET:{}", up.url("/hello")), 0)
        .await;
    assert_eq!(denied, "error=HttpRequestDenied");

    allow_upstream(&env, &up).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the pool's grant cache

    // A host outside the grant (same server, other name).
    let other = env
        .completed_text(&format!("http:GET:http://localhost:{}/hello", up.port), 0)
        .await;
    assert_eq!(other, "error=HttpRequestDenied");
    // A redirect to a host the grant does not list is refused when followed.
    let to = format!("http://localhost:{}/hello", up.port);
    let redirect = up.url(&format!("/redirect?to={to}"));
    let followed = env
        .completed_text(&format!("http-follow:{redirect}"), 0)
        .await;
    assert_eq!(followed, "error=HttpRequestDenied");
    assert_eq!(up.hits(), 1, "only the redirect itself reached the server");

    // Without the operator's range, loopback and private addresses are
    // refused, by literal address or by a name resolving to one.
    let no_range = CapabilityCeiling {
        http_allow: vec!["*://*:*".into()],
        ..Default::default()
    };
    env.db
        .engine
        .set_ceiling(env.tenant, &no_range)
        .await
        .unwrap();
    grant(
        &env,
        env.tenant,
        "testkit",
        http_grant(&[
            format!("http://127.0.0.1:{}", up.port),
            format!("http://localhost:{}", up.port),
            "http://10.255.255.1".into(),
            "http://169.254.169.254".into(),
        ]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for url in [
        up.url("/hello"),
        format!("http://localhost:{}/hello", up.port),
        "http://10.255.255.1/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
    ] {
        let refused = env.completed_text(&format!("http:GET:{url}"), 0).await;
        assert_eq!(refused, "error=DestinationIpProhibited", "{url}");
    }
    assert_eq!(up.hits(), 1, "nothing more reached the server");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_slow_server_times_out_and_a_big_response_is_cut_off() {
    let env = Env::new().await;
    let up = Upstream::start().await;
    env.db
        .engine
        .set_ceiling(env.tenant, &loopback_ceiling())
        .await
        .unwrap();
    let grant_spec = ComponentGrant {
        http: vec![format!("http://127.0.0.1:{}", up.port)],
        http_timeout_ms: Some(300),
        http_max_response_bytes: Some(64 << 10),
        ..Default::default()
    };
    grant(&env, env.tenant, "testkit", grant_spec).await;
    let pool = env.pool(config(2));
    let slow = env
        .completed_text(&format!("http:GET:{}", up.url("/slow")), 0)
        .await;
    assert_eq!(slow, "error=ConnectionReadTimeout");
    let big = env
        .completed_text(&format!("http:GET:{}", up.url("/big")), 0)
        .await;
    assert!(big.starts_with("error=HttpResponseBodySize"), "{big}");
    pool.shutdown().await;
}

#[tokio::test]
async fn a_hard_budget_on_http_requests_stops_further_calls() {
    let env = Env::new().await;
    let up = Upstream::start().await;
    allow_upstream(&env, &up).await;
    let budget = NewBudget {
        name: "calls".into(),
        scope: BudgetScope::Tenant,
        dimensions: vec![DimensionLimit {
            dimension: "http_requests".into(),
            soft_limit: None,
            hard_limit: Some(2),
        }],
        on_hard_limit: HardLimitAction::Fail,
        reset_interval_ms: None,
    };
    env.db
        .engine
        .create_budget(env.tenant, budget)
        .await
        .unwrap();
    let pool = env.pool(config(2));
    let id = env
        .submit("testkit", &format!("http-n:5:{}", up.url("/hello")), 0)
        .await;
    let ex = env.wait_terminal(id).await;
    assert_eq!(ex.state, PublicState::Failed, "{:?}", ex.result);
    assert_eq!(ex.last_failure.unwrap().class, FailureClass::BudgetExceeded);
    assert_eq!(up.hits(), 2, "the third call was never sent");
    pool.shutdown().await;
}

async fn config_and_grants_stay_with_their_tenant(store: Store) {
    let env = Env::on(store).await;
    let up = Upstream::start().await;
    // The other tenant may reach the server and reads a secret.
    let origin = format!("http://127.0.0.1:{}", up.port);
    let theirs = ComponentGrant {
        http: vec![origin.clone()],
        config: vec!["API_TOKEN".into()],
        ..Default::default()
    };
    let other = tenant_with_testkit(&env, "other", theirs).await;
    env.db
        .engine
        .put_config(other, "API_TOKEN", "their-secret-0042", true)
        .await
        .unwrap();
    // Ours has a ceiling that allows config but grants nothing.
    env.db
        .engine
        .set_ceiling(env.tenant, &loopback_ceiling())
        .await
        .unwrap();
    let pool = env.pool(config(2));
    assert_eq!(env.completed_text("config:API_TOKEN", 0).await, "absent");
    assert_eq!(
        env.completed_text(&format!("http:GET:{}", up.url("/hello")), 0)
            .await,
        "error=HttpRequestDenied"
    );
    // Our own secret of the same name is ours alone, and only for a granted kind.
    env.db
        .engine
        .put_config(env.tenant, "API_TOKEN", "our-secret-0042", true)
        .await
        .unwrap();
    assert_eq!(
        env.completed_text("config:API_TOKEN", 0).await,
        "absent",
        "not granted"
    );
    let ours = ComponentGrant {
        config: vec!["API_TOKEN".into()],
        ..Default::default()
    };
    grant(&env, env.tenant, "testkit", ours).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        env.completed_text("config:API_TOKEN", 0).await,
        "our-secret-0042"
    );
    assert_eq!(env.completed_text("config-names", 0).await, "API_TOKEN");
    // Listing never shows a secret's value.
    let listed = env.db.engine.list_config(env.tenant).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].value, None);
    pool.shutdown().await;
}

on_both_backends!(config_and_grants_stay_with_their_tenant);
