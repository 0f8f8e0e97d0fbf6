//! The limits under bursts, at the shipped defaults but the limit each test is about: exact
//! admissions, refusals that consume nothing, settlement to the actual cost.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{assert_valid, schemas, slow_model, spawn_shipped_with, TestApp};
use coach_api::limits;
use coach_api::limits::IpHash;
use coach_api::store::keys;

/// Sends `n` messages at once, from `user(i)`; returns the statuses and bodies.
async fn burst(app: &TestApp, n: usize, user: impl Fn(usize) -> String) -> Vec<(u16, Value)> {
    let calls = (0..n).map(|i| {
        let u = user(i);
        async move { app.chat_json(&u, &json!({ "message": format!("Burst message number {i}") })).await }
    });
    join_all(calls).await
}

fn count(results: &[(u16, Value)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_golfers_behind_one_ip_share_the_ip_limit_exactly() {
    let app = spawn_shipped_with(|c| c.limits.ip_requests_per_hour = 20).await;
    for rep in 0..5 {
        let before = app.model_requests().await.len();
        let results = burst(&app, 100, |i| format!("golfer-ip-{rep}-{i}")).await;
        let reached = app.model_requests().await.len() - before;
        // The hour's IP counter is shared by every repetition: only the first can be admitted.
        let expected = if rep == 0 { 20 } else { 0 };
        assert_eq!((count(&results, 200), count(&results, 429), reached), (expected, 100 - expected, expected), "repetition {rep}");
    }
    let ip_key = keys::ip_hour_quota(&IpHash::keyed("test-key", "127.0.0.1"), chrono::Utc::now());
    assert_eq!(app.number(&ip_key, "request_count").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_for_k_worst_case_requests_admits_at_most_k_and_settles_to_actual_cost() {
    const K: u64 = 7;
    let worst = limits::worst_case_cost(&coach_api::limits::Limits::default()) as u64;
    // 14 messages: within the shipped 15 an hour, so only the spend budget refuses.
    let app = spawn_shipped_with(|c| c.limits.spend_per_user_day_micro = K * worst).await;
    // The model answers slowly, so every admission is decided before any settlement refunds.
    slow_model(&app, Duration::from_secs(4)).await;
    let user = "golfer-budget-1";
    let results = burst(&app, 14, |_| user.to_string()).await;
    let admitted = count(&results, 200) as u64;
    let others: Vec<u16> = results.iter().map(|(s, _)| *s).filter(|s| *s != 200 && *s != 429).collect();
    assert_eq!(admitted, K, "exactly K fit the budget; other statuses: {others:?}");
    assert_eq!(app.model_requests().await.len() as u64, K);
    assert_eq!(count(&results, 429) as u64, 14 - K);

    let actual = limits::cost(&app.config.limits, 700, 120);
    assert_eq!(app.day_spend(user).await, actual * K as i64, "settled to the sum of actual costs");
    assert_eq!(app.day_tokens(user).await, 820 * K as i64);
    let reported: i64 = results.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b["usage"]["cost_micro_usd"].as_i64().unwrap_or(0)).sum();
    assert_eq!(reported, actual * K as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_global_daily_cap_holds_across_golfers_with_503_at_capacity() {
    const K: u64 = 5;
    let worst = limits::worst_case_cost(&coach_api::limits::Limits::default()) as u64;
    // 50 golfers behind one IP: within the shipped 60 an hour, so only the budget refuses.
    let app = spawn_shipped_with(|c| c.limits.spend_total_day_micro = K * worst).await;
    slow_model(&app, Duration::from_secs(4)).await;
    let results = burst(&app, 50, |i| format!("golfer-global-{i}")).await;
    assert_eq!(count(&results, 200) as u64, K);
    assert_eq!(count(&results, 503) as u64, 50 - K);
    let refused = results.iter().find(|(s, _)| *s == 503).map(|(_, b)| b.clone()).unwrap_or_default();
    assert_valid(&schemas().error, &refused);
    assert_eq!(refused["code"], "at_capacity");
    assert!(refused["message"].as_str().unwrap_or_default().contains("capacity"));
    // The process's slices hold exactly the settled spend; the day's leases stay within the cap.
    assert_eq!(app.global_held().await, limits::cost(&app.config.limits, 700, 120) * K as i64);
    let leased = app.number(&keys::global_day_spend(chrono::Utc::now()), "leased_micro").await;
    assert!(leased <= (K * worst) as i64, "leased {leased}");
}
