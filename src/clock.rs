//! Time: the clock the domain runs on (the system clock, or a settable one in tests: a
//! conversation over two simulated days), and every way this service writes a time down.
//! Keys, stored timestamps, reset times and the prompt's date are all formatted here.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, DurationRound, Utc};

#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// A fixed offset from the system clock, so time still moves within a test.
    Offset(Arc<Mutex<Duration>>),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Offset(d) => Utc::now() + d.lock().map(|d| *d).unwrap_or_else(|_| Duration::zero()),
        }
    }

    /// Moves a test clock forward; the system clock is not moved.
    pub fn advance(&self, by: Duration) {
        if let Self::Offset(d) = self {
            if let Ok(mut d) = d.lock() {
                *d += by;
            }
        }
    }
}

/// A stored or reported instant: `2026-11-25T07:45:30.123Z` (fixed width, so strings sort as times).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The start of `at`'s UTC day as a [`timestamp`].
pub fn day_start(at: DateTime<Utc>) -> String {
    format!("{}T00:00:00.000Z", date(at))
}

/// The UTC date, `2026-11-25` (the prompt's `today`, the read API's `date`).
pub fn date(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// The UTC day in keys, `20261125`.
pub fn day_key(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d").to_string()
}

/// The UTC hour in keys, `2026112507`.
pub fn hour_key(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d%H").to_string()
}

/// The time of day a golfer reads in a refusal, `08:00`.
pub fn clock_time(at: DateTime<Utc>) -> String {
    at.format("%H:%M").to_string()
}

pub fn next_hour(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(Duration::hours(1)).unwrap_or(now) + Duration::hours(1)
}

pub fn next_day(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(Duration::days(1)).unwrap_or(now) + Duration::days(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_format_of_one_instant() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 7, 45, 30).single().unwrap_or_default();
        assert_eq!(timestamp(at), "2026-11-25T07:45:30.000Z");
        assert_eq!(day_start(at), "2026-11-25T00:00:00.000Z");
        assert_eq!(date(at), "2026-11-25");
        assert_eq!(day_key(at), "20261125");
        assert_eq!(hour_key(at), "2026112507");
        assert_eq!(clock_time(next_hour(at)), "08:00");
        assert_eq!(timestamp(next_day(at)), "2026-11-26T00:00:00.000Z");
    }
}
