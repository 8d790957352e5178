//! Sealing tenant config values and secrets at rest.
//!
//! Values are sealed with XChaCha20-Poly1305 under the operator's key before
//! they reach storage, so a database dump or backup holds no plaintext. The
//! associated data binds each ciphertext to its tenant, name and secrecy: a
//! sealed value copied onto another tenant's row, or another name, fails to
//! open instead of leaking. Keys rotate: the first configured key seals,
//! every configured key opens (each row names the key that sealed it), and
//! `flowfabric reseal-config` moves old rows to the first key, after
//! which the old key can be dropped.

use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::error::{EngineError, Result};
use crate::model::{SealedBytes, SealedConfig, TenantId};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

struct SealingKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The keys that seal and open config values; the first one seals.
pub struct SealingKeys(Vec<SealingKey>);

impl std::fmt::Debug for SealingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|k| k.id.as_str()).collect();
        f.debug_tuple("SealingKeys").field(&ids).finish()
    }
}

fn invalid(reason: impl Into<String>) -> EngineError {
    EngineError::invalid("config sealing keys", reason)
}

impl SealingKeys {
    /// `kid=base64key,…`: each key 32 random bytes in standard base64; the
    /// first seals.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut keys = Vec::new();
        for part in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (id, key) = part
                .split_once('=')
                .ok_or_else(|| invalid("expected `kid=base64key`"))?;
            if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(format!(
                    "key id `{id}` must be 1 to 32 letters and digits"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|_| invalid(format!("the key `{id}` is not base64")))?;
            if bytes.len() != KEY_BYTES {
                return Err(invalid(format!(
                    "the key `{id}` is {} bytes; it must be {KEY_BYTES}",
                    bytes.len()
                )));
            }
            if keys.iter().any(|k: &SealingKey| k.id == id) {
                return Err(invalid(format!("the key id `{id}` appears twice")));
            }
            keys.push(SealingKey {
                id: id.to_owned(),
                cipher: XChaCha20Poly1305::new_from_slice(&bytes)
                    .map_err(|e| invalid(e.to_string()))?,
            });
        }
        if keys.is_empty() {
            return Err(invalid("no key given"));
        }
        Ok(Self(keys))
    }

    /// A new key line, `kid=base64key`.
    pub fn generate(id: &str) -> String {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        format!(
            "{id}={}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    /// A random key for this process only: values sealed under it cannot be
    /// opened by any other process or after a restart.
    pub fn ephemeral() -> Self {
        Self::parse(&Self::generate("ephemeral")).expect("a generated key parses")
    }

    /// The keys in `path`, creating it with one new key (readable by its
    /// owner only) when it does not exist: the embedded default's store.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        use std::io::Write;
        let spec = match std::fs::read_to_string(path) {
            Ok(spec) => spec,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let spec = Self::generate("k1");
                let mut file = open_private(path)?;
                file.write_all(spec.as_bytes())?;
                spec
            }
            Err(e) => return Err(e),
        };
        Self::parse(&spec)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.0[0].id
    }

    pub fn seal(&self, tenant: TenantId, name: &str, secret: bool, value: &str) -> SealedConfig {
        let sealed = self.seal_bytes(&associated_data(tenant, name, secret), value.as_bytes());
        SealedConfig {
            name: name.to_owned(),
            secret,
            key_id: sealed.key_id,
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
            updated_at: chrono::Utc::now(),
        }
    }

    /// The plaintext of a sealed value. The error names the value and the
    /// key, never any of its content.
    pub fn open(&self, tenant: TenantId, sealed: &SealedConfig) -> Result<String> {
        let what = || format!("config value `{}`", sealed.name);
        let plain = self.open_parts(
            &associated_data(tenant, &sealed.name, sealed.secret),
            (&sealed.key_id, &sealed.nonce, &sealed.ciphertext),
            what,
        )?;
        String::from_utf8(plain).map_err(|_| unreadable(&what(), &sealed.key_id))
    }

    /// `value` sealed under the current key, bound to `aad`: it opens only
    /// with the same associated data.
    pub(crate) fn seal_bytes(&self, aad: &[u8], value: &[u8]) -> SealedBytes {
        let key = &self.0[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: value, aad })
            .expect("sealing a bounded value cannot fail");
        SealedBytes {
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// The plaintext of `sealed`; errors name `what` and the key only.
    pub(crate) fn open_bytes(
        &self,
        aad: &[u8],
        sealed: &SealedBytes,
        what: impl Fn() -> String,
    ) -> Result<Vec<u8>> {
        self.open_parts(
            aad,
            (&sealed.key_id, &sealed.nonce, &sealed.ciphertext),
            what,
        )
    }

    /// Open (key id, nonce, ciphertext) under `aad`. `what` names the value
    /// in an error, and is only called for one.
    fn open_parts(
        &self,
        aad: &[u8],
        (key_id, nonce, ciphertext): (&str, &[u8], &[u8]),
        what: impl Fn() -> String,
    ) -> Result<Vec<u8>> {
        let key = self.0.iter().find(|k| k.id == key_id).ok_or_else(|| {
            EngineError::Corrupt(format!(
                "{} is sealed under key `{key_id}`, which this process does not have",
                what()
            ))
        })?;
        if nonce.len() != NONCE_BYTES {
            return Err(unreadable(&what(), key_id));
        }
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| unreadable(&what(), key_id))
    }
}

fn unreadable(what: &str, key_id: &str) -> EngineError {
    EngineError::Corrupt(format!(
        "{what} does not open under key `{key_id}` (tampered, or moved to another row)"
    ))
}

fn associated_data(tenant: TenantId, name: &str, secret: bool) -> Vec<u8> {
    let mut aad = b"flowfabric-config-v1\0".to_vec();
    aad.extend_from_slice(tenant.as_uuid().as_bytes());
    aad.push(u8::from(secret));
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_tenant_and_name() {
        let keys = SealingKeys::ephemeral();
        let t = TenantId::new();
        let sealed = keys.seal(t, "API_KEY", true, "hunter2");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(keys.open(t, &sealed).unwrap(), "hunter2");
        assert!(keys.open(TenantId::new(), &sealed).is_err());
        let renamed = SealedConfig {
            name: "OTHER".into(),
            ..sealed.clone()
        };
        assert!(keys.open(t, &renamed).is_err());
        let shown = SealedConfig {
            secret: false,
            ..sealed.clone()
        };
        let err = keys.open(t, &shown).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn rotation_opens_old_and_seals_new() {
        let k1 = SealingKeys::generate("k1");
        let t = TenantId::new();
        let sealed_by_k1 = SealingKeys::parse(&k1).unwrap().seal(t, "A", false, "v");
        let rotated = SealingKeys::parse(&format!("{},{k1}", SealingKeys::generate("k2"))).unwrap();
        assert_eq!(rotated.current_id(), "k2");
        assert_eq!(rotated.open(t, &sealed_by_k1).unwrap(), "v");
        assert_eq!(rotated.seal(t, "A", false, "v").key_id, "k2");
        // The same id with other key bytes does not open it.
        let impostor = SealingKeys::parse(&SealingKeys::generate("k1")).unwrap();
        assert!(impostor.open(t, &sealed_by_k1).is_err());
        assert!(
            SealingKeys::parse(&format!("{k1},{k1}")).is_err(),
            "duplicate ids"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        for spec in ["", "k1", "k1=notbase64!", "k1=c2hvcnQ=", "bad id=AAAA"] {
            assert!(SealingKeys::parse(spec).is_err(), "{spec}");
        }
    }
}
