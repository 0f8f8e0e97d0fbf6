//! What admission took for one message, and the one place that decides what is given back.
//!
//! A [`Reservation`] holds the counter keys, the worst-case spend reserved on the golfer's
//! day and on this process's slice of the global budget, the claim on the clientMessageId
//! and, when the admission got no definite answer, the transaction to resolve. A message
//! that is answered settles it ([`Reservation::settle`]: the actual cost replaces the worst
//! case); every other exit after admission gives it back whole ([`Reservation::release`]).

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

#[derive(Debug, Clone)]
pub struct Reservation {
    pub keys: CounterKeys,
    /// The worst-case spend held on the golfer's day (micro-dollars).
    pub reserved_micro: i64,
    /// The day (`yyyymmdd`) and amount held on this process's slice of the global budget.
    pub global: Option<(String, i64)>,
    /// The claim this request holds on its clientMessageId, when the app sent one.
    pub claim_key: Option<String>,
    /// Set when the admission itself got no answer: it may or may not stand.
    pub unsure: Option<Unsure>,
}

/// What an answered message settles: its cost, and whether its hour's slot is given back
/// (the coach could not answer and nothing was billed).
#[derive(Debug, Clone, Copy)]
pub struct Settlement {
    pub cost_micro: i64,
    pub release_slots: bool,
}

impl Reservation {
    /// The turn's write for an answered message: its spend settled at `s.cost_micro` on the
    /// golfer's day (the worst case reserved is replaced), and what the global slice held
    /// beyond the cost given back to it now (the slice is this process's own memory).
    pub async fn settle<'a>(&'a self, key: &'a str, turn: &'a crate::models::TurnItem, s: Settlement, budget: &GlobalBudget) -> TurnWrite<'a> {
        if let Some((day, reserved)) = &self.global {
            budget.refund(day, reserved - s.cost_micro).await;
        }
        TurnWrite {
            key,
            turn,
            claim: self.claim_key.as_deref(),
            keys: &self.keys,
            spend_delta_micro: s.cost_micro - self.reserved_micro,
            release_slots: s.release_slots,
            memory: None,
        }
    }

    /// Gives back what this process's global slice held for the message (the counters'
    /// part was never taken: the admission was refused).
    pub async fn refund_global(&self, budget: &GlobalBudget) {
        if let Some((day, amount)) = &self.global {
            budget.refund(day, *amount).await;
        }
    }

    /// Gives back the whole reservation and the claim: nothing was stored. An unsure
    /// admission is resolved first, and only one that stands is given back. When the table
    /// cannot take this within a moment, it is retried in the background (within
    /// `RELEASE_RETRY_FOR`), so an outage leaves no reservation behind.
    pub async fn release(self, store: &Store, budget: &Arc<GlobalBudget>) {
        self.refund_global(budget).await;
        let started = Instant::now();
        let release = Arc::new(Release { unsure: self.unsure, give_back: GiveBack::new(self.keys, self.reserved_micro, self.claim_key) });
        let applied = deadline::scope(Instant::now() + RELEASE_INLINE_WAIT, release.apply(store)).await;
        crate::stats::store_wave(started.elapsed());
        if applied.is_ok() {
            return;
        }
        tracing::warn!("release deferred: storage unavailable; retrying in the background");
        let store = store.clone();
        RELEASE_BACKOFF.in_background("release", RELEASE_RETRY_FOR, move || {
            let (store, release) = (store.clone(), release.clone());
            async move {
                match release.apply(&store).await {
                    Ok(()) => Tried::Done,
                    Err(_) => Tried::Again,
                }
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
}
