//! The keys that sign waitpoint tokens, and the tokens they sign.
//!
//! A token is `wpt_<kid>_<tenant>_<execution>_<waitpoint>_<mac>`, where `mac` is
//! HMAC-SHA256 under the key `kid` over all four, so one token opens exactly one
//! waitpoint of one execution of one tenant, and an external system needs no
//! API key to signal.
//!
//! Keys live in the database, each secret sealed under the operator's key
//! (the one that seals tenant secrets), so every host signs and verifies
//! with the same keys and tokens survive a restart. A process loads them at
//! start (a fresh install generates the first) and re-reads them every
//! [`KEY_REFRESH_INTERVAL`]. Rotation stores a new key that starts signing
//! [`ACTIVATION_DELAY`] later, by which time every host has read it, and
//! gives the old keys a grace window in which they still verify; a token
//! signed by a retired or removed key is refused as `token_expired`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{
    ExecutionId, SealedBytes, SeedOutcome, StoredWaitpointKey, TenantId, WaitpointId,
    WaitpointKeyInfo,
};

const TOKEN_PREFIX: &str = "wpt_";

/// How often a running process re-reads the stored keys.
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(20);

/// How long after a rotation the new key starts signing: three refreshes,
/// so every live host verifies it before any host signs with it.
pub const ACTIVATION_DELAY: Duration = Duration::from_secs(60);

/// Longest grace window a rotation may give the keys it supersedes.
pub const MAX_GRACE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Retired keys are deleted this long after they retire.
const KEEP_RETIRED: Duration = Duration::from_secs(30 * 24 * 3600);

/// The id of the key a fresh install generates. Fixed, so hosts starting
/// together on an empty table store one key between them.
const FIRST_KID: &str = "k1";

const SECRET_BYTES: usize = 32;
const MAX_SECRET_BYTES: usize = 1024;

/// The keys that sign and verify waitpoint tokens, opened.
#[derive(Clone)]
pub struct SignalKeys {
    keys: Vec<StoredWaitpointKey>,
    secrets: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SignalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_tuple("SignalKeys").field(&kids).finish()
    }
}

impl SignalKeys {
    /// A random key for this process only: tokens die with it, and other hosts
    /// cannot verify them. What an engine starts with, until it loads the
    /// stored keys; tests use it as is.
    pub fn ephemeral() -> Self {
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let now = Utc::now();
        Self::open_all(
            vec![StoredWaitpointKey {
                kid: "ephemeral".into(),
                secret: SealedBytes {
                    key_id: String::new(),
                    nonce: Vec::new(),
                    ciphertext: Vec::new(),
                },
                created_at: now,
                activates_at: now,
                retires_at: None,
            }],
            |_| Ok(secret.clone()),
        )
        .expect("one key")
    }

    fn open_all(
        keys: Vec<StoredWaitpointKey>,
        mut open: impl FnMut(&StoredWaitpointKey) -> Result<Vec<u8>>,
    ) -> Result<Self> {
        if keys.is_empty() {
            return Err(EngineError::Corrupt("no waitpoint keys are stored".into()));
        }
        let mut secrets = BTreeMap::new();
        for key in &keys {
            secrets.insert(key.kid.clone(), open(key)?);
        }
        Ok(Self { keys, secrets })
    }

    /// The key that signs now. A host whose clock runs behind a fresh
    /// rotation may see none activated yet: then the newest one signs.
    fn signer(&self) -> &StoredWaitpointKey {
        StoredWaitpointKey::signer_at(&self.keys, Utc::now()).unwrap_or_else(|| {
            self.keys
                .iter()
                .max_by_key(|k| (k.activates_at, &k.kid))
                .expect("never empty")
        })
    }

    fn mac(
        kid: &str,
        secret: &[u8],
        tenant: TenantId,
        id: ExecutionId,
        waitpoint: WaitpointId,
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        let message = format!(
            "flowfabric-waitpoint:v1:{kid}:{}:{}:{}",
            tenant.simple(),
            id.simple(),
            waitpoint.simple()
        );
        mac.update(message.as_bytes());
        mac
    }

    pub fn sign(&self, tenant: TenantId, id: ExecutionId, waitpoint: WaitpointId) -> String {
        let kid = &self.signer().kid;
        let mac = Self::mac(kid, &self.secrets[kid], tenant, id, waitpoint)
            .finalize()
            .into_bytes();
        format!(
            "{TOKEN_PREFIX}{kid}_{}_{}_{}_{}",
            tenant.simple(),
            id.simple(),
            waitpoint.simple(),
            hex::encode(mac)
        )
    }

