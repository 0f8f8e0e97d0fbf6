//! Quotas and spend: the policy, pure (no I/O; nothing here imports the store or the model
//! client, which import these types instead). What a message may cost, what admitting it asks
//! of the counters, refusals and what is left. Money is integer micro-dollars throughout.
//!
//! The worst case is reserved before the prompt is known, so the reservation can run in the
//! same DynamoDB wave as the context reads: prompt tokens are at most
//! `TOKEN_LIMIT_PER_REQUEST - max_tokens`, so `(limit - max_tokens) × input price +
//! max_tokens × output price` bounds any request. Settlement then charges what the model
//! reports.

use chrono::{DateTime, Utc};

use crate::clock::{next_day, next_hour, timestamp};
use crate::models::{Quota, UserId};

/// Integer micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prices {
    pub input_micro: u64,
    pub cached_input_micro: u64,
    /// Writes to the prompt cache, where the model bills them.
    pub cache_write_micro: Option<u64>,
    pub output_micro: u64,
}

impl Prices {
    /// What an uncached input token may cost: usage does not say which tokens were written to
    /// the cache, so where writes are billed, each may have been one.
    pub fn uncached_input_micro(&self) -> u64 {
        self.input_micro.max(self.cache_write_micro.unwrap_or(0))
    }
}

/// gpt-6-luna's prices: the default row's (a test keeps them equal to the table's).
pub const DEFAULT_PRICES: Prices = Prices { input_micro: 100_000, cached_input_micro: 10_000, cache_write_micro: Some(125_000), output_micro: 500_000 };

/// The limits a deployment sets: tokens per request, requests per hour, spend per day.
/// Prices are the configured model's; counts are integers, money micro-dollars.
#[derive(Debug, Clone)]
pub struct Limits {
    pub token_limit_per_request: u32,
    pub max_reply_tokens: u32,
    pub requests_per_hour: u32,
    pub ip_requests_per_hour: u32,
    pub spend_per_user_day_micro: u64,
    pub spend_total_day_micro: u64,
    /// The model's prices (its row of `prompts/models.json`).
    pub prices: Prices,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            token_limit_per_request: 1500,
            max_reply_tokens: 400,
            requests_per_hour: 15,
            ip_requests_per_hour: 60,
            spend_per_user_day_micro: 5_000_000,
            spend_total_day_micro: 100_000_000,
            prices: DEFAULT_PRICES,
            max_body_bytes: 10 * 1024,
        }
    }
}

/// What one model call billed, or may have: its usage, or (`estimated`) the worst case of a
/// call that was sent and never answered, at the prices of the model called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Billed {
    pub prices: Prices,
    pub prompt_tokens: u64,
    /// Of the prompt tokens, those billed at the cached-input price.
    pub cached_tokens: u64,
    /// Output tokens, reasoning included (billed as output).
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub estimated: bool,
    /// This call's answer is the reply the golfer gets.
    pub used: bool,
}

/// A client IP reduced to a 16-hex-digit keyed hash (the log-hash key): counters and logs
/// never hold the IP, and without the key the hash cannot be reversed by trying all 2^32
/// IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpHash(String);

