//! The one retry delay of the crate: exponential with full jitter (a uniform wait between a
//! floor and a ceiling that doubles per attempt up to a cap), after the AWS Architecture
//! Blog's "Exponential Backoff And Jitter". Every retry loop (transaction conflicts, turn
//! writes, unprocessed batch keys, background releases, model calls) takes its delay here.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
    /// No wait is shorter than this (spreads retries that would otherwise fire at once).
    pub floor: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap, floor: Duration::ZERO }
    }

    pub const fn with_floor(self, floor: Duration) -> Self {
        Self { floor, ..self }
    }

    /// The ceiling for retry number `attempt` (0 for the first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap).max(self.floor)
    }

    /// A random wait for retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let low = u64::try_from(self.floor.as_millis()).unwrap_or(u64::MAX);
        let high = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX).max(low);
        Duration::from_millis(rand::rng().random_range(low..=high))
    }

    /// Sleeps for [`Self::delay`].
    pub async fn wait(&self, attempt: u32) {
        tokio::time::sleep(self.delay(attempt)).await;
    }

    /// Runs `attempt` in the background, waiting before each try, until it is [`Tried::Done`]
    /// or [`Tried::Stop`], for at most `within`; logs how it ended as `what`. The one
    /// background retry loop: a release, a turn that could not be stored in time.
    pub fn in_background<F, Fut>(self, what: &'static str, within: Duration, mut attempt: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Tried> + Send,
    {
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            for n in 0.. {
                if started.elapsed() >= within {
                    break;
                }
                self.wait(n).await;
                match attempt().await {
                    Tried::Done => return tracing::info!(what, "background work done"),
                    Tried::Stop => break,
                    Tried::Again => {}
                }
            }
            // What it held stays charged (never under-charged) and expires on its own.
            tracing::error!(what, "background work gave up");
        });
    }
}

/// How one try of background work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tried {
    Done,
    /// Try again after the next wait.
    Again,
    /// Trying again cannot help.
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap_and_delays_stay_inside() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(320)).with_floor(Duration::from_millis(5));
        let ceilings: Vec<u128> = (0..8).map(|a| b.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 160, 320, 320, 320]);
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d >= Duration::from_millis(5) && d <= b.ceiling(attempt), "{d:?} at {attempt}");
        }
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(320), "no overflow on absurd attempts");
    }
}
