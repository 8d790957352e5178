//! The checked-in OpenAPI document is the one the code generates and serves.
//! Regenerate with `FLOWFABRIC_UPDATE_OPENAPI=1 cargo test -p flowfabric-tests --test api openapi`.

use flowfabric_tests::server::TestServer;

#[tokio::test]
async fn checked_in_document_matches_the_code() {
    let generated = flowfabric::api::openapi::document();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.json");
    if std::env::var_os("FLOWFABRIC_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in.trim_end() == generated,
        "openapi.json is out of date: regenerate it with \
         FLOWFABRIC_UPDATE_OPENAPI=1 cargo test -p flowfabric-tests --test api openapi"
    );

    let server = TestServer::start().await;
    let served = server.get_text("/openapi.json").await;
    assert_eq!(served, generated);
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    for path in [
        "/v1/executions",
        "/v1/executions/{id}/stream",
        "/v1/components/{kind}",
        "/v1/admin/tenants",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}
