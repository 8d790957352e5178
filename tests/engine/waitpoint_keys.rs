//! The keys that sign waitpoint tokens live in the database (reference:
//! `seed_waitpoint_hmac_secret`, `rotate_waitpoint_hmac_secret_all`): a
//! fresh install generates one, every host (and the next process) verifies
//! what another signed, rotation keeps old tokens working through the grace
//! window, and a key sealed under another operator key is refused at load.

use std::time::Duration;

use flowfabric::engine::{SealingKeys, ACTIVATION_DELAY};
use flowfabric::model::{NewSignal, SeedOutcome, WaitpointKeyState};
use flowfabric::{Engine, EngineError};
use flowfabric_tests::{Store, TestDb, TEST_CONFIG_KEYS};

use crate::{claim_one, setup_on, task};

/// Another process on the same database, with the operator key `keys`.
fn host(db: &TestDb, keys: &str) -> Engine {
    Engine::new(db.engine.backend().clone(), db.engine.limits().clone())
        .with_sealing_keys(SealingKeys::parse(keys).unwrap())
}

/// `Ok` when `engine` accepts the token (whatever the signal then does),
/// else the token error's kind.
async fn verifies(engine: &Engine, token: &str) -> Result<(), &'static str> {
    let signal = NewSignal {
        name: "ping".into(),
        payload: Vec::new(),
        idempotency_key: None,
    };
    match engine.deliver_signal(token, signal).await {
        Err(EngineError::Token { kind, .. }) => Err(kind),
        _ => Ok(()),
    }
}

/// A token for a fresh waitpoint, signed by `engine`.
async fn token(db: &TestDb, engine: &Engine, tenant: flowfabric::model::TenantId) -> String {
    engine.create(tenant, task("wait")).await.unwrap();
    let claimed = claim_one(&db.engine).await;
    let key = format!("wp-{}", claimed.lease.execution_id.simple());
    engine
        .create_waitpoint(&claimed.lease, &key, None)
        .await
        .unwrap()
        .token
}

