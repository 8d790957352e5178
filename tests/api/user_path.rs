//! The path a tenant takes: upload, submit, follow, read the result; plus
//! bulk create, listing, cancel, signals and completion events.

use flowfabric_tests::Store;
use reqwest::Method;
use serde_json::json;

use flowfabric_tests::server::{read_sse, worker_config};

use crate::{setup_on, sse_events, submit, submit_text};

async fn upload_submit_follow_result(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(4));

    let id = submit_text(&server, &tenant, "testkit", "frames:3").await;
    // Follow live: frames as they are written, then the end of the execution.
    let response = server
        .http
        .get(server.url(&format!("/v1/executions/{id}/stream")))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse_events(&response.text().await.unwrap());
    // testkit logs once, then writes one `item` frame per step.
    let frames: Vec<_> = events.iter().filter(|(e, _)| e == "frame").collect();
    assert_eq!(frames.len(), 4, "{events:?}");
    for (i, (_, frame)) in frames.iter().enumerate() {
        assert_eq!(frame["seq"], i as i64 + 1);
        assert_eq!(frame["attempt"], 1);
    }
    let items: Vec<_> = frames
        .iter()
        .filter(|(_, f)| f["frame_type"] == "item")
        .map(|(_, f)| f["payload"]["value"].clone())
        .collect();
    assert_eq!(items, vec![json!(0), json!(1), json!(2)]);
    let states: Vec<_> = events
        .iter()
        .filter(|(e, _)| e == "state")
        .map(|(_, s)| s["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states.last().map(String::as_str),
        Some("completed"),
        "{states:?}"
    );
    let (last, end) = events.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(end["state"], "completed");

    let (status, result) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/executions/{id}/result"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(result["state"], "completed");
    assert!(result["result"]["base64"].is_string());

    // Frames by cursor, and resuming the stream after the second frame.
    let (status, page) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/executions/{id}/attempts/1/frames?after=1&limit=1"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["seq"], 2);
    assert_eq!(page["next_cursor"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let resumed = server
        .http
        .get(server.url(&format!("/v1/executions/{id}/stream")))
        .header("last-event-id", "1:2")
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resumed = sse_events(&resumed);
    let seqs: Vec<_> = resumed
        .iter()
        .filter(|(e, _)| e == "frame")
        .map(|(_, f)| f["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4]);
}

async fn echo_result_round_trips_json_and_bytes(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    server.start_workers(worker_config(2));
    let id = submit(&server, &tenant, "echo", json!({ "hello": [1, 2, 3] })).await;
    let done = server.wait_terminal(&tenant, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    let (_, result) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/executions/{id}/result"),
            None,
        )
        .await;
    assert_eq!(result["result"]["value"], json!({ "hello": [1, 2, 3] }));

    let (status, body) = server
        .call(
            &tenant,
            Method::POST,
            "/v1/executions",
            Some(json!({ "kind": "echo", "input_base64": "AAEC/w==" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["execution_id"].as_str().unwrap();
    server.wait_terminal(&tenant, id).await;
    let (_, result) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/executions/{id}/result"),
            None,
        )
        .await;
    assert_eq!(result["result"]["base64"], "AAEC/w==");
}

async fn idempotent_create_answers_200_with_the_same_execution(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let body = json!({ "kind": "echo", "input": "x", "idempotency_key": "order-7" });
    let (first, a) = server
        .call(&tenant, Method::POST, "/v1/executions", Some(body.clone()))
        .await;
    let (second, b) = server
        .call(&tenant, Method::POST, "/v1/executions", Some(body))
        .await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(a["execution_id"], b["execution_id"]);
    assert_eq!(b["created"], false);
    assert_eq!(server.db.count("executions").await, 1);
}

async fn bulk_create_then_list_with_filters_and_pagination(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let executions: Vec<_> = (0..25)
        .map(|i| {
            json!({
                "kind": if i % 5 == 0 { "testkit" } else { "echo" },
                "input": i,
                "tags": { "batch": if i < 10 { "a" } else { "b" } },
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
    assert_eq!(body["results"].as_array().unwrap().len(), 25);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/executions?limit=10".to_owned(),
            Some(c) => format!("/v1/executions?limit=10&cursor={c}"),
        };
        let (status, page) = server.call(&tenant, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            seen.push(item["execution_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let created: Vec<_> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["execution_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, created, "every execution once, in creation order");

    for (query, expected) in [
        ("kind=testkit", 5),
        ("tag=batch:a", 10),
        ("state=waiting&kind=echo", 20),
        ("state=completed", 0),
    ] {
        let (status, page) = server
            .call(
                &tenant,
                Method::GET,
                &format!("/v1/executions?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(page["items"].as_array().unwrap().len(), expected, "{query}");
    }
}

async fn cancel_and_priority(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let id = submit(&server, &tenant, "echo", json!("x")).await;
    let (status, body) = server
        .call(
            &tenant,
            Method::PUT,
            &format!("/v1/executions/{id}/priority"),
            Some(json!({ "priority": 7 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, got) = server
        .call(&tenant, Method::GET, &format!("/v1/executions/{id}"), None)
        .await;
    assert_eq!(got["priority"], 7);

    let path = format!("/v1/executions/{id}/cancel");
    let (status, body) = server
        .call(
            &tenant,
            Method::POST,
            &path,
            Some(json!({ "reason": "changed my mind" })),
        )
        .await;
    assert_eq!((status, body["cancelled"].as_bool()), (200, Some(true)));
    let (status, body) = server.call(&tenant, Method::POST, &path, None).await;
    assert_eq!(
        (status, body["cancelled"].as_bool()),
        (200, Some(false)),
        "idempotent"
    );
    let (_, got) = server
        .call(&tenant, Method::GET, &format!("/v1/executions/{id}"), None)
        .await;
    assert_eq!(got["state"], "cancelled");
    assert_eq!(got["cancellation_reason"], "changed my mind");

    // Priority of a terminal execution is a conflict.
    let (status, body) = server
        .call(
            &tenant,
            Method::PUT,
            &format!("/v1/executions/{id}/priority"),
            Some(json!({ "priority": 1 })),
        )
        .await;
    assert_eq!((status, body["kind"].as_str()), (409, Some("not_runnable")));

    // Replay makes it run again.
    let (status, body) = server
        .call(
            &tenant,
            Method::POST,
            &format!("/v1/executions/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["replay_count"].as_i64()),
        (200, Some(1)),
        "{body}"
    );
    let (_, got) = server
        .call(&tenant, Method::GET, &format!("/v1/executions/{id}"), None)
        .await;
    assert_eq!(got["state"], "waiting");
    let (status, body) = server
        .call(
            &tenant,
            Method::POST,
            &format!("/v1/executions/{id}/replay"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["kind"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
}

async fn components_list_versions_and_deprecate(store: Store) {
    let (server, tenant) = setup_on(store).await;
    let again = server.upload(&tenant, "echo", "echo").await;
    assert_eq!(again["created"], false, "same bytes: same version");
    let second = server.upload(&tenant, "echo", "testkit").await;
    assert_eq!(second["version"], 2);

    let (status, list) = server
        .call(&tenant, Method::GET, "/v1/components", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let (_, echo) = server
        .call(&tenant, Method::GET, "/v1/components/echo", None)
        .await;
    assert_eq!(echo["items"].as_array().unwrap().len(), 2);

    let (status, deprecated) = server
        .call(
            &tenant,
            Method::DELETE,
            "/v1/components/echo/versions/2",
            None,
        )
        .await;
    assert_eq!(
        (status, deprecated["deprecated"].as_bool()),
        (200, Some(true))
    );
    let (_, v2) = server
        .call(&tenant, Method::GET, "/v1/components/echo/versions/2", None)
        .await;
    assert_eq!(v2["deprecated"], true);
    // Version 1 runs new executions again.
    let latest = server
        .db
        .engine
        .backend()
        .latest_component(tenant.id, "echo")
        .await;
    assert_eq!(latest.unwrap().unwrap().version, 1);
}

async fn signals_over_http_resume_a_suspended_guest(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    let signal_events = server.follow(&tenant, "/v1/events/signals/stream").await;
    server.start_workers(worker_config(2));
    let id = submit_text(&server, &tenant, "testkit", "wait:approval").await;
    // Wait until it suspended; its waitpoint is then listed with its token.
    let token = loop {
        let (_, ex) = server
            .call(&tenant, Method::GET, &format!("/v1/executions/{id}"), None)
            .await;
        if ex["state"] == "suspended" {
            let (status, list) = server
                .call(
                    &tenant,
                    Method::GET,
                    &format!("/v1/executions/{id}/waitpoints"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{list}");
            break list["items"][0]["token"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // Operators list it with what it waits on, and no token in sight.
    let (status, suspended) = server
        .call(&tenant, Method::GET, "/v1/suspended?kind=testkit", None)
        .await;
    assert_eq!(status, 200, "{suspended}");
    let entry = &suspended["items"][0];
    assert_eq!(entry["execution_id"], id.as_str(), "{suspended}");
    assert_eq!(entry["blocking_reason"], "waiting_for_signal");
    assert_eq!(entry["suspension"]["condition"]["key"], "approval");
    assert_eq!(entry["waitpoints"][0]["key"], "approval");
    assert!(
        !suspended.to_string().contains(&token),
        "a token leaked: {suspended}"
    );
    let (status, err) = server
        .call(&tenant, Method::GET, "/v1/suspended?limit=101", None)
        .await;
    assert_eq!(status, 200, "the page is clamped to 100: {err}");
    let send = |token: Option<String>, body: serde_json::Value| {
        let mut request = server.http.post(server.url("/v1/signals")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { flowfabric_tests::server::response_parts(request.send().await.unwrap()).await }
    };
    let body = json!({ "name": "approve", "payload": "ok", "idempotency_key": "sig-1" });
    // Missing and invalid tokens, and an API key instead of a token.
    let (status, err) = send(None, body.clone()).await;
    assert_eq!((status, err["kind"].as_str()), (401, Some("missing_token")));
    let (status, err) = send(Some("wpt_nope".into()), body.clone()).await;
    assert_eq!((status, err["kind"].as_str()), (401, Some("invalid_token")));
    let (status, err) = send(Some(tenant.token.clone()), body.clone()).await;
    assert_eq!((status, err["kind"].as_str()), (401, Some("invalid_token")));
    let (status, err) = send(Some(token.clone()), json!({ "payload": 1 })).await;
    assert_eq!((status, err["kind"].as_str()), (400, Some("invalid_input")));

    let (status, accepted) = send(Some(token.clone()), body.clone()).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["resumed"], true);
    let (status, dup) = send(Some(token.clone()), body).await;
    assert_eq!(
        (status, &dup["signal_id"]),
        (200, &accepted["signal_id"]),
        "{dup}"
    );
    let done = server.wait_terminal(&tenant, &id).await;
    assert_eq!(done["state"], "completed", "{done}");
    let (_, result) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/executions/{id}/result"),
            None,
        )
        .await;
    assert_eq!(
        result["result"]["value"],
        "resumed attempt=1: approve=\"ok\""
    );
    // The waitpoint closed with the resume.
    let (status, err) = send(Some(token), json!({ "name": "late" })).await;
    assert_eq!((status, err["kind"].as_str()), (409, Some("conflict")));

    // The signal stream saw the delivery and its duplicate, live.
    let text = read_sse(signal_events, "signal", 2).await;
    let effects: Vec<_> = sse_events(&text)
        .into_iter()
        .map(|(_, ev)| (ev["effect"].clone(), ev["signal_id"].clone()))
        .collect();
    assert_eq!(
        effects,
        [
            (json!("resumed"), accepted["signal_id"].clone()),
            (json!("duplicate"), accepted["signal_id"].clone())
        ],
        "{text}"
    );
    // Lease history: claimed, released by the suspension, claimed again on
    // resume, released by the completion (renewals aside).
    let page = server.events(&tenant, "/v1/events/leases", 4).await;
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| ev["kind"].as_str().unwrap())
        .filter(|kind| *kind != "renewed")
        .collect();
    assert_eq!(
        kinds,
        ["acquired", "released", "acquired", "released"],
        "{page}"
    );
    let phases: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["kind"] == "released")
        .map(|ev| ev["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["suspended", "terminal"]);
}

async fn completion_events_by_cursor_and_live(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    let other = server.tenant("other").await;
    server.upload(&other, "echo", "echo").await;
    // Follow live from the start, before anything ends.
    let live = server.follow(&tenant, "/v1/events/stream").await;
    server.start_workers(worker_config(2));
    let mine: Vec<String> =
        futures::future::join_all((0..3).map(|i| submit(&server, &tenant, "echo", json!(i)))).await;
    let theirs = submit(&server, &other, "echo", json!("x")).await;
    for id in &mine {
        server.wait_terminal(&tenant, id).await;
    }
    server.wait_terminal(&other, &theirs).await;

    let page = server.events(&tenant, "/v1/events", 3).await;
    let ids: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["execution_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "only this tenant's: {page}");
    assert!(mine.iter().all(|id| ids.contains(id)));
    let first = page["items"][0]["cursor"].as_str().unwrap();
    let (_, rest) = server
        .call(
            &tenant,
            Method::GET,
            &format!("/v1/events?after={first}"),
            None,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_cursor"], page["next_cursor"]);

    // The live stream delivered the same three.
    let text = read_sse(live, "completion", 3).await;
    for id in &ids {
        assert!(text.contains(id.as_str()), "{text}");
    }
    assert!(!text.contains(&theirs), "another tenant's event leaked");
}

async fn event_filters_over_http(store: Store) {
    let (mut server, tenant) = setup_on(store).await;
    let live = server
        .follow(&tenant, "/v1/events/stream?kind=testkit&outcome=failed")
        .await;
    server.start_workers(worker_config(2));
    let early = [
        submit(&server, &tenant, "echo", json!(1)).await,
        submit(&server, &tenant, "echo", json!(2)).await,
        submit_text(&server, &tenant, "testkit", "echo:fine").await,
    ];
    for id in &early {
        server.wait_terminal(&tenant, id).await;
    }
    let failed = submit_text(&server, &tenant, "testkit", "permanent").await;
    server.wait_terminal(&tenant, &failed).await;

    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["execution_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let testkit = server.events(&tenant, "/v1/events?kind=testkit", 2).await;
    assert_eq!(
        ids(&testkit),
        [early[2].clone(), failed.clone()],
        "{testkit}"
    );
    let page = server.events(&tenant, "/v1/events?outcome=failed", 1).await;
    assert_eq!(ids(&page), std::slice::from_ref(&failed), "{page}");
    assert_eq!(page["more"], false);
    let one = server
        .events(&tenant, &format!("/v1/events?execution={}", early[1]), 1)
        .await;
    assert_eq!(ids(&one), [early[1].clone()], "{one}");
    let leases = server
        .events(
            &tenant,
            &format!("/v1/events/leases?execution={failed}&outcome=acquired"),
            1,
        )
        .await;
    assert_eq!(leases["items"].as_array().unwrap().len(), 1, "{leases}");

    // Only the matching event came down the filtered live stream, though
    // three others ended before it.
    let text = read_sse(live, "completion", 1).await;
    assert!(text.contains(&failed), "{text}");
    for id in &early {
        assert!(
            !text.contains(id.as_str()),
            "{id} leaked through the filter: {text}"
        );
    }

    for (path, names) in [
        ("/v1/events?outcome=completed", "outcome"),
        ("/v1/events/stream?outcome=completed", "outcome"),
        ("/v1/events/signals?outcome=released", "outcome"),
        ("/v1/events?kind=no%20spaces", "kind"),
        ("/v1/events?execution=not-a-uuid", "execution"),
        ("/v1/events?colour=red", "colour"),
    ] {
        let (status, body) = server.call(&tenant, Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["kind"], "invalid_input", "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(names),
            "{path}: {body}"
        );
    }
}

on_both_backends!(
    event_filters_over_http,
    signals_over_http_resume_a_suspended_guest,
    upload_submit_follow_result,
    echo_result_round_trips_json_and_bytes,
    idempotent_create_answers_200_with_the_same_execution,
    bulk_create_then_list_with_filters_and_pagination,
    cancel_and_priority,
    components_list_versions_and_deprecate,
    completion_events_by_cursor_and_live,
);
