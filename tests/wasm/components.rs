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

/// `bench http`'s baseline sends a guest's requests as they are, on one
/// connection kept between requests and runs, where the plain baseline
/// refuses them.
#[tokio::test]
async fn the_baseline_sending_http_sends_each_request_on_one_kept_connection() {
    let runtime = runtime();
    let upstream = crate::upstream::Upstream::start().await;
    let wasm = guest("testkit");
    let digest = runtime.register(&wasm).await.unwrap();
    let component = runtime
        .prepare(&digest, || async { Ok::<_, String>(wasm.clone()) })
        .await
        .unwrap();
    let three = format!("http-n:3:{}", upstream.url("/hello"));
    let refused = runtime.baseline(&component).unwrap();
    let (answer, _) = refused.run(three.as_bytes()).await;
    let answer = String::from_utf8(answer.unwrap()).unwrap();
    assert!(answer.starts_with("ok=0 error="), "{answer}");
    assert_eq!(upstream.hits(), 0, "nothing was sent");

    let sending = runtime.baseline_sending_http(&component).unwrap();
    for _ in 0..2 {
        let (answer, _) = sending.run(three.as_bytes()).await;
        assert_eq!(answer.unwrap(), b"ok=3 error=none");
    }
    assert_eq!(upstream.hits(), 6);
    assert_eq!(upstream.connections(), 1, "one connection, kept");
}

/// A tenant has one upload under way at a time in a process; another
/// tenant's is not held up by it, and the turn comes back when it ends.
#[tokio::test]
async fn a_tenant_has_one_upload_under_way_at_a_time() {
    let db = TestDb::new().await;
    let (a, b) = (db.tenant("a").await, db.tenant("b").await);
    let first = db.engine.begin_upload(a).expect("a's first upload");
    let second = db.engine.begin_upload(a).unwrap_err();
    assert_eq!(second.kind(), "quota_exceeded", "{second}");
    assert!(second.is_retryable());
    let other = db.engine.begin_upload(b).expect("b is not held up by a");
    drop(first);
    let _again = db.engine.begin_upload(a).expect("a's turn came back");
    drop(other);
}

/// An upload whose caller goes away (a dropped HTTP request) still runs to
/// its end, and holds its tenant's turn until then: dropped requests cannot
/// leave compiles behind that no turn accounts for.
#[tokio::test]
async fn an_upload_runs_to_its_end_when_its_caller_goes_away() {
    let db = TestDb::new().await;
    let t = db.tenant("acme").await;
    let turn = db.engine.begin_upload(t).unwrap();
    let wasm = bytes_of(&guest("echo"));
    let runtime = runtime();
    let upload = flowfabric::components::register_to_end(&db.engine, &runtime, turn, "job", wasm);
    let mut upload = Box::pin(upload);
    assert!(futures::poll!(upload.as_mut()).is_pending());
    drop(upload);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.engine.begin_upload(t).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let versions = db.engine.backend().list_components(t).await.unwrap();
    assert_eq!(
        versions.len(),
        1,
        "the dropped upload was stored: {versions:?}"
    );
}

fn bytes_of(wasm: &[u8]) -> axum::body::Bytes {
    axum::body::Bytes::copy_from_slice(wasm)
}

