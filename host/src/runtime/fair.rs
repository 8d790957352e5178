//! Fair CPU between tenants: guests take turns on the guest threads, tenant
//! by tenant.
//!
//! The guest threads run whichever guest task the executor polls next, and a
//! spinning guest yields only at its epoch tick (10 ms). Left to the
//! executor, CPU is shared per *guest*: a tenant with twenty spinning guests
//! gets twenty shares, and another tenant's one-millisecond task waits behind
//! all twenty slices, again at every host call. So a guest runs only while
//! it holds a *turn*: there are as many turns as guest threads, and when a
//! turn is handed back and guests are waiting, it goes to the next tenant in
//! round-robin order, then to that tenant's oldest waiter. A guest hands its
//! turn back at every epoch tick when others wait (and carries on at once
//! when none do), and while it waits on a host call, which uses no guest
//! CPU. A tenant with runnable guests therefore gets at least its share of
//! the guest threads, however many guests another tenant runs.
//!
//! With no contention a turn costs one uncontended mutex acquisition when a
//! guest starts and around each host call.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use uuid::Uuid;

/// Who a guest's CPU time is counted against: its tenant.
pub type Owner = Uuid;

/// The turns and who waits for one.
pub struct FairGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    free: usize,
    /// Each waiting owner's waiters, oldest first.
    waiters: HashMap<Owner, VecDeque<oneshot::Sender<()>>>,
    /// Owners with waiters, in the order they are served.
    order: VecDeque<Owner>,
}

/// A held turn; dropping it hands the turn on.
pub struct Turn {
    gate: Arc<FairGate>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.gate.hand_on();
    }
}

/// A wait for a turn that may be given up before it is granted: a turn
/// granted to a waiter that went away is handed on, never lost.
struct Waiting {
    gate: Arc<FairGate>,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut granted) = self.granted.take() {
            granted.close();
            if granted.try_recv().is_ok() {
                self.gate.hand_on();
            }
        }
    }
}

impl FairGate {
    pub fn new(turns: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(GateState {
                free: turns.max(1),
                ..GateState::default()
            }),
        })
    }

    /// Wait for a turn for `owner`.
    pub async fn turn(self: &Arc<Self>, owner: Owner) -> Turn {
        let granted = {
            let mut state = self.state.lock().expect("fair gate lock");
            if state.free > 0 && state.order.is_empty() {
                state.free -= 1;
                return Turn { gate: self.clone() };
            }
            let (grant, granted) = oneshot::channel();
            let queue = state.waiters.entry(owner).or_default();
            if queue.is_empty() {
                state.order.push_back(owner);
            }
            state
                .waiters
                .get_mut(&owner)
                .expect("just added")
                .push_back(grant);
            granted
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            granted: Some(granted),
        };
        let granted = waiting.granted.as_mut().expect("set above");
        // The sender lives in the gate until it is used, so this resolves.
        let _ = granted.await;
        waiting.granted = None;
        Turn { gate: self.clone() }
    }

    /// Whether some guest waits for a turn.
    pub fn contended(&self) -> bool {
        !self.state.lock().expect("fair gate lock").order.is_empty()
    }

    /// A turn came back: give it to the next owner's oldest waiter, or keep
    /// it free.
    fn hand_on(&self) {
        let mut state = self.state.lock().expect("fair gate lock");
        while let Some(owner) = state.order.pop_front() {
            let queue = state.waiters.get_mut(&owner).expect("ordered owners wait");
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiters.remove(&owner);
            } else {
                state.order.push_back(owner);
            }
            if let Some(grant) = next {
                if grant.send(()).is_ok() {
                    return;
                }
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn turns_go_round_the_tenants_not_the_guests() {
        let gate = FairGate::new(1);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let held = gate.turn(a).await;
        // Tenant A queues three guests, then B one.
        let mut a_waiters: Vec<_> = (0..3).map(|_| Box::pin(gate.turn(a))).collect();
        for w in &mut a_waiters {
            assert!(w.as_mut().now_or_never().is_none());
        }
        let mut b_waiter = Box::pin(gate.turn(b));
        assert!(b_waiter.as_mut().now_or_never().is_none());
        assert!(gate.contended());

        drop(held);
        let first = a_waiters[0]
            .as_mut()
            .now_or_never()
            .expect("A was first in line");
        drop(first);
        let second = b_waiter
            .as_mut()
            .now_or_never()
            .expect("then B, ahead of A's other two");
        assert!(a_waiters[1].as_mut().now_or_never().is_none());
        drop(second);
        assert!(a_waiters[1].as_mut().now_or_never().is_some());
    }

    #[tokio::test]
    async fn a_turn_granted_to_a_waiter_that_left_is_not_lost() {
        let gate = FairGate::new(1);
        let owner = Uuid::from_u128(1);
        let held = gate.turn(owner).await;
        let mut left = Box::pin(gate.turn(owner));
        assert!(left.as_mut().now_or_never().is_none());
        drop(held); // granted to `left`, which never looks again
        drop(left);
        assert!(!gate.contended());
        assert!(
            gate.turn(owner).now_or_never().is_some(),
            "the turn came back"
        );
    }
}
