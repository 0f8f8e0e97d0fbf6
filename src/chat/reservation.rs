//! What admission took for one message, as a guard that is either settled or released.
//!
//! A [`Reservation`] holds the counter keys, the worst-case spend reserved on the golfer's
//! day and on this process's slice of the global budget, the claim on the clientMessageId
//! and, when the admission got no definite answer, the transaction to resolve. It has two
//! verbs: [`Reservation::settle`] (the message was answered: the actual cost replaces the
//! worst case, written with the turn) and [`Reservation::release`] (nothing was answered:
//! everything is given back). Dropped while it still holds something, it gives that back by
//! itself in the background, so no exit can leak it; once the model has been asked
//! ([`Reservation::billable`]) a drop keeps the worst case charged instead, since the
//! provider may bill a call whose answer never arrived.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, Tried};
use crate::budget::GlobalBudget;
use crate::store::conversations::TurnWrite;
use crate::store::counters::{CounterKeys, GiveBack};
use crate::store::transact::Unsure;
use crate::store::{deadline, Store, StoreError};

/// How long a release that failed is retried in the background.
pub const RELEASE_RETRY_FOR: Duration = Duration::from_secs(180);
/// How long a failed request waits for its release before answering (then it is background work).
const RELEASE_INLINE_WAIT: Duration = Duration::from_millis(500);
const RELEASE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5)).with_floor(Duration::from_millis(250));

/// The golfer's counters as the admission transaction took them (or may have).
#[derive(Debug)]
pub struct Counters {
    /// The claim this request holds on its clientMessageId, when the app sent one.
    pub claim_key: Option<String>,
    /// Set when the admission itself got no answer: it may or may not stand.
    pub unsure: Option<Unsure>,
}

/// What is still held.
#[derive(Debug, Default)]
struct Held {
    /// The day (`yyyymmdd`) and amount held on this process's slice of the global budget.
    global: Option<(String, i64)>,
    /// The hour's slots, the day's worst case and the claim.
    counters: Option<Counters>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.global.is_none() && self.counters.is_none()
    }
}

/// What admission took; see the module documentation.
#[derive(Debug)]
pub struct Reservation {
    keys: CounterKeys,
    /// The worst-case spend held on the golfer's day (micro-dollars).
    reserved_micro: i64,
    held: Held,
    /// The model has been asked: from here a drop keeps the worst case.
    billable: bool,
    store: Store,
    budget: Arc<GlobalBudget>,
}

/// What an answered message settles: its cost, and whether its hour's slot is given back
/// (the coach could not answer and nothing was billed).
#[derive(Debug, Clone, Copy)]
pub struct Settlement {
    pub cost_micro: i64,
    pub release_slots: bool,
}

/// A settled reservation: what the turn's transaction writes on the counters.
#[derive(Debug)]
pub struct Settled {
    keys: CounterKeys,
    claim_key: Option<String>,
    spend_delta_micro: i64,
    release_slots: bool,
}

impl Settled {
    /// The turn's write under `key`, with this settlement and the claim it replaces.
    pub fn turn_write<'a>(&'a self, key: &'a str, turn: &'a crate::models::TurnItem) -> TurnWrite<'a> {
        TurnWrite { key, turn, claim: self.claim_key.as_deref(), keys: &self.keys, spend_delta_micro: self.spend_delta_micro, release_slots: self.release_slots, memory: None }
    }
}

impl Reservation {
    /// A reservation of `reserved_micro` on the counters at `keys`, holding what admission
    /// took: the global slice's share and the counters (none when the admission was refused).
    pub fn new(store: &Store, budget: &Arc<GlobalBudget>, keys: CounterKeys, reserved_micro: i64) -> Self {
        Self { keys, reserved_micro, held: Held::default(), billable: false, store: store.clone(), budget: budget.clone() }
    }

    /// Holds `amount` of `day` on this process's global slice.
    pub fn with_global(mut self, day: String, amount: i64) -> Self {
        self.held.global = Some((day, amount));
        self
    }