impl IpHash {
    pub fn keyed(key: &str, ip: &str) -> Self {
        Self(crate::safety::log_hash(key, &format!("ip-counter:{ip}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which counter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    UserHour,
    IpHour,
    UserDay,
    GlobalDay,
}

impl Counter {
    /// The limit's name as templates, logs and metrics know it.
    pub fn label(self) -> &'static str {
        match self {
            Self::UserHour => "user_hour",
            Self::IpHour => "ip_hour",
            Self::UserDay => "user_day",
            Self::GlobalDay => "global_day",
        }
    }
}

/// What a golfer has used this hour and day, this request included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    pub user_hour_count: i64,
    pub user_day_spend_micro: i64,
}

/// What admitting one message asks of the counters: whose they are, when, and the limits
/// with the worst case to reserve. The store turns it into counter items and their expiry.
#[derive(Debug, Clone)]
pub struct QuotaCheck {
    pub user: UserId,
    pub ip: IpHash,
    pub at: DateTime<Utc>,
    pub hour_limit: i64,
    pub ip_hour_limit: i64,
    pub user_day_limit_micro: i64,
    /// The worst case this request can cost, reserved on the golfer's day.
    pub cost_micro: i64,
}

/// Parses "5", "5.00" or "0.0075" into micro-dollars without floating point.
pub fn parse_dollars(v: &str) -> Result<u64, String> {
    let bad = || format!("'{v}' is not an amount in dollars with at most 6 decimals");
    let v = v.trim().trim_start_matches('$');
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let frac_micro: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    whole.checked_mul(1_000_000).and_then(|w| w.checked_add(frac_micro)).ok_or_else(bad)
}

/// Micro-dollars as an amount in dollars, the way [`parse_dollars`] reads it: `5`, `0.25`.
pub fn dollars_text(micro: u64) -> String {
    let (whole, frac) = (micro / 1_000_000, micro % 1_000_000);
    match frac {
        0 => whole.to_string(),
        _ => format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0')),
    }
}

/// Micro-dollars for `tokens` at `per_mtok_micro` micro-dollars per million, rounded up.
pub fn price(tokens: u64, per_mtok_micro: u64) -> i64 {
    let micro = (u128::from(tokens) * u128::from(per_mtok_micro)).div_ceil(1_000_000);
    i64::try_from(micro).unwrap_or(i64::MAX)
}

/// What `prompt_tokens` (none cached) and `completion_tokens` cost at the deployment's
/// model's prices.
pub fn cost(l: &Limits, prompt_tokens: u64, completion_tokens: u64) -> i64 {
    billed_cost(&Billed { prices: l.prices, prompt_tokens, completion_tokens, ..Billed::default() })
}

/// What one model call billed: uncached input, cached input and output (reasoning included)
/// at the prices of the model that billed it.
pub fn billed_cost(b: &Billed) -> i64 {
    let p = &b.prices;
    let cached = b.cached_tokens.min(b.prompt_tokens);
    price(b.prompt_tokens - cached, p.uncached_input_micro()) + price(cached, p.cached_input_micro) + price(b.completion_tokens, p.output_micro)
}

/// Ratings a golfer may send in an hour (they spend no model budget, but each is a write).
pub const RATINGS_PER_HOUR: i64 = 30;

/// Model calls of one request that may be billed: the first, and one more (an answer cut at
/// the token limit asked for again, shorter; or an answer off the schema, or a call that
/// timed out, tried again). Free failures (429, 5xx, a refused connection) do not count.
pub const BILLABLE_CALLS: i64 = 2;

/// The most one model call can cost: a full prompt and a full reply.
pub fn call_worst_case(l: &Limits) -> i64 {
    let prompt = u64::from(l.token_limit_per_request.saturating_sub(l.max_reply_tokens));
    cost(l, prompt, u64::from(l.max_reply_tokens))
}

/// The most any admitted request can cost: what admission reserves.
pub fn worst_case_cost(l: &Limits) -> i64 {
    call_worst_case(l) * BILLABLE_CALLS
}

/// The prompt's share of the per-request token limit.
pub fn prompt_token_limit(l: &Limits) -> usize {
    l.token_limit_per_request.saturating_sub(l.max_reply_tokens) as usize
}

/// What admitting `user`'s message from `ip` at `now` asks of the counters.
pub fn quota_check(l: &Limits, user: &UserId, ip: &IpHash, now: DateTime<Utc>) -> QuotaCheck {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    QuotaCheck {
        user: user.clone(),
        ip: ip.clone(),
        at: now,
        hour_limit: i64::from(l.requests_per_hour),
        ip_hour_limit: i64::from(l.ip_requests_per_hour),
        user_day_limit_micro: clamp(l.spend_per_user_day_micro),
        cost_micro: worst_case_cost(l),
    }
}

/// A request the counters refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub counter: Counter,
    pub retry_after_secs: u64,
    pub resets_at: DateTime<Utc>,
    pub quota: Quota,
}

impl Refusal {
    pub fn new(l: &Limits, counter: Counter, current: i64, now: DateTime<Utc>) -> Self {
        let resets_at = match counter {
            Counter::UserHour | Counter::IpHour => next_hour(now),
            Counter::UserDay | Counter::GlobalDay => next_day(now),
        };
        // What is really left for the counter that fired: nothing.
        let hour_used = i64::from(l.requests_per_hour);
        let day_used = i64::try_from(l.spend_per_user_day_micro).unwrap_or(i64::MAX);
        let snapshot = match counter {
            Counter::UserHour => UsageSnapshot { user_hour_count: current.max(hour_used), user_day_spend_micro: 0 },
            // The golfer's own hour may have room, but this request cannot be sent from here.
            Counter::IpHour => UsageSnapshot { user_hour_count: hour_used, user_day_spend_micro: 0 },
            // Today's budget is spent, the golfer's or everyone's.
            Counter::UserDay | Counter::GlobalDay => UsageSnapshot { user_hour_count: 0, user_day_spend_micro: day_used },
        };
        Self { counter, retry_after_secs: u64::try_from((resets_at - now).num_seconds().max(1)).unwrap_or(1), resets_at, quota: quota(l, snapshot, now) }
    }
}

/// What the golfer has left, from counters read after this request's own write.
pub fn quota(l: &Limits, used: UsageSnapshot, now: DateTime<Utc>) -> Quota {
    let left = |limit: u64, used: i64| limit.saturating_sub(u64::try_from(used.max(0)).unwrap_or(0));
    Quota {
        requests_limit_hour: u64::from(l.requests_per_hour),
        requests_remaining_hour: left(u64::from(l.requests_per_hour), used.user_hour_count),
        hour_resets_at: timestamp(next_hour(now)),
        spend_limit_micro_usd_day: l.spend_per_user_day_micro,
        spend_remaining_micro_usd_day: left(l.spend_per_user_day_micro, used.user_day_spend_micro),
        day_resets_at: timestamp(next_day(now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn dollars_are_written_as_they_are_read() {
        for (micro, text) in [(5_000_000, "5"), (100_000_000, "100"), (250_000, "0.25"), (1_000_001, "1.000001"), (0, "0")] {
            assert_eq!(dollars_text(micro), text);
            assert_eq!(parse_dollars(text), Ok(micro));
        }
    }

    #[test]
    fn gpt4o_prices_in_micro_dollars() {
        let gpt_4o = Prices { input_micro: 2_500_000, cached_input_micro: 1_250_000, cache_write_micro: None, output_micro: 10_000_000 };
        let l = Limits { prices: gpt_4o, ..Limits::default() };
        // 1,000 prompt tokens at $2.50/M = $0.0025; 100 completion tokens at $10/M = $0.001.
        assert_eq!(cost(&l, 1000, 100), 2_500 + 1_000);
        assert_eq!(price(1, 2_500_000), 3, "fractions of a micro-dollar round up");
        // Budget 1,500 with 400 for the reply: 1,100 × 2.5 + 400 × 10, for each of two billable calls.
        assert_eq!(call_worst_case(&l), 2_750 + 4_000);
        assert_eq!(worst_case_cost(&l), 2 * (2_750 + 4_000));
        // Cached input at its price, reasoning as output.
        let b = Billed { prices: gpt_4o, prompt_tokens: 1000, cached_tokens: 400, completion_tokens: 300, reasoning_tokens: 200, ..Billed::default() };
        assert_eq!(billed_cost(&b), 1_500 + 500 + 3_000);
        assert_eq!(prompt_token_limit(&l), 1100);
    }

    #[test]
    fn dollars_parse_to_exact_micro_dollars() {
        assert_eq!(parse_dollars("5").ok(), Some(5_000_000));
        assert_eq!(parse_dollars("100.00").ok(), Some(100_000_000));
        assert_eq!(parse_dollars("0.0075").ok(), Some(7_500));
        assert_eq!(parse_dollars("$2.5").ok(), Some(2_500_000));
        assert!(parse_dollars("1.0000001").is_err());
        assert!(parse_dollars("-1").is_err());
        assert!(parse_dollars("abc").is_err());
    }

    #[test]
    fn where_cache_writes_are_billed_every_uncached_input_token_is_settled_as_one() {
        // gpt-6-luna: $0.10 input, $0.125 cache writes, $0.01 cached, $0.50 output.
        let b = Billed { prices: DEFAULT_PRICES, prompt_tokens: 1000, cached_tokens: 200, completion_tokens: 100, ..Billed::default() };
        assert_eq!(billed_cost(&b), 100 + 2 + 50, "800 uncached at $0.125/M, 200 cached at $0.01/M, 100 out at $0.50/M");
        // The reservation: two calls of 1,100 prompt tokens and 400 reply tokens each.
        assert_eq!(worst_case_cost(&Limits::default()), 2 * (138 + 200));
    }

    #[test]
    fn refusals_reset_at_the_next_hour_or_day() {
        let l = Limits::default();
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 7, 45, 30).single().unwrap_or_default();
        let r = Refusal::new(&l, Counter::UserHour, 15, now);
        assert_eq!(r.retry_after_secs, 14 * 60 + 30);
        assert_eq!(r.quota.requests_remaining_hour, 0);
        let d = Refusal::new(&l, Counter::GlobalDay, 0, now);
        assert_eq!(timestamp(d.resets_at), "2026-11-26T00:00:00.000Z");
        assert_eq!(d.quota.spend_remaining_micro_usd_day, 0, "the global budget is spent: nothing is left today");
        let ip = Refusal::new(&l, Counter::IpHour, 60, now);
        assert_eq!(ip.quota.requests_remaining_hour, 0, "the IP's hour is used up: no request is left this hour");
    }
}
