//! A per-instance circuit breaker for the model. It counts provider outages only (timeouts,
//! 429s, 5xx, lost connections): an answer of any kind, usable or not, even a 401, is the
//! provider answering. Opens after `consecutive` outages in a row or when at least `ratio` of
//! the calls in the last `window` were outages (with `min_calls` seen); after `open_for` it
//! lets one probe through (half-open). The probe always resolves: an answer closes the
//! breaker, an outage opens it again, and a probe dropped unanswered (its request went away)
//! counts as an outage. Time is tokio's, so tests can pause it.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

pub use super::settings::BreakerConfig;

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
        Self { cfg, inner: Mutex::new(Inner { state: BreakerState::Closed, opened_at: Instant::now(), probe_in_flight: false, consecutive_failures: 0, recent: VecDeque::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of plain counters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// A permit for one call, or `None` while the breaker is open.
    pub fn permit(&self) -> Option<Permit<'_>> {
        match self.admit() {
            Admit::Reject => None,
            admit => Some(Permit { breaker: self, probe: admit == Admit::Probe, settled: false }),
        }
    }

    pub fn is_open(&self) -> bool {
        self.lock().state == BreakerState::Open
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
        let ratio_trips = g.recent.len() >= self.cfg.min_calls && failures as f64 / g.recent.len() as f64 >= self.cfg.ratio;
        if g.state == BreakerState::HalfOpen || g.consecutive_failures >= self.cfg.consecutive || ratio_trips {
            g.state = BreakerState::Open;
            g.opened_at = now;
            g.probe_in_flight = false;
        }
    }
}

/// One call's place in the breaker; say how it went with [`Permit::answered`] or
/// [`Permit::outage`]. Dropped without either, a probe counts as an outage.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// The provider answered (any status, usable or not).
    pub fn answered(mut self) {
        self.settled = true;
        self.breaker.record(true);
    }

    /// The provider did not answer: a timeout, a 429, a 5xx, a lost connection.
    pub fn outage(mut self) {
        self.settled = true;
        self.breaker.record(false);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.settled {
            self.breaker.record(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { consecutive: 3, ratio: 0.5, min_calls: 6, window: Duration::from_secs(10), open_for: Duration::from_secs(5) })
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
    async fn a_probe_always_resolves_whatever_its_answer() {
        let b = breaker();
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // A probe answered with a 401 (or anything but an outage) closes the breaker.
        let probe = b.permit().unwrap_or_else(|| panic!("half-open lets a probe through"));
        assert!(b.permit().is_none(), "one probe at a time");
        probe.answered();
        assert_eq!(b.state(), BreakerState::Closed);
        // A probe whose request was dropped reopens it, and a later probe is let through.
        for _ in 0..3 {
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(b.permit());
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.permit().is_some(), "not stuck half-open");
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
