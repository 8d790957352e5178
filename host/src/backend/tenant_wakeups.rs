//! Wake-ups addressed to one tenant: "this tenant's lease, signal or
//! completion stream has new events", heard only by that tenant's
//! followers.
//!
//! Why not one broadcast of every tenant's wake-ups, each follower picking
//! out its own: then every follower woke for every other tenant's events,
//! work that grows with tenants times followers; and a follower that fell
//! behind the others' events (a busy host sends more in a second than a
//! broadcast keeps) could not tell whether any of the ones it missed were
//! its tenant's, so it had to read, or tell its client that something
//! changed, for nothing: how busy the other tenants were showed through.
//! Here each tenant with a follower has a channel of its own, made by its
//! first follower and dropped once it has none; a follower that falls
//! behind has missed only its own tenant's wake-ups.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::model::TenantId;

/// Wake-ups a tenant's channel keeps for a follower that has not read them
/// yet; past that it lags, and reads again.
const KEPT_PER_TENANT: usize = 64;

/// Each followed tenant's channel.
#[derive(Debug, Default)]
pub(crate) struct TenantWakeups {
    channels: Mutex<HashMap<TenantId, broadcast::Sender<()>>>,
}

impl TenantWakeups {
    /// A receiver of `tenant`'s wake-ups from now on. Channels whose
    /// followers have all gone are dropped here.
    pub(crate) fn subscribe(&self, tenant: TenantId) -> broadcast::Receiver<()> {
        let mut channels = self.channels.lock().expect("tenant wake-ups");
        channels.retain(|_, sender| sender.receiver_count() > 0);
        channels
            .entry(tenant)
            .or_insert_with(|| broadcast::channel(KEPT_PER_TENANT).0)
            .subscribe()
    }

    /// Wake `tenant`'s followers, if it has any.
    pub(crate) fn wake(&self, tenant: TenantId) {
        let mut channels = self.channels.lock().expect("tenant wake-ups");
        if let Some(sender) = channels.get(&tenant) {
            if sender.send(()).is_err() {
                channels.remove(&tenant);
            }
        }
    }

    /// Whether any tenant has a follower.
    pub(crate) fn followed(&self) -> bool {
        let channels = self.channels.lock().expect("tenant wake-ups");
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