    /// Holds the golfer's counters (and the claim) the admission transaction took or may have.
    pub fn with_counters(mut self, counters: Counters) -> Self {
        self.held.counters = Some(counters);
        self
    }

    /// The worst-case spend held on the golfer's day (micro-dollars).
    pub fn reserved_micro(&self) -> i64 {
        self.reserved_micro
    }

    /// The model is about to be asked: a call may be billed from here, so a drop keeps the
    /// worst case charged instead of giving it back.
    pub fn billable(&mut self) {
        self.billable = true;
    }

    /// Settles an answered message: its spend at `s.cost_micro` on the golfer's day (the worst
    /// case reserved is replaced, in the turn's transaction), and what the global slice held
    /// beyond the cost given back to it now (the slice is this process's own memory).
    pub async fn settle(mut self, s: Settlement) -> Settled {
        let held = std::mem::take(&mut self.held);
        if let Some((day, reserved)) = &held.global {
            self.budget.refund(day, reserved - s.cost_micro).await;
        }
        Settled {
            keys: self.keys.clone(),
            claim_key: held.counters.and_then(|c| c.claim_key),
            spend_delta_micro: s.cost_micro - self.reserved_micro,
            release_slots: s.release_slots,
        }
    }

    /// Gives back everything still held: nothing was answered. An unsure admission is
    /// resolved first, and only one that stands is given back. When the table cannot take
    /// this within a moment, it is retried in the background (within `RELEASE_RETRY_FOR`),
    /// so an outage leaves no reservation behind.
    pub async fn release(mut self) {
        let held = std::mem::take(&mut self.held);
        let Some(release) = give_back(&self.budget, &self.keys, self.reserved_micro, held).await else { return };
        let started = Instant::now();
        let applied = deadline::scope(Instant::now() + RELEASE_INLINE_WAIT, release.apply(&self.store)).await;
        crate::stats::store_wave(started.elapsed());
        if applied.is_err() {
            tracing::warn!("release deferred: storage unavailable; retrying in the background");
            release.in_background(&self.store);
        }
    }
}

/// Gives `held`'s global share back at once; the counters' part as a [`Release`] to apply.
async fn give_back(budget: &GlobalBudget, keys: &CounterKeys, reserved_micro: i64, held: Held) -> Option<Arc<Release>> {
    if let Some((day, amount)) = &held.global {
        budget.refund(day, *amount).await;
    }
    let counters = held.counters?;
    Some(Arc::new(Release { unsure: counters.unsure, give_back: GiveBack::new(keys.clone(), reserved_micro, counters.claim_key) }))
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if self.billable {
            tracing::warn!("a reservation was dropped after the model was asked: its worst case stays charged");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        tracing::warn!("a reservation was dropped unsettled: giving it back in the background");
        let held = std::mem::take(&mut self.held);
        let (keys, reserved_micro, store, budget) = (self.keys.clone(), self.reserved_micro, self.store.clone(), self.budget.clone());
        runtime.spawn(async move {
            if let Some(release) = give_back(&budget, &keys, reserved_micro, held).await {
                release.in_background(&store);
            }
        });
    }
}

/// A release ready to send; applying it again is harmless (both transactions carry tokens).
struct Release {
    unsure: Option<Unsure>,
    give_back: GiveBack,
}

impl Release {
    async fn apply(&self, store: &Store) -> Result<(), StoreError> {
        if let Some(unsure) = &self.unsure {
            if !store.resolve(unsure).await? {
                return Ok(()); // never applied: nothing to give back
            }
        }
        store.give_back(&self.give_back).await
    }

    /// Applies it in the background until it lands (within `RELEASE_RETRY_FOR`).
    fn in_background(self: Arc<Self>, store: &Store) {
        let store = store.clone();
        RELEASE_BACKOFF.in_background("release", RELEASE_RETRY_FOR, move || {
            let (store, release) = (store.clone(), self.clone());
            async move {
                match release.apply(&store).await {
                    Ok(()) => Tried::Done,
                    Err(_) => Tried::Again,
                }
            }
        });
    }
}
