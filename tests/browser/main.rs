//! The dashboard in a real browser: headless Chromium (through chromedriver)
//! against a real server, a real database and real guests. Each scenario
//! signs in as a user would, clicks, and reads what the page shows.
//!
//! The main pages are saved as screenshots under `target/screenshots/`
//! (current copies are in `docs/screenshots/`).

#[macro_use]
extern crate flowfabric_tests;

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use flowfabric_tests::server::{worker_config, ApiTenant, TestServer, ADMIN_TOKEN};
use flowfabric_tests::webdriver::Browser;
use flowfabric_tests::Store;

/// A server with tenant `acme` (`echo` and `testkit` uploaded), workers off.
async fn setup_on(store: Store) -> (TestServer, ApiTenant) {
    let server = TestServer::start_on(store).await;
    let tenant = server.tenant("acme").await;
    server.upload(&tenant, "echo", "echo").await;
    server.upload(&tenant, "testkit", "testkit").await;
    (server, tenant)
}

async fn submit_text(server: &TestServer, tenant: &ApiTenant, kind: &str, text: &str) -> String {
    let input = base64::engine::general_purpose::STANDARD.encode(text);
    let (status, body) = server
        .call(
            tenant,
            Method::POST,
            "/v1/executions",
            Some(json!({ "kind": kind, "input_base64": input })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["execution_id"].as_str().unwrap().to_owned()
}

async fn state_of(server: &TestServer, tenant: &ApiTenant, id: &str) -> String {
    let (_, body) = server
        .call(tenant, Method::GET, &format!("/v1/executions/{id}"), None)
        .await;
    body["state"].as_str().unwrap_or_default().to_owned()
}

async fn wait_state(server: &TestServer, tenant: &ApiTenant, id: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while state_of(server, tenant, id).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sign in through the form; returns once the first page has loaded.
async fn sign_in(browser: &Browser, server: &TestServer, token: &str) {
    browser.goto(&server.url("/ui/login")).await;
    let field = browser.find("#token").await;
    browser.type_into(&field, token).await;
    browser.click(&browser.find("#sign-in").await).await;
    browser.find("header.top").await;
}

/// Save the current page as `target/screenshots/NAME.png`.
async fn screenshot(browser: &Browser, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    std::fs::write(dir.join(format!("{name}.png")), browser.screenshot().await)
        .expect("write screenshot");
}

/// A mark on the page's window object: gone after any reload.
async fn mark_page(browser: &Browser) {
    browser.execute("window.__ffMark = 42;", vec![]).await;
}

async fn page_is_marked(browser: &Browser) -> bool {
    browser
        .execute("return window.__ffMark === 42;", vec![])
        .await
        == true
}

async fn a_key_signs_in_a_bad_one_is_refused_and_the_cookie_is_out_of_reach(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/ui/executions")).await;
    browser.find("#token").await;
    assert!(
        browser.current_url().await.ends_with("/ui/login"),
        "signed out, a page sends you to sign in"
    );
    screenshot(&browser, "sign-in").await;

    let field = browser.find("#token").await;
    browser.type_into(&field, "ffk_0123_not-a-key").await;
    browser.click(&browser.find("#sign-in").await).await;
    let error = browser.find("#login-error").await;
    assert!(browser.text(&error).await.contains("not valid"));
    assert!(browser.find_all("header.top").await.is_empty(), "not in");

    sign_in(&browser, &server, &tenant.token).await;
    let h1 = browser.find("h1").await;
    assert_eq!(browser.text(&h1).await, "Overview");
    let cookie = browser.execute("return document.cookie;", vec![]).await;
    assert_eq!(cookie, "", "the session cookie is HttpOnly");
    assert!(!browser.source().await.contains(&tenant.token));
    assert!(!browser.current_url().await.contains("ffk_"));
    browser.quit().await;
}

async fn the_list_shows_what_the_api_created_and_a_click_shows_its_attempts(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(2));
    let mut ids = Vec::new();
    for word in ["alpha", "beta", "gamma"] {
        ids.push(submit_text(&server, &tenant, "testkit", &format!("echo:{word}")).await);
    }
    let failing = submit_text(&server, &tenant, "testkit", "permanent").await;
    for id in &ids {
        wait_state(&server, &tenant, id, "completed").await;
    }
    wait_state(&server, &tenant, &failing, "failed").await;

    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    screenshot(&browser, "overview").await;
    browser.goto(&server.url("/ui/executions")).await;
    for id in ids.iter().chain([&failing]) {
        browser.find(&format!("tr[data-id=\"{id}\"]")).await;
    }
    screenshot(&browser, "executions").await;

    let link = browser.find(&format!("tr[data-id=\"{}\"] a", ids[1])).await;
    browser.click(&link).await;
    browser
        .wait_for("#attempts tbody td", |t| t == "initial")
        .await;
    let states: Vec<String> = {
        let mut out = Vec::new();
        for e in browser.find_all("#attempts .state").await {
            out.push(browser.text(&e).await);
        }
        out
    };
    assert_eq!(states, vec!["succeeded"]);
    assert_eq!(browser.text(&browser.find("#result").await).await, "beta");
    // Its lease history: one lease, drawn released; its events listed.
    assert_eq!(
        browser
            .find_all("#lease-timeline rect.lease-released")
            .await
            .len(),
        1
    );
    let kinds = browser
        .execute(
            "return [...document.querySelectorAll('#lease-events tbody td:nth-child(4)')]\
             .map(td => td.textContent);",
            vec![],
        )
        .await;
    assert_eq!(kinds, serde_json::json!(["acquired", "released"]));

    browser
        .goto(&server.url(&format!("/ui/executions/{failing}")))
        .await;
    let failure = browser.find("#failure").await;
    assert!(browser.text(&failure).await.contains("can never succeed"));
    // Filtering by state narrows the list.
    browser
        .goto(&server.url("/ui/executions?state=failed"))
        .await;
    browser.find(&format!("tr[data-id=\"{failing}\"]")).await;
    assert_eq!(browser.find_all("#rows tr[data-id]").await.len(), 1);
    browser.quit().await;
}

async fn a_suspended_execution_shows_what_it_waits_for(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(1));
    let id = submit_text(
        &server,
        &tenant,
        "testkit",
        "wait-named:approval:approve,reject:waiting_for_approval",
    )
    .await;
    wait_state(&server, &tenant, &id, "suspended").await;
    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    browser
        .goto(&server.url(&format!("/ui/executions/{id}")))
        .await;
    let waits = browser
        .wait_for("#suspension", |t| t.contains("waiting_for_approval"))
        .await;
    let text = browser.text(&waits).await;
    assert_eq!(
        text,
        "waitpoint approval · signals named approve or reject · reason waiting_for_approval"
    );
    assert_eq!(
        browser.text(&browser.find("#reason").await).await,
        "waiting_for_signal"
    );
}

async fn frames_arrive_live_and_cancel_from_the_page_cancels(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    // A guest that drips frames for a minute (so a loaded machine still
    // cancels it mid-run), under a sandbox timeout longer than that.
    let mut config = worker_config(2);
    config.sandbox.timeout = Duration::from_secs(90);
    server.start_workers(config);
    let id = submit_text(&server, &tenant, "testkit", "drip:600:100").await;
    wait_state(&server, &tenant, &id, "active").await;

    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    browser
        .goto(&server.url(&format!("/ui/executions/{id}")))
        .await;
    let shown = browser.find_all("#frames li").await.len();
    mark_page(&browser).await;
    // More frames than the page was rendered with, with no reload.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while browser.find_all("#frames li").await.len() < shown + 3 {
        assert!(tokio::time::Instant::now() < deadline, "no live frames");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        page_is_marked(&browser).await,
        "frames came without a reload"
    );
    browser.find("#frames li pre").await;
    screenshot(&browser, "execution").await;

    browser.click(&browser.find("#cancel").await).await;
    browser.wait_for("#state", |t| t == "cancelled").await;
    assert_eq!(state_of(&server, &tenant, &id).await, "cancelled");
    browser.quit().await;
}

