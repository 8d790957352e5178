//! Budgets over HTTP, spent by a real guest through `report-usage`.

use reqwest::Method;
use serde_json::json;

use flowfabric_tests::server::{worker_config, ApiTenant, TestServer};

use crate::{setup, submit_text};

#[tokio::test]
async fn a_guest_spends_against_a_budget_until_its_hard_limit() {
    let (mut server, tenant) = setup().await;
    let (status, budget) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/budgets",
            Some(json!({
                "name": "llm",
                "scope": { "type": "tenant" },
                "dimensions": [{ "dimension": "tokens", "soft_limit": 5, "hard_limit": 10 }],
            })),
        )
        .await;
    assert_eq!(status, 201, "{budget}");
    assert_eq!(budget["on_hard_limit"], "fail");
    let id = budget["budget_id"].as_str().unwrap().to_owned();
    server.start_workers(worker_config(2));

    let within = submit_text(&server, &tenant, "testkit", "spend:tokens:3:2").await;
    let done = server.wait_terminal(&tenant, &within).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        result_text(&server, &tenant, &within).await,
        "ok,dup,soft(6/5),dup"
    );

    let over = submit_text(&server, &tenant, "testkit", "spend:tokens:3:2").await;
    let done = server.wait_terminal(&tenant, &over).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["last_failure"]["class"], "budget_exceeded", "{done}");

    // Each report is counted by what came of it (the counters are the
    // process's, so other tests may have added to them).
    let metrics = server.metrics().await;
    for outcome in ["ok", "soft_breach", "hard_breach", "already_applied"] {
        let series = format!(r#"flowfabric_usage_reports_total{{outcome="{outcome}"}}"#);
        assert!(metrics.contains(&series), "{series} missing from /metrics");
    }

    let path = format!("/v1/budgets/{id}");
    let (_, read) = server.call(&tenant, Method::GET, &path, None).await;
    assert_eq!(
        read["dimensions"][0]["used"], 9,
        "the breaching report was not applied: {read}"
    );
    let (status, reset) = server
        .call(&tenant, Method::POST, &format!("{path}/reset"), None)
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["dimensions"][0]["used"], 0);

    // Corrected by hand, with the reason kept; the trail reads back.
    let usage = format!("{path}/usage");
    let fix = json!({ "dimension": "tokens", "delta": 4, "reason": "billed outside the guest" });
    let (status, fixed) = server
        .call(&tenant, Method::POST, &usage, Some(fix.clone()))
        .await;
    assert_eq!(status, 200, "{fixed}");
    assert_eq!(fixed["dimensions"][0]["used"], 4);
    let (status, trail) = server
        .call(&tenant, Method::GET, &format!("{path}/adjustments"), None)
        .await;
    assert_eq!(status, 200, "{trail}");
    assert_eq!(trail["items"][0]["reason"], "billed outside the guest");
    assert_eq!(trail["items"][0]["used_after"], 4);
    for (body, status_want, kind) in [
        (
            json!({ "dimension": "tokens", "delta": 1 }),
            400,
            "invalid_input",
        ),
        (
            json!({ "dimension": "tokens", "delta": 1, "reason": "" }),
            400,
            "invalid_input",
        ),
        (
            json!({ "dimension": "calls", "delta": 1, "reason": "x" }),
            404,
            "not_found",
        ),
        (
            json!({ "dimension": "tokens", "delta": "1", "reason": "x" }),
            400,
            "invalid_input",
        ),
    ] {
        let (status, err) = server
            .call(&tenant, Method::POST, &usage, Some(body.clone()))
            .await;
        assert_eq!(
            (status, err["kind"].as_str()),
            (status_want, Some(kind)),
            "{body}: {err}"
        );
    }

    let other = server.tenant("other").await;
    let (status, err) = server.call(&other, Method::GET, &path, None).await;
    assert_eq!((status, err["kind"].as_str()), (404, Some("not_found")));
    let (status, _) = server.call(&other, Method::POST, &usage, Some(fix)).await;
    assert_eq!(status, 404, "another tenant cannot correct it");
    let (status, err) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/budgets",
            Some(json!({ "name": "x", "scope": { "type": "tenant" }, "dimensions": [] })),
        )
        .await;
    assert_eq!(
        (status, err["kind"].as_str()),
        (400, Some("invalid_input")),
        "{err}"
    );
    let (_, list) = server.call(&tenant, Method::GET, "/v1/budgets", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Deleted by its tenant only; then it is gone.
    let (status, _) = server.call(&other, Method::DELETE, &path, None).await;
    assert_eq!(status, 404, "another tenant cannot delete it");
    let (status, body) = server.call(&tenant, Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{body}");
    let (status, err) = server.call(&tenant, Method::GET, &path, None).await;
    assert_eq!((status, err["kind"].as_str()), (404, Some("not_found")));
    let (status, _) = server.call(&tenant, Method::DELETE, &path, None).await;
    assert_eq!(status, 404, "deleting it again");
}

async fn result_text(server: &TestServer, tenant: &ApiTenant, id: &str) -> String {
    use base64::Engine as _;
    let path = format!("/v1/executions/{id}/result");
    let (_, result) = server.call(tenant, Method::GET, &path, None).await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(result["result"]["base64"].as_str().expect("a result"))
        .unwrap();
    String::from_utf8(bytes).unwrap()
}