/// A component's bytes count against its tenant's storage quota: an upload
/// that would pass it is refused before it compiles, and nothing is stored.
async fn components_count_against_the_storage_quota(store: Store) {
    let db = TestDb::on(store).await;
    let t = db.tenant("acme").await;
    let echo = guest("echo");
    let limits = flowfabric::model::TenantLimits {
        max_stored_bytes: Some(echo.len() as u64 + 100),
        ..Default::default()
    };
    db.engine.set_tenant_limits(t, limits).await.unwrap();
    register(&db, t, "small", &echo).await.expect("it fits");
    assert_eq!(
        db.engine.backend().stored_bytes(t).await.unwrap(),
        echo.len() as u64
    );
    let err = register(&db, t, "big", &guest("testkit"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "quota_exceeded", "{err}");
    assert_eq!(db.count("components").await, 1, "nothing more stored");
    assert_eq!(db.count("component_blobs").await, 1);
}

/// A deprecated version that is not its kind's newest can be purged: its
/// bytes go unless another version has them, and what it took of the
/// tenant's storage quota is free again.
async fn purging_a_deprecated_version_frees_its_bytes(store: Store) {
    let db = TestDb::on(store).await;
    let t = db.tenant("acme").await;
    let (echo, testkit) = (guest("echo"), guest("testkit"));
    let e = &db.engine;
    register(&db, t, "job", &echo).await.unwrap();
    register(&db, t, "job", &testkit).await.unwrap();
    register(&db, t, "other", &echo).await.unwrap();
    let conflict = |err: EngineError| assert_eq!(err.kind(), "conflict", "{err}");
    conflict(e.purge_component(t, "job", 1).await.unwrap_err());
    e.deprecate_component(t, "job", 2).await.unwrap();
    conflict(e.purge_component(t, "job", 2).await.unwrap_err());

    // The bytes of version 1 are also `other`'s: they stay.
    e.deprecate_component(t, "job", 1).await.unwrap();
    e.purge_component(t, "job", 1).await.unwrap();
    let gone = e.backend().get_component(t, "job", 1).await.unwrap_err();
    assert_eq!(gone.kind(), "not_found", "{gone}");
    assert_eq!(db.count("component_blobs").await, 2);
    let again = e.purge_component(t, "job", 1).await.unwrap_err();
    assert_eq!(again.kind(), "not_found", "{again}");

    // Once no version has them, they go, and count no more.
    register(&db, t, "other", &testkit).await.unwrap();
    e.deprecate_component(t, "other", 1).await.unwrap();
    e.purge_component(t, "other", 1).await.unwrap();
    assert_eq!(db.count("component_blobs").await, 1);
    assert_eq!(
        e.backend().stored_bytes(t).await.unwrap(),
        testkit.len() as u64
    );
    let (next, created) = register(&db, t, "job", &echo).await.unwrap();
    assert!(created);
    assert_eq!(next.version, 3, "numbers are never given twice");
    let other = db.tenant("other").await;
    let theirs = e.purge_component(other, "job", 2).await.unwrap_err();
    assert_eq!(theirs.kind(), "not_found", "{theirs}");
}

on_both_backends!(
    imports_are_recorded_at_upload,
    components_count_against_the_storage_quota,
    purging_a_deprecated_version_frees_its_bytes
);

/// The artifact directory is bounded: past its size, the least recently
/// used compiled component is deleted, and a runtime that needs it again
/// compiles it again.
#[tokio::test]
async fn the_artifact_cache_stays_within_its_size() {
    let dir = tempfile_dir();
    let config = || flowfabric::runtime::RuntimeConfig {
        cache_dir: Some(dir.clone()),
        cache_max_bytes: 1,
        ..Default::default()
    };
    let (echo, testkit) = (guest("echo"), guest("testkit"));
    let first = flowfabric::runtime::Runtime::new(config()).unwrap();
    let echo_digest = first.register(&echo).await.unwrap();
    let testkit_digest = first.register(&testkit).await.unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(!artifacts[0].starts_with(&echo_digest), "{artifacts:?}");

    // A runtime with nothing in memory reads what the directory kept.
    let second = flowfabric::runtime::Runtime::new(config()).unwrap();
    let bytes = |wasm: &Vec<u8>| {
        let wasm = wasm.clone();
        async move || Ok::<_, String>(wasm)
    };
    second
        .prepare(&testkit_digest, bytes(&testkit))
        .await
        .unwrap();
    assert_eq!(second.compiles(), 0, "testkit's artifact was kept");
    second.prepare(&echo_digest, bytes(&echo)).await.unwrap();
    assert_eq!(second.compiles(), 1, "echo's was evicted");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ff-cache-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