async fn new_executions_appear_in_the_list_without_a_reload(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    browser.goto(&server.url("/ui/executions")).await;
    // The page's live stream is connected before the change.
    browser.find("#rows[data-live=\"open\"]").await;
    mark_page(&browser).await;
    let id = submit_text(&server, &tenant, "echo", "fresh").await;
    browser.find(&format!("tr[data-id=\"{id}\"]")).await;
    assert!(
        page_is_marked(&browser).await,
        "the row came without a reload"
    );
    browser.quit().await;
}

const HOSTILE: &str = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">";

async fn a_frame_holding_script_shows_as_text_and_runs_nothing(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    let id = submit_text(&server, &tenant, "testkit", &format!("say:{HOSTILE}")).await;
    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    // Open the page while it waits, so the frame arrives through the live
    // stream; then reload for the server-rendered copy.
    browser
        .goto(&server.url(&format!("/ui/executions/{id}")))
        .await;
    browser.find("#frames").await;
    server.start_workers(worker_config(1));
    browser.wait_for("#frames li pre", |t| t == HOSTILE).await;
    for _ in 0..2 {
        let pwned = browser
            .execute("return window.__pwned === undefined;", vec![])
            .await;
        assert_eq!(pwned, true, "nothing of the frame ran");
        let markup = browser
            .execute(
                "return document.querySelectorAll('#frames script, #frames img, #result script').length;",
                vec![],
            )
            .await;
        assert_eq!(markup, 0, "the frame is text, not elements");
        wait_state(&server, &tenant, &id, "completed").await;
        browser
            .goto(&server.url(&format!("/ui/executions/{id}")))
            .await;
        browser.wait_for("#frames li pre", |t| t == HOSTILE).await;
        assert_eq!(browser.text(&browser.find("#result").await).await, HOSTILE);
    }
    browser.quit().await;
}