fn kid_of(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

async fn every_host_and_restart_verifies_the_stored_key(store: Store) {
    let (db, t) = setup_on(store).await;
    let a = host(&db, TEST_CONFIG_KEYS);
    let first = a.load_waitpoint_keys().await.unwrap();
    assert_eq!(first.len(), 1, "a fresh install generates one key");
    assert_eq!(first[0].state, WaitpointKeyState::Signing);
    let b = host(&db, TEST_CONFIG_KEYS);
    let seen = b.load_waitpoint_keys().await.unwrap();
    assert_eq!(seen, first, "a second host uses the stored key, no new one");

    let signed_by_a = token(&db, &a, t).await;
    assert_eq!(kid_of(&signed_by_a), first[0].kid);
    assert_eq!(verifies(&b, &signed_by_a).await, Ok(()));
    // A process that never loaded the stored keys has its own: it refuses.
    assert_eq!(
        verifies(&db.engine, &signed_by_a).await,
        Err("token_expired")
    );
    // "Restart": a new process on the same database verifies old tokens.
    let restarted = host(&db, TEST_CONFIG_KEYS);
    restarted.load_waitpoint_keys().await.unwrap();
    assert_eq!(verifies(&restarted, &signed_by_a).await, Ok(()));

    // Another operator key cannot open the stored secret: loading fails,
    // naming the key, never the secret.
    let stranger = host(&db, &SealingKeys::generate("other"));
    let err = stranger.load_waitpoint_keys().await.unwrap_err();
    assert!(matches!(err, EngineError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains(&first[0].kid), "{err}");
}

async fn rotation_publishes_first_and_keeps_old_tokens_for_the_grace(store: Store) {
    let (db, t) = setup_on(store).await;
    let a = host(&db, TEST_CONFIG_KEYS);
    let b = host(&db, TEST_CONFIG_KEYS);
    a.load_waitpoint_keys().await.unwrap();
    b.load_waitpoint_keys().await.unwrap();
    let old_token = token(&db, &a, t).await;
    let old_kid = kid_of(&old_token).to_owned();

    // A normal rotation: the new key is published, not signing yet; the
    // old one signs on and retires when the grace ends.
    let grace = Duration::from_secs(7 * 24 * 3600);
    let keys = a.rotate_waitpoint_key(grace).await.unwrap();
    assert_eq!(keys.len(), 2);
    let (old, new) = (&keys[0], &keys[1]);
    assert_eq!(
        (old.kid.as_str(), old.state),
        (old_kid.as_str(), WaitpointKeyState::Signing)
    );
    assert_eq!(new.state, WaitpointKeyState::Pending);
    let delay = (new.activates_at - new.created_at).to_std().unwrap();
    assert_eq!(delay, ACTIVATION_DELAY);
    let retires = (old.retires_at.unwrap() - new.created_at).to_std().unwrap();
    assert_eq!(retires, grace);
    assert_eq!(
        kid_of(&token(&db, &a, t).await),
        old_kid,
        "still the old key"
    );

    // An emergency rotation (grace zero): the new key signs at once and
    // the old tokens stop verifying on every host that has read the keys.
    let keys = a.rotate_waitpoint_key(Duration::ZERO).await.unwrap();
    let newest = keys
        .iter()
        .find(|k| k.state == WaitpointKeyState::Signing)
        .unwrap();
    assert_ne!(newest.kid, old_kid);
    assert!(keys
        .iter()
        .filter(|k| k.kid != newest.kid)
        .all(|k| k.state == WaitpointKeyState::Retired));
    let new_token = token(&db, &a, t).await;
    assert_eq!(kid_of(&new_token), newest.kid);
    assert_eq!(verifies(&a, &old_token).await, Err("token_expired"));
    // Host b has not re-read the keys: the new kid is unknown to it.
    assert_eq!(verifies(&b, &new_token).await, Err("token_expired"));
    b.refresh_waitpoint_keys().await.unwrap();
    assert_eq!(verifies(&b, &new_token).await, Ok(()));
    assert_eq!(verifies(&b, &old_token).await, Err("token_expired"));

    let too_long = a
        .rotate_waitpoint_key(Duration::from_secs(400 * 24 * 3600))
        .await
        .unwrap_err();
    assert_eq!(too_long.kind(), "invalid_input");
    assert_eq!(a.list_waitpoint_keys().await.unwrap().len(), 3);
}

async fn seeding_installs_a_given_secret_once(store: Store) {
    let (db, t) = setup_on(store).await;
    let a = host(&db, TEST_CONFIG_KEYS);
    let secret = b"an operator-chosen secret of 32+ bytes".to_vec();
    assert_eq!(
        a.seed_waitpoint_key("legacy", &secret).await.unwrap(),
        SeedOutcome::Seeded
    );
    assert_eq!(
        a.seed_waitpoint_key("legacy", &secret).await.unwrap(),
        SeedOutcome::AlreadySeeded { same_secret: true }
    );
    assert_eq!(
        a.seed_waitpoint_key("legacy", &[7u8; 40]).await.unwrap(),
        SeedOutcome::AlreadySeeded { same_secret: false }
    );
    let other = a.seed_waitpoint_key("another", &secret).await.unwrap_err();
    assert_eq!(other.kind(), "conflict", "{other}");
    for (kid, secret) in [("bad-kid", &secret[..]), ("ok", &b"short"[..])] {
        let err = a.seed_waitpoint_key(kid, secret).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_input", "{err}");
        assert!(!err.to_string().contains("operator-chosen"), "{err}");
    }
    // Loading finds the seeded key and generates none.
    let keys = a.load_waitpoint_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid, "legacy");
    assert_eq!(kid_of(&token(&db, &a, t).await), "legacy");
}

async fn resealing_moves_keys_to_the_new_operator_key(store: Store) {
    let (db, t) = setup_on(store).await;
    let a = host(&db, TEST_CONFIG_KEYS);
    a.load_waitpoint_keys().await.unwrap();
    let signed = token(&db, &a, t).await;
    let new_operator_key = SealingKeys::generate("op2");
    let both = host(&db, &format!("{new_operator_key},{TEST_CONFIG_KEYS}"));
    assert_eq!(both.reseal_waitpoint_keys().await.unwrap(), 1);
    assert_eq!(both.reseal_waitpoint_keys().await.unwrap(), 0, "idempotent");
    let only_new = host(&db, &new_operator_key);
    let keys = only_new.load_waitpoint_keys().await.unwrap();
    assert_eq!(keys[0].sealed_by, "op2");
    assert_eq!(verifies(&only_new, &signed).await, Ok(()));
}

on_both_backends!(
    every_host_and_restart_verifies_the_stored_key,
    rotation_publishes_first_and_keeps_old_tokens_for_the_grace,
    seeding_installs_a_given_secret_once,
    resealing_moves_keys_to_the_new_operator_key,
);
