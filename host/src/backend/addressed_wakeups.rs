//! Wake-ups addressed to what a follower follows: "this tenant's lease,
//! signal or completion stream has new events" (addressed to the tenant),
//! "this execution has a new frame, or ended" (addressed to the execution),
//! each heard only by the followers of that address.
//!
//! Why not one broadcast of every wake-up, each follower picking out its
//! own: then every follower woke for every other tenant's events and every
//! other execution's frames, work that grows with followers times the
//! whole host's traffic; and a follower that fell behind the others'
//! wake-ups (a busy host sends more in a second than a broadcast keeps)
//! could not tell whether any of the ones it missed were its own, so it had
//! to read, or tell its client that something changed, for nothing: how
//! busy the other tenants were showed through. Here each followed address
//! has a channel of its own, made by its first follower and dropped once it
//! has none; a follower that falls behind has missed only its own.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::model::{ExecutionUpdate, TenantId};

/// Wake-ups a channel keeps for a follower that has not read them yet; past
/// that it lags, and reads again.
const KEPT_PER_ADDRESS: usize = 64;

/// Each followed address's channel.
#[derive(Debug)]
pub(crate) struct Addressed<K> {
    channels: Mutex<HashMap<K, broadcast::Sender<()>>>,
}

/// Wake-ups of a tenant's event streams.
pub(crate) type TenantWakeups = Addressed<TenantId>;
/// Wake-ups of one execution's followers: a frame, or its end.
pub(crate) type ExecutionWakeups = Addressed<ExecutionUpdate>;

impl<K> Default for Addressed<K> {
    fn default() -> Self {
        Self {
            channels: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash> Addressed<K> {
    /// A receiver of `address`'s wake-ups from now on. Channels whose
    /// followers have all gone are dropped here.
    pub(crate) fn subscribe(&self, address: K) -> broadcast::Receiver<()> {
        let mut channels = self.channels.lock().expect("wake-up channels");
        channels.retain(|_, sender| sender.receiver_count() > 0);
        channels
            .entry(address)
            .or_insert_with(|| broadcast::channel(KEPT_PER_ADDRESS).0)
            .subscribe()
    }

    /// Wake `address`'s followers, if it has any.
    pub(crate) fn wake(&self, address: K) {
        let mut channels = self.channels.lock().expect("wake-up channels");
        if let Some(sender) = channels.get(&address) {
            if sender.send(()).is_err() {
                channels.remove(&address);
            }
        }
    }

    /// The addresses that have followers now.
    pub(crate) fn followed_addresses(&self) -> Vec<K>
    where
        K: Clone,
    {
        let channels = self.channels.lock().expect("wake-up channels");
        channels
            .iter()
            .filter(|(_, sender)| sender.receiver_count() > 0)
            .map(|(address, _)| address.clone())
            .collect()
    }

    /// Whether anything has a follower.
    pub(crate) fn followed(&self) -> bool {
        let channels = self.channels.lock().expect("wake-up channels");
        channels.values().any(|sender| sender.receiver_count() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    #[test]
    fn a_follower_hears_its_own_tenant_only() {
        let wakeups = TenantWakeups::default();
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut hears_a = wakeups.subscribe(a);
        assert!(wakeups.followed());
        for _ in 0..1_000 {
            wakeups.wake(b);
        }
        assert_eq!(
            hears_a.try_recv(),
            Err(TryRecvError::Empty),
            "b's are not a's"
        );
        wakeups.wake(a);
        assert_eq!(hears_a.try_recv(), Ok(()));
        assert_eq!(hears_a.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_tenants_channel_goes_with_its_last_follower() {
        let wakeups = TenantWakeups::default();
        let a = TenantId::new();
        let first = wakeups.subscribe(a);
        let second = wakeups.subscribe(a);
        drop(first);
        wakeups.wake(a);
        assert_eq!(
            wakeups.channels.lock().unwrap().len(),
            1,
            "one follower left"
        );
        drop(second);
        assert!(!wakeups.followed());
        wakeups.wake(a);
        assert!(wakeups.channels.lock().unwrap().is_empty());
    }
}
