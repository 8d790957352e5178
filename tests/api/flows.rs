//! Flows over HTTP, run by real workers and the real `testkit` guest.

use base64::Engine as _;
use flowfabric_tests::Store;
use reqwest::Method;
use serde_json::{json, Value};

use flowfabric_tests::server::{worker_config, ApiTenant, TestServer};

use crate::setup_on;

fn text(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn member(key: &str, command: &str) -> Value {
    json!({ "key": key, "execution": { "kind": "testkit", "input_base64": text(command) } })
}

async fn create_flow(server: &TestServer, tenant: &ApiTenant, body: Value) -> Value {
    let (status, body) = server
        .call(tenant, Method::POST, "/v1/flows", Some(body))
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn a_chain_passes_each_result_to_the_next_guest(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(4));
    // Each `echo:` guest strips one prefix and passes the rest on.
    let flow = create_flow(
        &server,
        &tenant,
        json!({
            "name": "peel",
            "members": [member("a", "echo:echo:echo:done"), member("b", "ignored"),
                        member("c", "ignored")],
            "edges": [{ "from": "a", "to": "b", "pass_result": true },
                      { "from": "b", "to": "c", "pass_result": true }],
        }),
    )
    .await;
    assert_eq!(flow["revision"], 1);
    let c = flow["members"]["c"].as_str().unwrap();
    let done = server.wait_terminal(&tenant, c).await;
    assert_eq!(done["state"], "completed", "{done}");
    let (_, result) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/executions/{c}/result"),
            None,
        )
        .await;
    assert_eq!(result["result"]["value"], "done");

    let id = flow["flow_id"].as_str().unwrap();
    let (status, snap) = server
        .call(&tenant, Method::GET, &format!("/v1/flows/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(snap["state"], "completed", "{snap}");
    assert_eq!(snap["members"].as_array().unwrap().len(), 3);
    assert_eq!(snap["member_count"], 3);
    assert!(snap["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["state"] == "satisfied"));
    // Each key once: the count was once written as a second `members`.
    let raw = server
        .http
        .get(server.url(&format!("/v1/flows/{id}")))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(raw.matches("\"members\":").count(), 1, "{raw}");
}

async fn a_failed_guest_skips_its_dependents_and_fails_the_flow(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(2));
    let flow = create_flow(
        &server,
        &tenant,
        json!({
            "name": "doomed",
            "members": [member("a", "permanent"), member("b", "echo:x"),
                        member("c", "echo:y")],
            "edges": [{ "from": "a", "to": "b" }, { "from": "b", "to": "c" }],
        }),
    )
    .await;
    let c = flow["members"]["c"].as_str().unwrap();
    assert_eq!(server.wait_terminal(&tenant, c).await["state"], "skipped");
    let id = flow["flow_id"].as_str().unwrap();
    let (_, snap) = server
        .call(&tenant, Method::GET, &format!("/v1/flows/{id}"), None)
        .await;
    assert_eq!(snap["state"], "failed", "{snap}");
    assert_eq!(snap["failed"], 1);

    // Its edges, on their own: out of `a`, then `a -> b` described.
    let (status, out) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/flows/{id}/edges?from=a"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["items"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out["items"][0]["to"], "b");
    assert_eq!(out["items"][0]["to_execution_id"], flow["members"]["b"]);
    let (status, ab) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/flows/{id}/edges/a/b"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{ab}");
    assert_eq!(ab["state"], "unsatisfied", "{ab}");
    assert_eq!(ab, out["items"][0]);
    for (path, status, kind) in [
        (format!("/v1/flows/{id}/edges/b/a"), 404, "not_found"),
        (
            format!("/v1/flows/{id}/edges?from=a%20b"),
            400,
            "invalid_input",
        ),
        (format!("/v1/flows/{id}/edges?via=a"), 400, "invalid_input"),
    ] {
        let (got, err) = server.call(&tenant, Method::GET, &path, None).await;
        assert_eq!(
            (got, err["kind"].as_str().unwrap()),
            (status, kind),
            "{path}: {err}"
        );
    }
    let other = server.tenant("other").await;
    for path in [
        format!("/v1/flows/{id}/edges"),
        format!("/v1/flows/{id}/edges/a/b"),
    ] {
        let (got, err) = server.call(&other, Method::GET, &path, None).await;
        assert_eq!(got, 404, "another tenant: {path}: {err}");
    }

    // Replayed with revive_dependents, `a` brings back what its failure
    // skipped (b, then c); it fails again, and skips them again.
    let a = flow["members"]["a"].as_str().unwrap();
    let (status, replayed) = server
        .call(
            &tenant,
            Method::POST,
            &format!("/v1/executions/{a}/replay?revive_dependents=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replay_count"], 1);
    assert_eq!(
        replayed["revived"],
        json!([flow["members"]["b"], flow["members"]["c"]]),
    );
    assert_eq!(server.wait_terminal(&tenant, c).await["state"], "skipped");
    let (status, err) = server
        .call(
            &other,
            Method::POST,
            &format!("/v1/executions/{a}/replay?revive_dependents=true"),
            None,
        )
        .await;
    assert_eq!((status, err["kind"].as_str()), (404, Some("not_found")));
}

async fn flow_errors_are_typed_and_change_nothing(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let other = server.tenant("other").await;
    server.upload(&other, "testkit", "testkit").await;
    let flow = create_flow(
        &server,
        &tenant,
        json!({ "name": "f", "members": [member("a", "echo:1"), member("b", "echo:2")],
                "edges": [{ "from": "a", "to": "b" }] }),
    )
    .await;
    let id = flow["flow_id"].as_str().unwrap();
    let members = format!("/v1/flows/{id}/members");

    let cases = [
        (
            json!({ "edges": [{ "from": "b", "to": "b" }] }),
            400,
            "invalid_input",
        ),
        (
            json!({ "members": [member("x", "echo:"), member("y", "echo:")],
                    "edges": [{ "from": "x", "to": "y" }, { "from": "y", "to": "x" }] }),
            409,
            "cycle_detected",
        ),
        (
            json!({ "members": [member("x", "echo:")], "edges": [{ "from": "x", "to": "a" }] }),
            409,
            "member_started",
        ),
        (
            json!({ "edges": [{ "from": "a", "to": "b" }] }),
            409,
            "dependency_exists",
        ),
        (
            json!({ "expected_revision": 7, "members": [member("x", "echo:")] }),
            409,
            "graph_revision_conflict",
        ),
        (
            json!({ "members": [{ "key": "x", "execution": { "kind": "nope" } }] }),
            400,
            "invalid_input",
        ),
        (
            json!({ "members": [member("x", "echo:")], "surprise": true }),
            400,
            "invalid_input",
        ),
        (json!({}), 400, "invalid_input"),
    ];
    for (body, status, kind) in cases {
        let (got, err) = server
            .call(&tenant, Method::POST, &members, Some(body.clone()))
            .await;
        assert_eq!(
            (got, err["kind"].as_str().unwrap_or_default()),
            (status, kind),
            "{body}: {err}"
        );
    }
    // Another tenant sees no such flow, on every route.
    for (method, path) in [
        (Method::GET, format!("/v1/flows/{id}")),
        (Method::POST, members.clone()),
        (Method::POST, format!("/v1/flows/{id}/cancel")),
    ] {
        let body = (method == Method::POST).then(|| json!({ "members": [member("x", "echo:")] }));
        let body = if path.ends_with("cancel") { None } else { body };
        let (status, err) = server.call(&other, method, &path, body).await;
        assert_eq!(status, 404, "{path}: {err}");
    }
    let (_, listed) = server.call(&other, Method::GET, "/v1/flows", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);

    let (_, snap) = server
        .call(&tenant, Method::GET, &format!("/v1/flows/{id}"), None)
        .await;
    assert_eq!(snap["revision"], 1, "nothing refused was applied: {snap}");
    assert_eq!(snap["members"].as_array().unwrap().len(), 2);

    let (status, cancelled) = server
        .call(
            &tenant,
            Method::POST,
            &format!("/v1/flows/{id}/cancel"),
            Some(json!({ "policy": "cancel_all" })),
        )
        .await;
    assert_eq!((status, cancelled["cancelled"].as_u64()), (200, Some(2)));
    let (status, err) = server
        .call(
            &tenant,
            Method::POST,
            &members,
            Some(json!({ "members": [member("x", "echo:")] })),
        )
        .await;
    assert_eq!(
        (status, err["kind"].as_str()),
        (409, Some("flow_cancelled"))
    );
}

async fn members_are_listed_in_pages(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let keys = ["e", "a", "d", "b", "c"];
    let flow = create_flow(
        &server,
        &tenant,
        json!({ "name": "paged", "members": keys.iter().map(|k| member(k, "echo:x")).collect::<Vec<_>>() }),
    )
    .await;
    let id = flow["flow_id"].as_str().unwrap();
    let (mut pages, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/flows/{id}/members?limit=2&cursor={c}"),
            None => format!("/v1/flows/{id}/members?limit=2"),
        };
        let (status, page) = server.call(&tenant, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        let got: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["key"].as_str().unwrap().to_owned())
            .collect();
        pages.push(got);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);

    let (status, body) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/flows/{id}/members?limit=0"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (400, Some("invalid_input"))
    );
    let other = server.tenant("other").await;
    let (status, _) = server
        .call(
            &other,
            Method::GET,
            &format!("/v1/flows/{id}/members"),
            None,
        )
        .await;
    assert_eq!(status, 404, "another tenant's flow is not found");
}

on_both_backends!(
    members_are_listed_in_pages,
    a_chain_passes_each_result_to_the_next_guest,
    a_failed_guest_skips_its_dependents_and_fails_the_flow,
    flow_errors_are_typed_and_change_nothing,
);