    /// The (tenant, execution, waitpoint) a token opens.
    pub fn verify(&self, token: &str) -> Result<(TenantId, ExecutionId, WaitpointId)> {
        let invalid = || {
            token_error(
                "invalid_token",
                "the waitpoint token is malformed or forged",
            )
        };
        let parts: Vec<&str> = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(invalid)?
            .split('_')
            .collect();
        let [kid, tenant, id, waitpoint, mac] = parts[..] else {
            return Err(invalid());
        };
        let parse = |s: &str| Uuid::try_parse(s).map_err(|_| invalid());
        let (tenant, id, waitpoint) = (
            TenantId(parse(tenant)?),
            ExecutionId(parse(id)?),
            WaitpointId(parse(waitpoint)?),
        );
        let mac = hex::decode(mac).map_err(|_| invalid())?;
        let (key, secret) = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| (k, &self.secrets[kid]))
            .ok_or_else(|| {
                token_error(
                    "token_expired",
                    "the waitpoint token was signed with a key that is no longer accepted",
                )
            })?;
        Self::mac(kid, secret, tenant, id, waitpoint)
            .verify_slice(&mac)
            .map_err(|_| invalid())?;
        if !key.verifies_at(Utc::now()) {
            return Err(token_error(
                "token_expired",
                "the waitpoint token was signed with a retired key",
            ));
        }
        Ok((tenant, id, waitpoint))
    }
}

fn token_error(kind: &'static str, message: &'static str) -> EngineError {
    EngineError::Token { kind, message }
}

/// The keys an engine and all its clones sign with: replaced whole when the
/// stored keys are re-read.
pub(super) type KeyRing = Arc<RwLock<Arc<SignalKeys>>>;

pub(super) fn key_ring(keys: SignalKeys) -> KeyRing {
    Arc::new(RwLock::new(Arc::new(keys)))
}

/// Binds a sealed secret to its key id: a sealed secret copied onto
/// another key's row does not open.
fn associated_data(kid: &str) -> Vec<u8> {
    let mut aad = b"flowfabric-waitpoint-key-v1\0".to_vec();
    aad.extend_from_slice(kid.as_bytes());
    aad
}

fn check_kid(kid: &str) -> Result<()> {
    if kid.is_empty() || kid.len() > 32 || !kid.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(EngineError::invalid(
            "kid",
            format!("`{kid}` must be 1 to 32 letters and digits"),
        ));
    }
    Ok(())
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).expect("bounded durations")
}

/// Stops the periodic key refresh when dropped.
pub struct KeyRefresh(tokio::task::JoinHandle<()>);

impl Drop for KeyRefresh {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Engine {
    /// The engine signing with `keys` only, never the stored ones: tests.
    pub fn with_signal_keys(mut self, keys: SignalKeys) -> Self {
        self.signal_keys = key_ring(keys);
        self
    }

    pub(super) fn signal_keys(&self) -> Arc<SignalKeys> {
        self.signal_keys
            .read()
            .expect("the key ring is never poisoned")
            .clone()
    }

    /// Load the stored keys (for this engine and its clones), generating
    /// the first one on a fresh install. Fails when a key does not open
    /// under the operator's keys, rather than signing tokens no other host
    /// can verify.
    pub async fn load_waitpoint_keys(&self) -> Result<Vec<WaitpointKeyInfo>> {
        let mut stored = self.backend.waitpoint_keys().await?;
        if stored.is_empty() {
            let now = Utc::now();
            let first = self.new_key(FIRST_KID, &random_secret(), now, now);
            // A host starting at the same moment may store its own `k1`
            // first; then both use that one.
            self.backend.add_waitpoint_key(&first, None, now).await?;
            stored = self.backend.waitpoint_keys().await?;
        }
        self.install(stored)
    }

    /// Re-read the stored keys: what the periodic refresh does.
    pub async fn refresh_waitpoint_keys(&self) -> Result<Vec<WaitpointKeyInfo>> {
        let stored = self.backend.waitpoint_keys().await?;
        self.install(stored)
    }

