//! The global daily budget (`COST_LIMIT_TOTAL`) without a hot item. A process leases slices
//! of the day's budget from `spendall_{day}` (one conditional update per slice) and admits
//! requests against its slice in memory: worst case reserved at admission, the difference to
//! the actual cost given back at settlement, everything given back on release. The leases of
//! a day never add up to more than the limit, so neither can the spend.
//!
//! What a lease costs: budget a process leased and did not use when it stops (or when the
//! day ends) is not used by anyone. Slices shrink as the budget runs down (a 64th of what is
//! left, at most `SLICE_CAP`, at least one request's worst case), so with P processes at
//! most about P slices stand unused: near the end of the budget, P × the worst case.

use tokio::sync::Mutex;

use crate::clock::day_key;
use crate::store::budget::LeaseRequest;
use crate::store::{keys, Store, StoreError};

/// The largest slice a process leases at once.
pub const SLICE_CAP_MICRO: i64 = 1_000_000;

#[derive(Debug, Default)]
struct Lease {
    day: String,
    /// Leased and not reserved by a request.
    left_micro: i64,
    /// Leased in all, this day.
    leased_micro: i64,
    /// The day's budget left for everyone, as of this process's last lease.
    global_left_micro: Option<i64>,
}

#[derive(Debug)]
pub struct GlobalBudget {
    limit_micro: i64,
    lease: Mutex<Lease>,
}

impl GlobalBudget {
    pub fn new(limit_micro: u64) -> Self {
        Self { limit_micro: i64::try_from(limit_micro).unwrap_or(i64::MAX), lease: Mutex::new(Lease::default()) }
    }

    /// Reserves `cost_micro` of `now`'s day: `Ok(false)` when the day's budget cannot take it.
    /// Leasing is single-flight: requests wait for a slice in flight instead of asking too.
    pub async fn reserve(&self, store: &Store, now: chrono::DateTime<chrono::Utc>, cost_micro: i64) -> Result<bool, StoreError> {
        let day = day_key(now);
        let mut lease = self.lease.lock().await;
        if lease.day != day {
            *lease = Lease { day, ..Lease::default() };
        }
        // Leases are never returned to the day's item: once it had too little left for a
        // request, it has for the rest of the day, and nobody is asked again.
        let exhausted = lease.global_left_micro.is_some_and(|left| left < cost_micro);
        if lease.left_micro < cost_micro && !exhausted {
            let global_left = lease.global_left_micro.unwrap_or(self.limit_micro);
            let want = (global_left / 64).clamp(cost_micro, SLICE_CAP_MICRO.max(cost_micro));
            let key = keys::global_day_spend(now);
            let request = LeaseRequest { key, want, at_least: cost_micro, limit_micro: self.limit_micro, expires_at: now.timestamp() + keys::DAY_TTL_SECS };
            let leased = store.lease_budget(&request).await?;
            lease.left_micro += leased.amount_micro;
            lease.leased_micro += leased.amount_micro;
            lease.global_left_micro = Some(leased.left_micro);
        }
        if lease.left_micro < cost_micro {
            return Ok(false);
        }
        lease.left_micro -= cost_micro;
        Ok(true)
    }

    /// Gives `amount_micro` reserved on `day` back to this process's slice.
    pub async fn refund(&self, day: &str, amount_micro: i64) {
        let mut lease = self.lease.lock().await;
        if lease.day == day {
            lease.left_micro += amount_micro.max(0);
        }
    }
}

impl GlobalBudget {
    /// What requests hold of `day`'s slices: reserved by those in flight plus spent by the
    /// settled ones.
    pub async fn held(&self, day: &str) -> i64 {
        let lease = self.lease.lock().await;
        if lease.day != day {
            return 0;
        }
        lease.leased_micro - lease.left_micro
    }
}
