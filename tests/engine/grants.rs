//! What a tenant's components run with, at the engine level: the config a
//! grant names, instance reuse under the operator's ceiling, and versions
//! of a kind uploaded at the same time.

use flowfabric::model::{CapabilityCeiling, ComponentGrant};
use flowfabric_tests::Store;

use crate::setup_on;

/// An attempt reads the config values its grant names that exist, opened,
/// and no other (the names go to storage as one list, on both backends).
async fn an_attempt_reads_the_granted_config_that_exists(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let e = &db.engine;
    let ceiling = CapabilityCeiling {
        config: true,
        ..CapabilityCeiling::default()
    };
    e.set_ceiling(tenant, &ceiling).await.unwrap();
    for (name, value, secret) in [("a", "1", false), ("b", "2", true), ("c", "3", true)] {
        e.put_config(tenant, name, value, secret).await.unwrap();
    }
    let grant = ComponentGrant {
        config: vec!["c".into(), "a".into(), "missing".into()],
        ..ComponentGrant::default()
    };
    e.put_grant(tenant, "echo", &grant).await.unwrap();
    let caps = e.attempt_capabilities(tenant, "echo").await.unwrap();
    let read: Vec<(&str, &str)> = caps
        .config
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(read, [("a", "1"), ("c", "3")]);
    // Another tenant's value of a granted name is not this tenant's.
    let other = db.tenant("other").await;
    e.put_config(other, "missing", "x", false).await.unwrap();
    let caps = e.attempt_capabilities(tenant, "echo").await.unwrap();
    assert_eq!(caps.config.len(), 2);
}

/// Instance reuse is stored with the ceiling and the grant, read back by
/// the attempt's capabilities, and only while the ceiling allows it.
async fn instance_reuse_is_stored_and_cut_by_the_ceiling(store: Store) {
    let (db, tenant) = setup_on(store).await;
    let ceiling = CapabilityCeiling {
        reuse_instances: true,
        ..CapabilityCeiling::default()
    };
    db.engine.set_ceiling(tenant, &ceiling).await.unwrap();
    let grant = ComponentGrant {
        reuse_instances: true,
        ..ComponentGrant::default()
    };
    db.engine.put_grant(tenant, "echo", &grant).await.unwrap();
    let backend = db.backend();
    assert_eq!(backend.ceiling(tenant).await.unwrap(), ceiling);
    let stored = backend.grant(tenant, "echo").await.unwrap().unwrap();
    assert_eq!(stored.grant, grant);
    let caps = db
        .engine
        .attempt_capabilities(tenant, "echo")
        .await
        .unwrap();
    assert!(caps.grant.reuse_instances);
    // Another kind of the tenant is not granted it.
    let other = db
        .engine
        .attempt_capabilities(tenant, "testkit")
        .await
        .unwrap();
    assert!(!other.grant.reuse_instances);
    // The ceiling taken back: the stored grant stays, reuse is off.
    db.engine
        .set_ceiling(tenant, &CapabilityCeiling::default())
        .await
        .unwrap();
    let caps = db
        .engine
        .attempt_capabilities(tenant, "echo")
        .await
        .unwrap();
    assert!(!caps.grant.reuse_instances);
    assert!(backend.grant(tenant, "echo").await.unwrap().is_some());
}

/// Uploads of one kind at the same time each get the next version, with no
/// conflict and no number given twice (on Postgres, the kind's lock; on
/// SQLite, the one writer).
async fn concurrent_uploads_of_a_kind_get_consecutive_versions(store: Store) {
    let (db, t) = setup_on(store).await;
    let backend = db.backend();
    let uploads = (0..8).map(|i| {
        let backend = backend.clone();
        tokio::spawn(async move {
            let wasm = format!("\0asm upload {i}").into_bytes();
            let digest = format!("{i:064}");
            let component = flowfabric::backend::NewComponent {
                kind: "concurrent",
                digest: &digest,
                wasm: &wasm,
                imports: &[],
            };
            backend
                .put_component(t, component)
                .await
                .map(|(v, new)| (v.version, new))
        })
    });
    let mut versions = Vec::new();
    for upload in futures::future::join_all(uploads).await {
        let (version, new) = upload.unwrap().expect("every upload is stored");
        assert!(new, "each upload has bytes of its own");
        versions.push(version);
    }
    versions.sort();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
}

on_both_backends!(
    an_attempt_reads_the_granted_config_that_exists,
    instance_reuse_is_stored_and_cut_by_the_ceiling,
    concurrent_uploads_of_a_kind_get_consecutive_versions,
);
