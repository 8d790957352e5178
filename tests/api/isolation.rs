//! Tenancy is enforced: another tenant's ids answer 404 on every route, lists
//! show nothing of theirs, and nothing of theirs changes.

use reqwest::Method;
use serde_json::{json, Value};

use flowfabric_tests::server::ApiTenant;

use crate::{setup, submit};

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route() {
    let (server, owner) = setup().await;
    let intruder = server.tenant("intruder").await;
    let id = submit(&server, &owner, "echo", json!("secret")).await;
    let before = server
        .db
        .engine
        .get(owner.id, id.parse().unwrap())
        .await
        .unwrap();

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/executions/{id}"), None),
        (Method::GET, format!("/v1/executions/{id}/result"), None),
        (Method::GET, format!("/v1/executions/{id}/attempts"), None),
        (Method::GET, format!("/v1/executions/{id}/leases"), None),
        (Method::GET, format!("/v1/executions/{id}/stream"), None),
        (
            Method::GET,
            format!("/v1/executions/{id}/attempts/1/frames"),
            None,
        ),
        (Method::POST, format!("/v1/executions/{id}/cancel"), None),
        (Method::POST, format!("/v1/executions/{id}/replay"), None),
        (
            Method::POST,
            format!("/v1/executions/{id}/revoke-lease"),
            None,
        ),
        (Method::POST, format!("/v1/executions/{id}/resume"), None),
        (Method::GET, format!("/v1/executions/{id}/waitpoints"), None),
        (
            Method::PUT,
            format!("/v1/executions/{id}/priority"),
            Some(json!({ "priority": 9 })),
        ),
        (Method::GET, "/v1/components/echo".into(), None),
        (Method::GET, "/v1/components/echo/versions/1".into(), None),
        (
            Method::DELETE,
            "/v1/components/echo/versions/1".into(),
            None,
        ),
    ];
    for (method, path, body) in routes {
        let (status, response) = server.call(&intruder, method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {response}");
        assert_eq!(response["kind"], "not_found", "{method} {path}");
        assert!(
            !response.to_string().contains("secret"),
            "{method} {path} leaked data: {response}"
        );
    }

    // Lists are the intruder's own, which is nothing.
    for path in [
        "/v1/executions",
        "/v1/components",
        "/v1/events",
        "/v1/events/leases",
        "/v1/events/signals",
    ] {
        let (status, list) = server.call(&intruder, Method::GET, path, None).await;
        assert_eq!(status, 200);
        assert_eq!(list["items"], json!([]), "{path}");
    }
    // Submitting the owner's kind is refused: the intruder has no such component.
    let (status, body) = server
        .call(
            &intruder,
            Method::POST,
            "/v1/executions",
            Some(json!({ "kind": "echo" })),
        )
        .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("invalid_input"))
    );

    // Nothing of the owner's changed.
    let after = server
        .db
        .engine
        .get(owner.id, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(after.state, before.state);
    assert_eq!(after.priority, before.priority);
    let echo = server
        .db
        .engine
        .backend()
        .get_component(owner.id, "echo", 1)
        .await
        .unwrap();
    assert!(!echo.deprecated);
}

