//! Uploading components: precise rejections, content-addressed versions.

use flowfabric::EngineError;
use flowfabric_tests::{guest, runtime, Store, TestDb};

async fn register(
    db: &TestDb,
    tenant: flowfabric::model::TenantId,
    kind: &str,
    wasm: &[u8],
) -> Result<(flowfabric::model::ComponentVersion, bool), EngineError> {
    flowfabric::components::register(&db.engine, &runtime(), tenant, kind, wasm).await
}

#[tokio::test]
async fn malformed_uploads_are_rejected_with_a_clear_message() {
    let db = TestDb::new().await;
    let t = db.tenant("acme").await;
    let cases: [(&[u8], &str); 4] = [
        (b"hello world, not wasm", "not WebAssembly"),
        // A core module header: version 1, layer 0.
        (
            b"\0asm\x01\0\0\0",
            "core WebAssembly module, not a component",
        ),
        // A valid, empty component: it exports no `run`.
        (
            b"\0asm\x0d\0\x01\0",
            "does not implement the flowfabric:task world",
        ),
        // A component header followed by garbage.
        (b"\0asm\x0d\0\x01\0\xff\xff\xff", "invalid component"),
    ];
    for (bytes, expected) in cases {
        let err = register(&db, t, "bad", bytes).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_component", "{err}");
        assert!(
            err.to_string().contains(expected),
            "`{err}` should mention `{expected}`"
        );
    }
    assert_eq!(db.count("components").await, 0, "nothing stored");
    assert_eq!(db.count("component_blobs").await, 0);
}

#[tokio::test]
async fn versions_are_content_addressed_and_reuploads_are_idempotent() {
    let db = TestDb::new().await;
    let t = db.tenant("acme").await;
    let (v1, created) = register(&db, t, "job", &guest("echo")).await.unwrap();
    assert!(created);
    assert_eq!(v1.version, 1);
    assert_eq!(
        v1.digest,
        flowfabric::runtime::Runtime::digest(&guest("echo"))
    );
    let (again, created) = register(&db, t, "job", &guest("echo")).await.unwrap();
    assert!(!created);
    assert_eq!(again.version, 1);
    let (v2, created) = register(&db, t, "job", &guest("testkit")).await.unwrap();
    assert!(created);
    assert_eq!(v2.version, 2);
    let latest = db
        .engine
        .backend()
        .latest_component(t, "job")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.digest, v2.digest);
    assert_eq!(
        db.engine.backend().list_components(t).await.unwrap().len(),
        2
    );

    // Per tenant: another tenant sees none of it.
    let other = db.tenant("globex").await;
    assert!(db
        .engine
        .backend()
        .latest_component(other, "job")
        .await
        .unwrap()
        .is_none());
    assert!(db
        .engine
        .backend()
        .component_wasm(other, &v1.digest)
        .await
        .is_err());
}

/// What a version imports is stored with it: listed without compiling it
/// (a fresh process knows it), and recorded when bytes stored before
/// imports were are uploaded again.
async fn imports_are_recorded_at_upload(store: Store) {
    let db = TestDb::on(store).await;
    let t = db.tenant("acme").await;
    let (v, _) = register(&db, t, "job", &guest("testkit")).await.unwrap();
    let imports = v.imports.clone().expect("recorded");
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:config/store")),
        "{imports:?}"
    );
    assert!(
        imports.iter().any(|i| i.starts_with("flowfabric:task/")),
        "{imports:?}"
    );
    let listed = db.engine.backend().list_components(t).await.unwrap();
    assert_eq!(listed[0].imports.as_ref(), Some(&imports));

    db.forget_component_imports().await;
    let latest = db
        .engine
        .backend()
        .latest_component(t, "job")
        .await
        .unwrap();
    assert_eq!(latest.unwrap().imports, None);
    let (again, created) = register(&db, t, "job", &guest("testkit")).await.unwrap();
    assert!(!created, "the same bytes: the same version");
    assert_eq!(again.imports.as_ref(), Some(&imports), "recorded now");
    let got = db
        .engine
        .backend()
        .get_component(t, "job", 1)
        .await
        .unwrap();
    assert_eq!(got.imports, Some(imports));
}

on_both_backends!(imports_are_recorded_at_upload);

#[tokio::test]
async fn concurrent_uploads_of_the_same_bytes_compile_once() {
    let runtime = flowfabric::runtime::Runtime::new(Default::default()).expect("runtime");
    let wasm = guest("testkit");
    let registers = (0..4).map(|_| runtime.register(&wasm));
    let digests = futures::future::try_join_all(registers).await.unwrap();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(runtime.compiles(), 1);
    // Registering it again, as another tenant's upload would, is free.
    runtime.register(&wasm).await.unwrap();
    assert_eq!(runtime.compiles(), 1);
}

/// The baseline `bench languages` measures the sandbox against runs the same
/// compiled component, and nothing more: a task that calls no host function
/// answers as in the sandbox; one that calls ours fails; a request is refused.
#[tokio::test]
async fn the_baseline_runs_the_same_component_and_links_none_of_our_host_functions() {
    let runtime = runtime();
    for name in ["testkit", "echo"] {
        let wasm = guest(name);
        let digest = runtime.register(&wasm).await.unwrap();
        let component = runtime
            .prepare(&digest, || async { Ok::<_, String>(wasm.clone()) })
            .await
            .unwrap();
        let baseline = runtime.baseline(&component).unwrap();
        let (answer, times) = baseline.run(b"echo:x").await;
        match name {
            "testkit" => {
                assert_eq!(answer.unwrap(), b"x");
                assert!(times.instantiate > std::time::Duration::ZERO);
                let (answer, _) = baseline.run(b"http:GET:http://127.0.0.1:9/").await;
                let answer = String::from_utf8(answer.unwrap()).unwrap();
                assert!(answer.starts_with("error="), "{answer}");
                // One instance called three times answers each call.
                let calls = baseline.run_on_one_instance(b"echo:x", 3).await.unwrap();
                assert_eq!(calls.len(), 3);
                assert!(calls.iter().all(|(answer, _)| answer == b"x"));
            }
            // `echo` reports progress first: a host function of ours.
            _ => {
                let error = answer.unwrap_err();
                assert!(error.contains("links no host functions"), "{error}");
                let error = baseline
                    .run_on_one_instance(b"echo:x", 3)
                    .await
                    .unwrap_err();
                assert!(error.contains("links no host functions"), "{error}");
            }
        }
    }
}
