//! Fair CPU between tenants: guests take turns on the guest threads, and a
//! turn goes to the tenant that has had the least of them.
//!
//! The guest threads run whichever guest task the executor polls next, and a
//! spinning guest yields only at its epoch tick. Left to the executor, CPU is
//! shared per *guest*: a tenant with twenty spinning guests gets twenty
//! shares, and another tenant's one-millisecond task waits behind all twenty
//! slices, again at every host call. So a guest runs only while it holds a
//! *turn*; there are as many turns as guest threads. The gate counts the time
//! each tenant held turns (its virtual time), and a turn handed back goes to
//! the waiting tenant with the least, then to that tenant's oldest waiter: a
//! tenant whose guests run for microseconds gets turn after turn while one
//! whose guests spin has used its share (weighted fair queueing, every
//! tenant weighing the same). A guest hands its turn back at every epoch
//! tick when others wait (and carries on at once when none do), and while it
//! waits on a host call, which uses no guest CPU.
//!
//! A tenant that starts waiting starts from the virtual time of the last
//! turn handed out, not from what it had before: time it spent idle is not
//! credit to crowd out the others with later. With no contention a turn
//! costs one uncontended lock when a guest starts and around each host call.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    /// Turns each owner holds now.
    holding: HashMap<Owner, usize>,
    /// Nanoseconds of turns each owner held, from where it joined.
    vtime: HashMap<Owner, u64>,
    /// The virtual time of the owner last handed a turn.
    floor: u64,
}

/// A held turn; dropping it hands the turn on.
pub struct Turn {
    gate: Arc<FairGate>,
    owner: Owner,
    since: Instant,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let used = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.gate.hand_on(self.owner, used);
    }
}

/// A wait for a turn that may be given up before it is granted: a turn
/// granted to a waiter that went away is handed on, never lost.
struct Waiting {
    gate: Arc<FairGate>,
    owner: Owner,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut granted) = self.granted.take() {
            granted.close();
            if granted.try_recv().is_ok() {
                self.gate.hand_on(self.owner, 0);
            } else {
                self.gate.forget_if_idle(self.owner);
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
            if state.free > 0 && state.waiters.is_empty() {
                state.free -= 1;
                state.start(owner);
                return self.held_by(owner);
            }
            let (grant, granted) = oneshot::channel();
            let floor = state.floor;
            let joining =
                !state.waiters.contains_key(&owner) && !state.holding.contains_key(&owner);
            let vtime = state.vtime.entry(owner).or_insert(floor);
            if joining {
                *vtime = (*vtime).max(floor);
            }
            state.waiters.entry(owner).or_default().push_back(grant);
            granted
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            owner,
            granted: Some(granted),
        };
        let granted = waiting.granted.as_mut().expect("set above");
        // The sender lives in the gate until it is used, so this resolves.
        let _ = granted.await;
        waiting.granted = None;
        self.held_by(owner)
    }

    fn held_by(self: &Arc<Self>, owner: Owner) -> Turn {
        Turn {
            gate: self.clone(),
            owner,
            since: Instant::now(),
        }
    }

    /// Whether some guest waits for a turn.
    pub fn contended(&self) -> bool {
        !self
            .state
            .lock()
            .expect("fair gate lock")
            .waiters
            .is_empty()
    }

    /// `owner` held a turn for `used` ns and gave it back: charge it, then
    /// give the turn to the oldest waiter of the owner with the least
    /// virtual time, or keep it free.
    fn hand_on(&self, owner: Owner, used: u64) {
        let mut state = self.state.lock().expect("fair gate lock");
        if let Some(vtime) = state.vtime.get_mut(&owner) {
            *vtime = vtime.saturating_add(used);
        }
        state.stop(owner);
        loop {
            let Some(next) = state
                .waiters
                .keys()
                .min_by_key(|o| (state.vtime.get(o).copied().unwrap_or(0), **o))
                .copied()
            else {
                state.free += 1;
                return;
            };
            let queue = state.waiters.get_mut(&next).expect("chosen among waiters");
            let grant = queue.pop_front();
            if queue.is_empty() {
                state.waiters.remove(&next);
            }
            if grant.is_some_and(|g| g.send(()).is_ok()) {
                state.floor = state.vtime.get(&next).copied().unwrap_or(state.floor);
                state.start(next);
                return;
            }
            state.forget(next);
        }
    }

    /// A waiter of `owner` left before its turn came.
    fn forget_if_idle(&self, owner: Owner) {
        self.state.lock().expect("fair gate lock").forget(owner);
    }
}

impl GateState {
    fn start(&mut self, owner: Owner) {
        *self.holding.entry(owner).or_default() += 1;
        self.vtime.entry(owner).or_insert(self.floor);
    }

    fn stop(&mut self, owner: Owner) {
        if let Some(n) = self.holding.get_mut(&owner) {
            *n -= 1;
            if *n == 0 {
                self.holding.remove(&owner);
            }
        }
        self.forget(owner);
    }

    /// Drop an owner's virtual time once it neither holds nor waits: it
    /// starts from the floor when it comes back, and the maps stay as small
    /// as the set of owners at work.
    fn forget(&mut self, owner: Owner) {
        if !self.holding.contains_key(&owner) && !self.waiters.contains_key(&owner) {
            self.vtime.remove(&owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;

    #[tokio::test]
    async fn the_tenant_that_had_the_least_goes_first() {
        let gate = FairGate::new(1);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let held = gate.turn(a).await;
        // Tenant A queues three more guests, then B one.
        let mut a_waiters: Vec<_> = (0..3).map(|_| Box::pin(gate.turn(a))).collect();
        for w in &mut a_waiters {
            assert!(w.as_mut().now_or_never().is_none());
        }
        let mut b_waiter = Box::pin(gate.turn(b));
        assert!(b_waiter.as_mut().now_or_never().is_none());
        assert!(gate.contended());

        std::thread::sleep(Duration::from_millis(5));
        drop(held); // A used 5 ms
        let b_turn = b_waiter
            .as_mut()
            .now_or_never()
            .expect("B, ahead of A's three");
        assert!(a_waiters[0].as_mut().now_or_never().is_none());
        // B's next guest comes before A's while B has used less.
        let mut b_again = Box::pin(gate.turn(b));
        assert!(b_again.as_mut().now_or_never().is_none());
        drop(b_turn);
        let b_turn = b_again.as_mut().now_or_never().expect("B again");
        drop(b_turn);
        let first_a = a_waiters[0].as_mut().now_or_never().expect("then A");
        drop(first_a);
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
        let state = gate.state.lock().unwrap();
        assert!(state.vtime.is_empty() && state.holding.is_empty());
    }
}