    /// Re-read the stored keys every [`KEY_REFRESH_INTERVAL`] until the
    /// handle is dropped; a failed read keeps the keys in hand.
    pub fn spawn_key_refresh(&self) -> KeyRefresh {
        let engine = self.clone();
        KeyRefresh(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(KEY_REFRESH_INTERVAL);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = engine.refresh_waitpoint_keys().await {
                    tracing::warn!(error = %e, "re-reading the waitpoint keys failed");
                }
            }
        }))
    }

    fn install(&self, stored: Vec<StoredWaitpointKey>) -> Result<Vec<WaitpointKeyInfo>> {
        let info = StoredWaitpointKey::describe_all(&stored, Utc::now());
        let keys = SignalKeys::open_all(stored, |key| self.open_secret(key))?;
        *self
            .signal_keys
            .write()
            .expect("the key ring is never poisoned") = Arc::new(keys);
        Ok(info)
    }

    /// A stored key's secret, opened under the operator's keys.
    fn open_secret(&self, key: &StoredWaitpointKey) -> Result<Vec<u8>> {
        self.sealing_keys
            .open_bytes(&associated_data(&key.kid), &key.secret, || {
                format!("waitpoint key `{}`", key.kid)
            })
    }

    fn new_key(
        &self,
        kid: &str,
        secret: &[u8],
        now: DateTime<Utc>,
        activates_at: DateTime<Utc>,
    ) -> StoredWaitpointKey {
        StoredWaitpointKey {
            kid: kid.to_owned(),
            secret: self.sealing_keys.seal_bytes(&associated_data(kid), secret),
            created_at: now,
            activates_at,
            retires_at: None,
        }
    }

    /// Every stored key and where it is in its life; never a secret.
    pub async fn list_waitpoint_keys(&self) -> Result<Vec<WaitpointKeyInfo>> {
        let stored = self.backend.waitpoint_keys().await?;
        Ok(StoredWaitpointKey::describe_all(&stored, Utc::now()))
    }

    /// Store a new random key that signs from [`ACTIVATION_DELAY`] from now
    /// (or from the end of `grace`, if that is sooner), and retire every
    /// other key when `grace` ends. A grace of zero is for a leaked key:
    /// tokens it signed stop verifying at once, and so may tokens that
    /// hosts sign before they next read the keys. Returns the keys after.
    pub async fn rotate_waitpoint_key(&self, grace: Duration) -> Result<Vec<WaitpointKeyInfo>> {
        if grace > MAX_GRACE {
            return Err(EngineError::invalid(
                "grace",
                format!("must be at most {} days", MAX_GRACE.as_secs() / 86_400),
            ));
        }
        let now = Utc::now();
        let mut id = [0u8; 6];
        rand::rng().fill_bytes(&mut id);
        let kid = format!("k{}", hex::encode(id));
        let key = self.new_key(
            &kid,
            &random_secret(),
            now,
            after(now, grace.min(ACTIVATION_DELAY)),
        );
        let retire_at = after(now, grace);
        if !self
            .backend
            .add_waitpoint_key(&key, Some(retire_at), now - KEEP_RETIRED)
            .await?
        {
            return Err(EngineError::Conflict(format!(
                "a waitpoint key `{kid}` already exists; rotate again"
            )));
        }
        tracing::info!(kid, %retire_at, "rotated the waitpoint signing key");
        self.refresh_waitpoint_keys().await
    }

    /// Install `secret` under `kid` as the signing key of an installation
    /// that has none yet (tokens signed elsewhere with the same secret and
    /// id then verify here). Idempotent: a `kid` already stored is left
    /// alone, and the answer says whether its secret is the one given. An
    /// installation that already has other keys rotates instead.
    pub async fn seed_waitpoint_key(&self, kid: &str, secret: &[u8]) -> Result<SeedOutcome> {
        check_kid(kid)?;
        if !(SECRET_BYTES..=MAX_SECRET_BYTES).contains(&secret.len()) {
            return Err(EngineError::invalid(
                "secret",
                format!("must be {SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"),
            ));
        }
        let stored = self.backend.waitpoint_keys().await?;
        if let Some(key) = stored.iter().find(|k| k.kid == kid) {
            let held = self.open_secret(key)?;
            return Ok(SeedOutcome::AlreadySeeded {
                same_secret: subtle_eq(&held, secret),
            });
        }
        let now = Utc::now();
        if stored.iter().any(|k| k.verifies_at(now)) {
            return Err(EngineError::Conflict(
                "waitpoint keys are already stored; rotate instead of seeding".into(),
            ));
        }
        let key = self.new_key(kid, secret, now, now);
        if !self.backend.add_waitpoint_key(&key, None, now).await? {
            return Ok(SeedOutcome::AlreadySeeded { same_secret: false });
        }
        self.refresh_waitpoint_keys().await?;
        Ok(SeedOutcome::Seeded)
    }

    /// Move every key sealed under an older operator key to the current
    /// one; how many moved.
    pub async fn reseal_waitpoint_keys(&self) -> Result<u64> {
        let current = self.sealing_keys.current_id().to_owned();
        let mut resealed = 0;
        for key in self.backend.waitpoint_keys().await? {
            if key.secret.key_id == current {
                continue;
            }
            let secret = self.open_secret(&key)?;
            let sealed = self
                .sealing_keys
                .seal_bytes(&associated_data(&key.kid), &secret);
            if self
                .backend
                .reseal_waitpoint_key(&key.kid, &key.secret.key_id, &sealed)
                .await?
            {
                resealed += 1;
            }
        }
        Ok(resealed)
    }
}