async fn a_flows_graph_shows_its_failed_and_skipped_members(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(2));
    let member = |key: &str, command: &str| {
        json!({ "key": key, "execution": { "kind": "testkit",
            "input_base64": base64::engine::general_purpose::STANDARD.encode(command) } })
    };
    let (status, flow) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "nightly <report>",
                "members": [member("fetch", "echo:ok"), member("parse", "permanent"),
                            member("load", "echo:x"), member("notify", "echo:y")],
                "edges": [{ "from": "fetch", "to": "parse" }, { "from": "parse", "to": "load" },
                          { "from": "load", "to": "notify" }],
            })),
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let notify = flow["members"]["notify"].as_str().unwrap();
    wait_state(&server, &tenant, notify, "skipped").await;
    let flow_id = flow["flow_id"].as_str().unwrap();

    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    browser.goto(&server.url("/ui/flows")).await;
    browser
        .wait_for("#flows a", |t| t == "nightly <report>")
        .await;
    browser
        .goto(&server.url(&format!("/ui/flows/{flow_id}")))
        .await;
    let state = |key: &'static str| {
        let browser = &browser;
        async move {
            let node = browser
                .find(&format!("#flow-graph g[data-key=\"{key}\"]"))
                .await;
            browser
                .attribute(&node, "data-state")
                .await
                .unwrap_or_default()
        }
    };
    assert_eq!(state("fetch").await, "completed");
    assert_eq!(state("parse").await, "failed");
    assert_eq!(state("load").await, "skipped");
    assert_eq!(state("notify").await, "skipped");
    let edge = browser
        .find("#flow-graph line[data-from=\"parse\"][data-to=\"load\"]")
        .await;
    let class = browser.attribute(&edge, "class").await.unwrap_or_default();
    assert!(class.contains("edge-unsatisfied"), "{class}");
    screenshot(&browser, "flow").await;
    browser.quit().await;
}

