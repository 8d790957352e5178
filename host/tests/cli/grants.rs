//! Grants and configuration through the CLI: the operator's ceiling first,
//! a secret from standard input that never shows, a guest that presents it.

use std::time::Duration;

use flowfabric_tests::guest;

use super::served::{one_line_error, Served};

/// A loopback upstream for the grants test: `/auth` answers 200 only to the
/// bearer token `expected`, 401 otherwise.
async fn auth_upstream(expected: &'static str) -> u16 {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/auth",
        axum::routing::get(move |headers: HeaderMap| async move {
            let presented = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if presented == format!("Bearer {expected}") {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

// Multi-threaded: the upstream must answer while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_secrets_through_the_cli_and_the_secret_never_shows() {
    const SECRET: &str = "sekrit-value-4711-do-not-leak";
    let port = auth_upstream(SECRET).await;
    let served = Served::start().await;
    let (tenant, key) = served.create_tenant("acme");
    let key = Some(key.as_str());
    let file = served.write("testkit.wasm", &guest("testkit"));
    let (ok, out, err) = served.cli(key, &["component", "upload", "testkit", &file]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("wasi:http/outgoing-handler") && l.contains("NOT GRANTED")),
        "upload shows the ungranted import: {out}"
    );

    // Nothing may be granted until the operator raises the ceiling.
    let origin = format!("http://127.0.0.1:{port}");
    let grant = [
        "grant",
        "set",
        "testkit",
        "--http",
        &origin,
        "--config",
        "API_TOKEN",
        "--scratch-bytes",
        "65536",
    ];
    let refused = served.cli(key, &grant);
    one_line_error("grant over the ceiling", &refused);
    assert!(
        refused.2.contains("outside what the operator allows"),
        "{}",
        refused.2
    );
    let (ok, out, err) = served.cli(
        None,
        &[
            "tenant",
            "capabilities",
            &tenant,
            "--set",
            "--http-allow",
            "http://127.0.0.1:*",
            "--allow-cidr",
            "127.0.0.0/8",
            "--config",
            "--scratch-bytes",
            "1048576",
        ],
    );
    assert!(ok && out.contains("127.0.0.0/8"), "{out}{err}");
    let (ok, out, err) = served.cli(key, &grant);
    assert!(
        ok && out.contains(&origin) && out.contains("API_TOKEN") && out.contains("65536 bytes"),
        "{out}{err}"
    );

    // The secret comes from stdin and is never echoed; a plain value is.
    let (ok, out, err) = served.cli_with_input(
        key,
        &["config", "set", "API_TOKEN", "--secret"],
        SECRET.as_bytes(),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = served.cli(key, &["config", "set", "REGION", "--value", "eu-west-1"]);
    assert!(ok, "{err}");
    let (ok, listed, err) = served.cli(key, &["config", "list"]);
    assert!(
        ok && listed.contains("eu-west-1") && listed.contains("(hidden)"),
        "{listed}{err}"
    );
    let (_, listed_json, _) = served.cli(key, &["config", "list", "--json"]);

    // The guest presents the secret to the upstream, which accepts it.
    let presenting = format!("http-auth:API_TOKEN:{origin}/auth");
    let present = ["run", "testkit", "--input-text", &presenting];
    let (ok, run, err) = served.cli(key, &present);
    assert!(ok && run.contains("status=200"), "{run}{err}");
    let id = run
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .map(str::to_owned);
    let mut shown = vec![out, listed, listed_json, run, err];
    if let Some(id) = id {
        for args in [
            vec!["get", &id],
            vec!["get", &id, "--json"],
            vec!["tail", &id],
        ] {
            let (_, out, err) = served.cli(key, &args);
            shown.extend([out, err]);
        }
    }
    let (_, events, _) = served.cli(key, &["events", "completions", "--json"]);
    shown.push(events);
    shown.push(served.log.lock().unwrap().clone());
    for text in &shown {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }

    // The grant's scratch directory, through the whole path.
    let scratch = ["run", "testkit", "--input-text", "scratch:4"];
    let (ok, run, err) = served.cli(key, &scratch);
    assert!(ok && run.contains("wrote=4096"), "{run}{err}");

    // Removing the grant takes the capability away again.
    let (ok, _, err) = served.cli(key, &["grant", "rm", "testkit"]);
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (ok, run, err) = served.cli(key, &present);
    assert!(ok && run.contains("HttpRequestDenied"), "{run}{err}");
}
