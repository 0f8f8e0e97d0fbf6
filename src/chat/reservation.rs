//! What admission took for one request, and the one way to give it back.
//!
//! A [`Reservation`] holds the counter keys, the worst-case spend reserved, the idempotency
//! claim and, when the admission got no definite answer, the transaction to resolve. Every
//! exit after admission that stores no turn goes through [`Reservation::release`].

use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::store::counters::{CounterKeys, GiveBack};
use crate::store::transact::Unsure;
use crate::store::{stats, Store, StoreError};

/// How long a release that failed is retried in the background.
pub const RELEASE_RETRY_FOR: Duration = Duration::from_secs(180);
const RELEASE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5)).with_floor(Duration::from_millis(250));

#[derive(Debug, Clone)]
pub struct Reservation {
    pub keys: CounterKeys,
    /// The worst-case spend held on the user-day and global-day counters (micro-dollars).
    pub reserved_micro: i64,
    /// The idempotency record this request holds, when the app sent a clientMessageId.
    pub claim_key: Option<String>,
    /// Set when the admission itself got no answer: it may or may not stand.
    pub unsure: Option<Unsure>,
}

impl Reservation {
    /// Gives back the whole reservation and the claim: nothing was stored. An unsure
    /// admission is resolved first, and only one that stands is given back. When the table
    /// cannot take this now, it is retried in the background (within `RELEASE_RETRY_FOR`),
    /// so an outage leaves no reservation behind.
    pub async fn release(self, store: &Store) {
        let wave = Instant::now();
        let release = Release { unsure: self.unsure, give_back: GiveBack::new(self.keys, self.reserved_micro, self.claim_key) };
        let applied = release.apply(store).await;
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