#[tokio::test]
async fn tenant_keys_cannot_reach_admin_routes_and_admin_cannot_act_as_tenant() {
    let (server, tenant) = setup().await;
    for (method, path) in [
        (Method::GET, "/v1/admin/tenants".to_owned()),
        (Method::POST, "/v1/admin/tenants".to_owned()),
        (Method::GET, format!("/v1/admin/tenants/{}/keys", tenant.id)),
        (
            Method::PUT,
            format!("/v1/admin/tenants/{}/limits", tenant.id),
        ),
    ] {
        let (status, body) = server
            .call(&tenant, method.clone(), &path, Some(json!({ "name": "x" })))
            .await;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    let admin = ApiTenant {
        id: tenant.id,
        token: flowfabric_tests::server::ADMIN_TOKEN.into(),
    };
    let (status, _) = server
        .call(&admin, Method::GET, "/v1/executions", None)
        .await;
    assert_eq!(status, 401, "the admin token is not a tenant key");
}

#[tokio::test]
async fn missing_or_invalid_keys_are_refused_on_every_tenant_route() {
    let (server, tenant) = setup().await;
    let id = submit(&server, &tenant, "echo", json!("x")).await;
    let paths = [
        (Method::POST, "/v1/executions".to_owned()),
        (Method::POST, "/v1/executions/batch".to_owned()),
        (Method::GET, "/v1/executions".to_owned()),
        (Method::GET, format!("/v1/executions/{id}")),
        (Method::GET, format!("/v1/executions/{id}/result")),
        (Method::GET, format!("/v1/executions/{id}/stream")),
        (
            Method::GET,
            format!("/v1/executions/{id}/attempts/1/frames"),
        ),
        (Method::POST, format!("/v1/executions/{id}/cancel")),
        (Method::PUT, format!("/v1/executions/{id}/priority")),
        (Method::POST, format!("/v1/executions/{id}/replay")),
        (Method::POST, format!("/v1/executions/{id}/revoke-lease")),
        (Method::POST, format!("/v1/executions/{id}/resume")),
        (Method::GET, format!("/v1/executions/{id}/waitpoints")),
        (Method::GET, "/v1/components".to_owned()),
        (Method::POST, "/v1/components/echo".to_owned()),
        (Method::GET, "/v1/components/echo/versions/1".to_owned()),
        (Method::DELETE, "/v1/components/echo/versions/1".to_owned()),
        (Method::GET, "/v1/tenant".to_owned()),
        (Method::GET, "/v1/events".to_owned()),
        (Method::GET, "/v1/events/stream".to_owned()),
        (Method::GET, "/v1/events/leases".to_owned()),
        (Method::GET, "/v1/events/leases/stream".to_owned()),
        (Method::GET, "/v1/events/signals".to_owned()),
        (Method::GET, "/v1/events/signals/stream".to_owned()),
    ];
    let mut forged = tenant.token.clone();
    forged.replace_range(forged.len() - 4.., "0000");
    for (method, path) in &paths {
        for auth in [
            None,
            Some("Basic abc"),
            Some("Bearer nope"),
            Some(forged.as_str()),
        ] {
            let mut request = server.http.request(method.clone(), server.url(path));
            if let Some(auth) = auth {
                let auth = if auth.starts_with("ffk_") {
                    format!("Bearer {auth}")
                } else {
                    auth.to_owned()
                };
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {auth:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["kind"], "unauthenticated");
        }
    }
    let stored = server
        .db
        .engine
        .get(tenant.id, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.state.as_str(), "waiting", "nothing changed");
}

#[tokio::test]
async fn lanes_show_only_the_callers_executions_and_refuse_bad_cursors() {
    let (server, owner) = setup().await;
    let intruder = server.tenant("intruder").await;
    submit(&server, &owner, "echo", json!("secret")).await;

    let (status, mine) = server.call(&owner, Method::GET, "/v1/lanes", None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["items"][0]["lane"], "default");
    assert_eq!(mine["items"][0]["queued"], 1);

    let (status, theirs) = server.call(&intruder, Method::GET, "/v1/lanes", None).await;
    assert_eq!(status, 200, "{theirs}");
    assert_eq!(theirs["items"], json!([]));

    for bad in [
        "/v1/lanes?limit=0",
        "/v1/lanes?cursor=%27%3B%20drop",
        "/v1/lanes?lane=x",
    ] {
        let (status, body) = server.call(&owner, Method::GET, bad, None).await;
        assert_eq!(
            (status, body["kind"].as_str()),
            (400, Some("invalid_input")),
            "{bad}: {body}"
        );
    }
}
