//! Time: the clock the domain runs on (the system clock, or a settable one in tests: a
//! conversation over two simulated days), and every way this service writes a time down.
//! Keys, stored timestamps, reset times and the prompt's date are all formatted here.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};

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

/// The UTC hour of the day in attribute names, `07` (`hour_07`, `ratings_07`).
pub fn hour_of_day(at: DateTime<Utc>) -> String {
    at.format("%H").to_string()
}

/// A [`timestamp`] read back (any RFC 3339 instant is taken).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// A [`date`] read back, `2026-11-25`.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// A [`day_key`] read back, `20261125`.
pub fn parse_day_key(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y%m%d").ok()
}

/// Whole seconds from `now` to the [`timestamp`] `at` (0 when it has passed or does not read).
pub fn seconds_until(at: &str, now: DateTime<Utc>) -> i64 {
    parse_timestamp(at).map_or(0, |t| (t - now).num_seconds().max(0))
}

/// Milliseconds since the epoch on the machine's own clock, whatever the service's clock says:
/// what Lambda's deadline and CloudWatch's timestamps are written in.
pub fn wall_clock_ms() -> i64 {
    Utc::now().timestamp_millis()
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
        assert_eq!(hour_of_day(at), "07");
        assert_eq!(parse_timestamp(&timestamp(at)), Some(at));
        assert_eq!(parse_date(&date(at)), Some(at.date_naive()));
        assert_eq!(parse_day_key(&day_key(at)), Some(at.date_naive()));
        assert_eq!(seconds_until(&timestamp(next_hour(at)), at), 14 * 60 + 30);
        assert_eq!(seconds_until(&timestamp(at), next_hour(at)), 0);
        assert_eq!(seconds_until("not a time", at), 0);
    }
}
