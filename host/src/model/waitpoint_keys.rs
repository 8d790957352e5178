//! The keys that sign waitpoint tokens, as storage keeps them.
//!
//! Keys live in the database so every host signs and verifies with the same
//! ones and tokens outlive a restart; each secret is sealed under the
//! operator's key, so a dump of the table signs nothing. A key has a life:
//! it is published before it signs (so every host knows it by the time any
//! host uses it), signs until a newer key takes over, and verifies until it
//! retires (the grace window for tokens already handed out).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Bytes sealed under the operator's key `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBytes {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWaitpointKey {
    /// The id tokens name: 1 to 32 letters and digits.
    pub kid: String,
    pub secret: SealedBytes,
    pub created_at: DateTime<Utc>,
    /// Signs from then (until a key that activates later takes over).
    pub activates_at: DateTime<Utc>,
    /// Verifies until then; `None` for a key that has not been rotated out.
    pub retires_at: Option<DateTime<Utc>>,
}

/// Where a key is in its life at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitpointKeyState {
    /// Published, verifying, not signing yet.
    Pending,
    /// The key new tokens are signed with.
    Signing,
    /// Superseded: verifies the tokens it signed until it retires.
    Verifying,
    /// Verifies nothing.
    Retired,
}

impl WaitpointKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Signing => "signing",
            Self::Verifying => "verifying",
            Self::Retired => "retired",
        }
    }
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WaitpointKeyInfo {
    pub kid: String,
    pub state: WaitpointKeyState,
    /// The operator key its secret is sealed under.
    pub sealed_by: String,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<DateTime<Utc>>,
}

impl StoredWaitpointKey {
    pub fn verifies_at(&self, now: DateTime<Utc>) -> bool {
        self.retires_at.is_none_or(|at| at > now)
    }

    /// The key that signs at `now`: of the keys that verify and have
    /// activated, the one that activated last (ties by kid, so every host
    /// picks the same one).
    pub fn signer_at(keys: &[Self], now: DateTime<Utc>) -> Option<&Self> {
        keys.iter()
            .filter(|k| k.activates_at <= now && k.verifies_at(now))
            .max_by(|a, b| (a.activates_at, &a.kid).cmp(&(b.activates_at, &b.kid)))
    }

    /// Every key with its state at `now`.
    pub fn describe_all(keys: &[Self], now: DateTime<Utc>) -> Vec<WaitpointKeyInfo> {
        let signer = Self::signer_at(keys, now).map(|k| k.kid.as_str());
        keys.iter()
            .map(|k| {
                let state = if !k.verifies_at(now) {
                    WaitpointKeyState::Retired
                } else if Some(k.kid.as_str()) == signer {
                    WaitpointKeyState::Signing
                } else if k.activates_at > now {
                    WaitpointKeyState::Pending
                } else {
                    WaitpointKeyState::Verifying
                };
                WaitpointKeyInfo {
                    kid: k.kid.clone(),
                    state,
                    sealed_by: k.secret.key_id.clone(),
                    created_at: k.created_at,
                    activates_at: k.activates_at,
                    retires_at: k.retires_at,
                }
            })
            .collect()
    }
}

/// What seeding a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SeedOutcome {
    /// Stored: it signs from now.
    Seeded,
    /// A key with that id was already stored and was left alone;
    /// `same_secret` says whether it holds the secret given.
    AlreadySeeded { same_secret: bool },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, activates: i64, retires: Option<i64>) -> StoredWaitpointKey {
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        StoredWaitpointKey {
            kid: kid.into(),
            secret: SealedBytes {
                key_id: "op".into(),
                nonce: vec![],
                ciphertext: vec![],
            },
            created_at: t(0),
            activates_at: t(activates),
            retires_at: retires.map(t),
        }
    }

    #[test]
    fn the_last_activated_live_key_signs() {
        let keys = [key("k1", 0, Some(200)), key("k2", 100, None)];
        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        let signer = |s| StoredWaitpointKey::signer_at(&keys, at(s)).map(|k| k.kid.clone());
        assert_eq!(signer(50).as_deref(), Some("k1"));
        assert_eq!(signer(100).as_deref(), Some("k2"));
        let states: Vec<_> = StoredWaitpointKey::describe_all(&keys, at(50))
            .into_iter()
            .map(|k| k.state)
            .collect();
        assert_eq!(
            states,
            [WaitpointKeyState::Signing, WaitpointKeyState::Pending]
        );
        let states: Vec<_> = StoredWaitpointKey::describe_all(&keys, at(150))
            .into_iter()
            .map(|k| k.state)
            .collect();
        assert_eq!(
            states,
            [WaitpointKeyState::Verifying, WaitpointKeyState::Signing]
        );
        assert_eq!(
            StoredWaitpointKey::describe_all(&keys, at(200))[0].state,
            WaitpointKeyState::Retired
        );
        assert!(StoredWaitpointKey::signer_at(&[key("k1", 0, Some(10))], at(10)).is_none());
        for state in [
            WaitpointKeyState::Pending,
            WaitpointKeyState::Signing,
            WaitpointKeyState::Verifying,
            WaitpointKeyState::Retired,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
