//! Stream modes written by a real guest, read over HTTP.

use reqwest::Method;
use serde_json::json;

use flowfabric_tests::server::worker_config;

use crate::{setup, submit_text};

#[tokio::test]
async fn a_guest_summary_is_merged_and_served() {
    let (mut server, tenant) = setup().await;
    server.start_workers(worker_config(2));
    let id = submit_text(&server, &tenant, "testkit", "summary:3").await;
    let done = server.wait_terminal(&tenant, &id).await;
    assert_eq!(done["state"], "completed", "{done}");

    let path = format!("/v1/executions/{id}/attempts/1/summary");
    let (status, summary) = server.call(&tenant, Method::GET, &path, None).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["document"],
        json!({ "step": 2, "s0": true, "s1": true, "s2": true })
    );
    assert_eq!(summary["version"], 3);

    let frames = format!("/v1/executions/{id}/attempts/1/frames");
    let (_, page) = server.call(&tenant, Method::GET, &frames, None).await;
    let modes: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["mode"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        modes.iter().filter(|m| *m == "summary").count(),
        3,
        "{page}"
    );
    assert_eq!(
        modes.iter().filter(|m| *m == "best_effort").count(),
        3,
        "{page}"
    );

    let other = server.tenant("other").await;
    let (status, _) = server.call(&other, Method::GET, &path, None).await;
    assert_eq!(status, 404);
    let missing = format!("/v1/executions/{id}/attempts/2/summary");
    let (status, err) = server.call(&tenant, Method::GET, &missing, None).await;
    assert_eq!((status, err["kind"].as_str()), (404, Some("not_found")));

    // Its lease history: the one lease, acquired then released.
    let leases = format!("/v1/executions/{id}/leases");
    let (status, history) = server.call(&tenant, Method::GET, &leases, None).await;
    assert_eq!(status, 200, "{history}");
    let kinds: Vec<_> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["attempt_index"].as_i64().unwrap(),
                e["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [(1, "acquired"), (1, "released")], "{history}");
}
