//! The dashboard's HTTP contract, without a browser: the headers every page
//! carries, the session cookie's attributes, what sign-in refuses, and that
//! `--no-ui` leaves no `/ui` route. (The pages themselves: `tests/browser`.)

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
