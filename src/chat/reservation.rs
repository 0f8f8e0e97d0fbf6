//! What admission took for one request, and the one way to give it back.
//!
//! A [`Reservation`] holds the counter keys, the worst-case spend reserved on the golfer's
//! day and on this process's slice of the global budget, the claim on the clientMessageId
//! and, when the admission got no definite answer, the transaction to resolve. Every exit
//! after admission that stores no turn goes through [`Reservation::release`].

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::budget::GlobalBudget;
use crate::store::counters::{CounterKeys, GiveBack};
use crate::store::transact::Unsure;
use crate::store::{deadline, stats, Store, StoreError};

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

impl Reservation {
    /// Gives back the whole reservation and the claim: nothing was stored. An unsure
    /// admission is resolved first, and only one that stands is given back. When the table
    /// cannot take this within a moment, it is retried in the background (within
    /// `RELEASE_RETRY_FOR`), so an outage leaves no reservation behind.
    pub async fn release(self, store: &Store, budget: &Arc<GlobalBudget>) {
        if let Some((day, amount)) = &self.global {
            budget.refund(day, *amount).await;
        }
        let wave = Instant::now();
        let release = Release { unsure: self.unsure, give_back: GiveBack::new(self.keys, self.reserved_micro, self.claim_key) };
        let applied = deadline::scope(Instant::now() + RELEASE_INLINE_WAIT, release.apply(store)).await;
        stats::store_wave(wave.elapsed());
        if applied.is_ok() {
            return;
        }
        tracing::warn!("release deferred: storage unavailable; retrying in the background");
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for attempt in 0.. {
                if started.elapsed() >= RELEASE_RETRY_FOR {
                    break;
                }
                RELEASE_BACKOFF.wait(attempt).await;
                if release.apply(&store).await.is_ok() {
                    tracing::info!("deferred release applied");
                    return;
                }
            }
            // Counters stay charged (never under-charged); they expire with their hour and day.
            tracing::error!("deferred release gave up");
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