async fn an_action_without_the_csrf_token_is_refused(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let id = submit_text(&server, &tenant, "echo", "keep me").await;
    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    browser
        .goto(&server.url(&format!("/ui/executions/{id}")))
        .await;
    browser.find("#cancel").await;
    // The page's own session cookie goes along; only the token is missing
    // (then wrong).
    let post = "const [url, body, done] = arguments;
        fetch(url, { method: 'POST', credentials: 'same-origin',
            headers: { 'content-type': 'application/x-www-form-urlencoded' }, body })
          .then(r => done(r.status));";
    let url = format!("/ui/executions/{id}/cancel");
    for body in ["", "csrf=", "csrf=00112233445566778899aabbccddeeff"] {
        let status = browser
            .execute_async(post, vec![json!(url), json!(body)])
            .await;
        assert_eq!(status, 403, "body {body:?}");
    }
    assert_eq!(state_of(&server, &tenant, &id).await, "waiting");
    // The same for a budget's Delete and a version's Deprecate and Purge.
    let (_, budget) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/budgets",
            Some(json!({ "name": "kept", "scope": { "type": "tenant" },
                "dimensions": [{ "dimension": "tokens", "hard_limit": 1 }] })),
        )
        .await;
    let budget_id = budget["budget_id"].as_str().unwrap();
    for url in [
        format!("/ui/budgets/{budget_id}/delete"),
        "/ui/components/echo/versions/1/deprecate".to_owned(),
        "/ui/components/echo/versions/1/purge".to_owned(),
    ] {
        let status = browser
            .execute_async(post, vec![json!(url), json!("csrf=")])
            .await;
        assert_eq!(status, 403, "{url}");
    }
    let (status, _) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/budgets/{budget_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "the budget is kept");
    let (_, echo) = server
        .call(&tenant, Method::GET, "/v1/components/echo/versions/1", None)
        .await;
    assert_eq!(echo["deprecated"], false, "{echo}");
    browser.quit().await;
}

async fn another_tenants_execution_is_not_found(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let theirs = submit_text(&server, &tenant, "echo", "private").await;
    let other = server.tenant("globex").await;
    let browser = Browser::start().await;
    sign_in(&browser, &server, &other.token).await;
    browser
        .goto(&server.url(&format!("/ui/executions/{theirs}")))
        .await;
    let message = browser.find("#error-message").await;
    assert!(browser.text(&message).await.contains("not found"));
    assert_eq!(browser.text(&browser.find("h1").await).await, "404");
    browser.goto(&server.url("/ui/executions")).await;
    browser.find("#rows").await;
    assert!(!browser.source().await.contains(&theirs));
    browser.quit().await;
}

async fn the_operator_rotates_a_key_and_its_sessions_end(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let tenant_browser = Browser::start().await;
    sign_in(&tenant_browser, &server, &tenant.token).await;

    let browser = Browser::start().await;
    sign_in(&browser, &server, ADMIN_TOKEN).await;
    let link = browser.wait_for("#tenants a", |t| t == "acme").await;
    screenshot(&browser, "tenants").await;
    browser.click(&link).await;
    let rotate = browser.find("#keys button").await;
    assert_eq!(browser.text(&rotate).await, "Rotate");
    browser.click(&rotate).await;
    let token = browser.find("#new-token pre").await;
    let new_token = browser.text(&token).await;
    assert!(new_token.starts_with("ffk_"), "{new_token}");

    // The old key is revoked: its browser session ends with it.
    tenant_browser.goto(&server.url("/ui/executions")).await;
    tenant_browser.find("#token").await;
    assert!(tenant_browser.current_url().await.ends_with("/ui/login"));
    let (status, _) = server
        .call(&tenant, Method::GET, "/v1/executions", None)
        .await;
    assert_eq!(status, 401);
    sign_in(&tenant_browser, &server, &new_token).await;
    assert_eq!(
        tenant_browser.text(&tenant_browser.find("h1").await).await,
        "Overview"
    );
    // A tenant's session opens no operator page.
    tenant_browser.goto(&server.url("/ui/admin/tenants")).await;
    tenant_browser.find("#token").await;
    tenant_browser.quit().await;
    browser.quit().await;
}

