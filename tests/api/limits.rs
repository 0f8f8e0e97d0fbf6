//! Cost protection under concurrency: every admission is one conditional transaction, so
//! limits are exact, refusals consume nothing, and settlement leaves the true cost.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{assert_valid, schemas, spawn_with, MODEL_PATH};
use coach_api::limits;
use coach_api::limits::IpHash;
use coach_api::store::keys;

// The bursts (one golfer's 100, many golfers behind one IP, a golfer's and everyone's
// spend budget) are in tests/load/: at the shipped defaults, alone.

#[tokio::test]
async fn a_refusal_at_one_counter_consumes_no_other() {
    let app = spawn_with(|c| c.limits.requests_per_hour = 2).await;
    let user = "golfer-refused-1";
    for _ in 0..2 {
        assert_eq!(app.chat_json(user, &json!({ "message": "Counting my swings today" })).await.0, 200);
    }
    let now = chrono::Utc::now();
    let ip_key = keys::ip_hour_quota(&IpHash::keyed("test-key", "127.0.0.1"), now);
    let before = (app.number(&ip_key, "request_count").await, app.day_spend(user).await, app.global_held().await);

    let r = app.chat(user, &json!({ "message": "One more swing question" })).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry_after: u64 = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=3600).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(r.headers().get("ratelimit-remaining").and_then(|v| v.to_str().ok()), Some("0"));
    let body: Value = r.json().await.unwrap();
    assert_valid(&schemas().error, &body);
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(body["retry_after_seconds"], retry_after);
    assert_eq!(body["quota"]["requests_remaining_hour"], 0);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("all 2 coaching messages") && message.contains("Premium"), "{message}");

    let after = (app.number(&ip_key, "request_count").await, app.day_spend(user).await, app.global_held().await);
    assert_eq!(before, after, "the refused request changed no counter");
    assert_eq!(app.model_requests().await.len(), 2);
}

#[tokio::test]
async fn a_failed_model_call_leaves_spend_and_the_hour_count_as_they_were() {
    let app = spawn_with(|c| {
        c.model.max_attempts = 2;
        c.model.backoff_base = Duration::from_millis(5);
    })
    .await;
    Mock::given(method("POST"))
        .and(path(MODEL_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded: internal trace id 1234"))
        .with_priority(1)
        .mount(&app.model)
        .await;
    let user = "golfer-fail-1";
    let (status, body) = app.chat_json(user, &json!({ "message": "Will this one reach the coach?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    assert_eq!(body["degraded"], true);
    assert_eq!(body["source"], "fallback");
    assert_eq!(body["usage"]["cost_micro_usd"], 0);
    assert_eq!(body["quota"]["requests_remaining_hour"], 15, "the slot came back");
    assert!(!body.to_string().contains("exploded"), "no upstream text reaches the client");
    assert_eq!(app.model_requests().await.len(), 2, "two attempts");

    let now = chrono::Utc::now();
    assert_eq!(app.hour_count(user).await, 0);
    assert_eq!(app.day_spend(user).await, 0);
    assert_eq!(app.global_held().await, 0);
    assert_eq!(app.number(&keys::ip_hour_quota(&IpHash::keyed("test-key", "127.0.0.1"), now), "request_count").await, 0);
}

#[tokio::test]
async fn successful_answers_carry_usage_quota_and_ratelimit_headers() {
    let app = spawn_with(|_| {}).await;
    let r = app.chat("golfer-quota-1", &json!({ "message": "How much do I have left?" })).await;
    assert_eq!(r.status().as_u16(), 200);
    let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(h("ratelimit-limit").as_deref(), Some("15"));
    assert_eq!(h("ratelimit-remaining").as_deref(), Some("14"));
    let body: Value = r.json().await.unwrap();
    let actual = limits::cost(&app.config.limits, 700, 120);
    assert_eq!(body["usage"]["cost_micro_usd"], actual);
    assert_eq!(body["quota"]["spend_remaining_micro_usd_day"], 5_000_000 - actual);
    assert_eq!(body["quota"]["requests_remaining_hour"], 14);
}

/// RateLimit-Reset counts to the next hour on the service's clock (a dev run ahead of the
/// machine's clock, a test's moved clock), as `hour_resets_at` does.
#[tokio::test]
async fn the_ratelimit_reset_counts_on_the_services_clock() {
    let app = spawn_with(|_| {}).await;
    let now = app.state.clock.now();
    let next_hour = coach_api::clock::next_hour(now + chrono::Duration::days(2));
    app.state.clock.advance(next_hour - chrono::Duration::seconds(90) - now);
    let r = app.chat("golfer-quota-reset", &json!({ "message": "When does my hour start again?" })).await;
    assert_eq!(r.status().as_u16(), 200);
    let reset: i64 = r.headers().get("ratelimit-reset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap();
    assert!((1..=90).contains(&reset), "RateLimit-Reset {reset} s, but the service's hour ends within 90 s");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["quota"]["hour_resets_at"], coach_api::clock::timestamp(next_hour));
}

#[tokio::test]
async fn after_a_long_day_the_model_receives_the_newest_history_within_the_budget() {
    let app = spawn_with(|c| c.max_recent_messages = 40).await;
    let user = "golfer-long-day";
    for i in 0..12 {
        let message = format!("Round {i} notes: {}", "I hit the ball fat on the par threes and thin on the par fives, ".repeat(12));
        assert_eq!(app.chat_json(user, &json!({ "message": message.chars().take(1000).collect::<String>() })).await.0, 200);
    }
    let (status, _) = app.chat_json(user, &json!({ "message": "What is the one thing to fix first?" })).await;
    assert_eq!(status, 200);
    let sent = app.model_requests().await;
    let last = sent.last().cloned().unwrap_or_default();
    let messages = last["messages"].as_array().cloned().unwrap_or_default();
    let counted = coach_api::tokens::count_chat(messages.iter().map(|m| (m["role"].as_str().unwrap_or(""), m["content"].as_str().unwrap_or(""))));
    let max_tokens = last["max_tokens"].as_u64().unwrap_or(0) as usize;
    assert!(counted + max_tokens + coach_api::llm::response_format_tokens() <= 1500, "{counted} + {max_tokens}");
    let text = crate::helpers::prompt_text(&last);
    assert!(text.contains("Round 11 notes") && !text.contains("Round 0 notes"), "oldest history dropped first");
    assert!(messages.last().and_then(|m| m["content"].as_str()).unwrap_or_default().contains("one thing to fix first"));
}