fn random_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// Equality that takes the same time wherever the inputs differ.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &[(&str, u8, i64, Option<i64>)]) -> SignalKeys {
        let at = |s: i64| Utc::now() + chrono::Duration::seconds(s);
        let stored = spec
            .iter()
            .map(|&(kid, _, activates, retires)| StoredWaitpointKey {
                kid: kid.into(),
                secret: SealedBytes {
                    key_id: String::new(),
                    nonce: Vec::new(),
                    ciphertext: Vec::new(),
                },
                created_at: at(-3600),
                activates_at: at(activates),
                retires_at: retires.map(at),
            })
            .collect();
        SignalKeys::open_all(stored, |k| {
            let byte = spec.iter().find(|s| s.0 == k.kid).unwrap().1;
            Ok(vec![byte; 32])
        })
        .unwrap()
    }

    fn kind(r: Result<(TenantId, ExecutionId, WaitpointId)>) -> &'static str {
        match r {
            Err(EngineError::Token { kind, .. }) => kind,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens_open_one_waitpoint_and_keys_rotate() {
        let old = keys(&[("k1", 1, -60, None)]);
        let (t, e, w) = (TenantId::new(), ExecutionId::new(), WaitpointId::new());
        let token = old.sign(t, e, w);
        assert!(token.starts_with("wpt_k1_"));
        assert_eq!(old.verify(&token).unwrap(), (t, e, w));

        // Rotated: k2 published, not signing yet; then signing, k1 in grace.
        let published = keys(&[("k1", 1, -60, Some(3600)), ("k2", 2, 30, None)]);
        assert!(published.sign(t, e, w).starts_with("wpt_k1_"));
        let rotated = keys(&[("k1", 1, -60, Some(3600)), ("k2", 2, -1, None)]);
        assert!(rotated.sign(t, e, w).starts_with("wpt_k2_"));
        assert_eq!(rotated.verify(&token).unwrap(), (t, e, w));
        let retired = keys(&[("k1", 1, -60, Some(-1)), ("k2", 2, -1, None)]);
        assert_eq!(kind(retired.verify(&token)), "token_expired");
        let removed = keys(&[("k2", 2, -1, None)]);
        assert_eq!(kind(removed.verify(&token)), "token_expired");
        // The same kid with another secret: forged.
        let impostor = keys(&[("k1", 9, -60, None)]);
        assert_eq!(kind(impostor.verify(&token)), "invalid_token");

        // Any other waitpoint, execution or tenant: forged.
        let swapped = token.replace(
            &w.simple().to_string(),
            &Uuid::now_v7().simple().to_string(),
        );
        assert_eq!(kind(old.verify(&swapped)), "invalid_token");
        assert_eq!(kind(old.verify("wpt_k1_nonsense")), "invalid_token");
        assert_eq!(kind(old.verify("")), "invalid_token");
    }

    #[test]
    fn a_host_behind_a_fresh_rotation_signs_with_the_newest_key() {
        // Every key pending (this host's clock runs behind the rotating one).
        let ahead = keys(&[("k1", 1, 10, None), ("k2", 2, 20, None)]);
        let (t, e, w) = (TenantId::new(), ExecutionId::new(), WaitpointId::new());
        assert!(ahead.sign(t, e, w).starts_with("wpt_k2_"));
    }

    #[test]
    fn secrets_compare_in_full() {
        assert!(subtle_eq(b"abc", b"abc"));
        assert!(!subtle_eq(b"abc", b"abd"));
        assert!(!subtle_eq(b"abc", b"ab"));
        assert!(check_kid("k1").is_ok());
        assert!(check_kid("").is_err() && check_kid("a-b").is_err());
        assert!(check_kid(&"k".repeat(33)).is_err());
    }
}