async fn the_other_pages_render(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let (status, body) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/budgets",
            Some(json!({ "name": "tokens", "scope": { "type": "tenant" },
                "dimensions": [{ "dimension": "tokens", "hard_limit": 1000 }] })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let browser = Browser::start().await;
    sign_in(&browser, &server, &tenant.token).await;
    browser.goto(&server.url("/ui/components")).await;
    browser.wait_for("#components td", |t| t == "testkit").await;
    // Upload a version through the page's form (the file from disk).
    let wasm = std::env::temp_dir().join(format!("ff-upload-{}.wasm", uuid::Uuid::new_v4()));
    std::fs::write(&wasm, flowfabric_tests::guest("echo")).unwrap();
    let kind = browser.find("#upload-kind").await;
    browser.type_into(&kind, "uploaded").await;
    let file = browser.find("#upload-file").await;
    browser.type_into(&file, &wasm.display().to_string()).await;
    browser
        .click(&browser.find("#upload-form button").await)
        .await;
    browser
        .wait_for("#components td", |t| t == "uploaded")
        .await;
    std::fs::remove_file(&wasm).ok();
    let (status, versions) = server
        .call(&tenant, Method::GET, "/v1/components/uploaded", None)
        .await;
    assert_eq!(status, 200, "{versions}");
    screenshot(&browser, "components").await;
    // A deprecated version that is not its kind's newest has a Purge button.
    server.upload(&tenant, "old", "echo").await;
    server.upload(&tenant, "old", "testkit").await;
    let (status, body) = server
        .call(
            &tenant,
            Method::DELETE,
            "/v1/components/old/versions/1",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    browser.goto(&server.url("/ui/components")).await;
    let purge = browser
        .wait_for("#components button", |t| t == "Purge")
        .await;
    browser.click(&purge).await;
    browser
        .wait_for("#components td", |t| t == "uploaded")
        .await;
    let (status, _) = server
        .call(&tenant, Method::GET, "/v1/components/old/versions/1", None)
        .await;
    assert_eq!(status, 404, "purged");
    assert!(!browser.source().await.contains(">Purge<"));

    browser.goto(&server.url("/ui/budgets")).await;
    browser.wait_for("#budgets td", |t| t == "tokens").await;
    let delete = browser.wait_for("#budgets button", |t| t == "Delete").await;
    browser.click(&delete).await;
    browser
        .wait_for("#budgets td", |t| t == "No budgets.")
        .await;
    let (_, budgets) = server.call(&tenant, Method::GET, "/v1/budgets", None).await;
    assert_eq!(budgets, json!([]));
    browser.goto(&server.url("/ui/schedules")).await;
    browser.find("#schedules").await;
    let value: Value = browser.execute("return 1 + 1;", vec![]).await;
    assert_eq!(value, 2);
    browser.quit().await;
}

on_both_backends!(
    a_key_signs_in_a_bad_one_is_refused_and_the_cookie_is_out_of_reach,
    the_list_shows_what_the_api_created_and_a_click_shows_its_attempts,
    frames_arrive_live_and_cancel_from_the_page_cancels,
);

mod postgres_only {
    use super::*;

    #[tokio::test]
    async fn new_executions_appear_in_the_list_without_a_reload() {
        super::new_executions_appear_in_the_list_without_a_reload(Store::Postgres).await
    }

    #[tokio::test]
    async fn a_frame_holding_script_shows_as_text_and_runs_nothing() {
        super::a_frame_holding_script_shows_as_text_and_runs_nothing(Store::Postgres).await
    }

    #[tokio::test]
    async fn a_flows_graph_shows_its_failed_and_skipped_members() {
        super::a_flows_graph_shows_its_failed_and_skipped_members(Store::Postgres).await
    }

    #[tokio::test]
    async fn an_action_without_the_csrf_token_is_refused() {
        super::an_action_without_the_csrf_token_is_refused(Store::Postgres).await
    }

    #[tokio::test]
    async fn another_tenants_execution_is_not_found() {
        super::another_tenants_execution_is_not_found(Store::Postgres).await
    }

    #[tokio::test]
    async fn the_operator_rotates_a_key_and_its_sessions_end() {
        super::the_operator_rotates_a_key_and_its_sessions_end(Store::Postgres).await
    }

    #[tokio::test]
    async fn the_other_pages_render() {
        super::the_other_pages_render(Store::Postgres).await
    }

    #[tokio::test]
    async fn a_suspended_execution_shows_what_it_waits_for() {
        super::a_suspended_execution_shows_what_it_waits_for(Store::Postgres).await
    }
}
