//! A per-instance circuit breaker for the model. Opens after `consecutive` failures in a row
//! or when at least `ratio` of the calls in the last `window` failed (with `min_calls` seen);
//! after `open_for` it lets one probe through (half-open); the probe's success closes it,
//! its failure opens it again. Time is tokio's, so tests can pause it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

pub use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    opened_at: Instant,
    probe_in_flight: bool,
    consecutive_failures: u32,
    recent: VecDeque<(Instant, bool)>,
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Whether a call may go to the model now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Call,
    /// This call is the half-open probe.
    Probe,
    Reject,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                opened_at: Instant::now(),
                probe_in_flight: false,
                consecutive_failures: 0,
                recent: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of plain counters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    pub fn admit(&self) -> Admit {
        let mut g = self.lock();
        match g.state {
            BreakerState::Closed => Admit::Call,
            BreakerState::Open if g.opened_at.elapsed() >= self.cfg.open_for => {
                g.state = BreakerState::HalfOpen;
                g.probe_in_flight = true;
                Admit::Probe
            }
            BreakerState::Open => Admit::Reject,
            BreakerState::HalfOpen if !g.probe_in_flight => {
                g.probe_in_flight = true;
                Admit::Probe
            }
            BreakerState::HalfOpen => Admit::Reject,
        }
    }

    pub fn record(&self, success: bool) {
        let mut g = self.lock();
        let now = Instant::now();
        g.recent.push_back((now, success));
        while g.recent.front().is_some_and(|(t, _)| now.duration_since(*t) > self.cfg.window) {
            g.recent.pop_front();
        }
        if success {
            g.consecutive_failures = 0;
            if g.state == BreakerState::HalfOpen {
                g.state = BreakerState::Closed;
                g.probe_in_flight = false;
                g.recent.clear();
            }
            return;
        }
        g.consecutive_failures += 1;
        let failures = g.recent.iter().filter(|(_, ok)| !ok).count();
        let ratio_trips = g.recent.len() >= self.cfg.min_calls
            && failures as f64 / g.recent.len() as f64 >= self.cfg.ratio;
        if g.state == BreakerState::HalfOpen || g.consecutive_failures >= self.cfg.consecutive || ratio_trips {
            g.state = BreakerState::Open;
            g.opened_at = now;
            g.probe_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            consecutive: 3,
            ratio: 0.5,
            min_calls: 6,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = breaker();
        for _ in 0..3 {
            assert_eq!(b.admit(), Admit::Call);
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admit::Reject);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::Reject, "one probe at a time");
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admit::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(b.admit(), Admit::Probe);
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admit::Reject);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_ratio_without_a_long_streak() {
        let b = breaker();
        for ok in [true, false, true, false, true, false] {
            b.record(ok);
        }
        assert_eq!(b.state(), BreakerState::Open, "3 of 6 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let b = breaker();
        for ok in [false, true, false, true, false] {
            b.record(ok);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
