//! DynamoDB's real failures, injected by the proxy, at the shipped defaults.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::at_once;
use crate::dynamo_proxy::{DynamoProxy, Faults};
use crate::helpers::{dynamodb_endpoint, spawn_shipped_with, uid, TestApp};

/// Sends one message until it is answered, as the app does: the same clientMessageId every
/// time, after the Retry-After it was given (or a second). Returns the answer and the tries.
async fn send_until_answered(app: &TestApp, client: &reqwest::Client, user: &str, body: &Value) -> (Value, u32) {
    let url = format!("{}{}", app.url, coach_api::api::CHAT_PATH);
    for attempt in 1..=30 {
        let r = client.post(&url).header("x-user-id", user).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let wait = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(1u64).min(2);
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == 200 {
            return (v, attempt);
        }
        assert!(matches!(status, 409 | 503), "{user}: {status} {v}");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    panic!("{user}: {body} never answered");
}

/// The service at its shipped defaults, its DynamoDB calls through a fault proxy seeded `seed`.
async fn behind_proxy(seed: u64) -> (DynamoProxy, TestApp) {
    let proxy = DynamoProxy::start(&dynamodb_endpoint(), seed).await;
    let endpoint = proxy.endpoint.clone();
    let app = spawn_shipped_with(move |c| c.dynamodb_endpoint = Some(endpoint)).await;
    (proxy, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_conflicts_and_lost_answers_lose_nothing_and_store_each_turn_once() {
    let (proxy, app) = behind_proxy(12).await;
    proxy.set_faults(Faults { throttle: 0.05, conflict: 0.10, lost_answer: 0.04, latency: Duration::ZERO });

    let golfers: Vec<String> = (0..16).map(|g| format!("golfer-fault-{g:02}")).collect();
    let runs = golfers.iter().enumerate().map(|(g, user)| {
        let app = &app;
        let client = app.client_from(u8::try_from(2 + g).unwrap());
        async move {
            let mut tries = 0;
            for m in 0..6 {
                crate::logs::sensitive(user);
                let body = json!({ "message": format!("{user} message {m}"), "clientMessageId": format!("fault-{user}-{m}") });
                let (answer, t) = send_until_answered(app, &client, user, &body).await;
                assert!(answer["message"]["content"].is_string(), "{answer}");
                tries += t;
            }
            tries
        }
    });
    let tries: u32 = futures::future::join_all(runs).await.into_iter().sum();
    let injected: Vec<_> = proxy.calls().into_iter().filter_map(|c| c.fault).collect();
    println!("faults: 96 messages answered in {tries} sends; {} faults injected of {} calls", injected.len(), proxy.calls().len());
    assert!(injected.len() > 20, "the proxy injected faults: {}", injected.len());

    // Each turn stored exactly once (deferred writes included: wait for them).
    proxy.set_faults(Faults::default());
    let now = chrono::Utc::now();
    let started = Instant::now();
    for user in &golfers {
        loop {
            let turns = app.store.day_turns(&uid(user), now).await.unwrap();
            let mut messages: Vec<String> = turns.iter().map(|t| t.user_message.content.clone()).collect();
            messages.sort();
            let expected: Vec<String> = (0..6).map(|m| format!("{user} message {m}")).collect();
            if messages == expected {
                break;
            }
            assert!(messages.len() <= 6 && messages.iter().all(|m| expected.contains(m)), "{user}: {messages:?}");
            assert!(started.elapsed() < Duration::from_secs(60), "{user}'s turns never all landed: {messages:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Settled once: every golfer's recorded spend is what the model billed them, exactly
    // (every answer here is usable), and each answered message holds one slot of the hour.
    let cost = coach_api::limits::cost(&app.config.limits, 700, 120);
    let sent = app.model_requests().await;
    for user in &golfers {
        let billed = sent.iter().filter(|r| crate::helpers::prompt_text(r).contains(&format!("{user} message"))).count() as i64;
        let latest = sent.iter().filter(|r| {
            let last = r["messages"].as_array().and_then(|m| m.last()).map(|m| m["content"].as_str().unwrap_or_default().to_string()).unwrap_or_default();
            last.contains(&format!("{user} message"))
        });
        let calls = latest.count() as i64;
        assert_eq!(calls, 6, "{user}: each message reached the model once ({billed} prompts mention them)");
        assert_eq!(app.day_spend(user).await, calls * cost, "{user}: recorded spend is the billed spend");
        assert_eq!(app.hour_count(user).await, 6, "{user}: one slot per message");
    }
}

/// DynamoDB slower than the requests arriving: each call held 250 ms by the proxy while 48
/// golfers ask at once (about 190 calls wanted together in the first wave). The process keeps
/// at most its shipped number of calls in flight (each holds a connection and its buffers),
/// the rest wait their turn within the deadline, and every golfer is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_dynamodb_holds_calls_in_flight_to_the_shipped_bound_and_answers_everyone() {
    let (proxy, app) = behind_proxy(26).await;
    let bound = app.config.dynamodb_max_calls;
    proxy.set_faults(Faults { latency: Duration::from_millis(250), ..Faults::default() });

    let answers = at_once(&app, "golfer-bound", 48, |user| json!({ "message": "How do I stop slicing?", "clientMessageId": format!("bound-{user}") })).await;
    let most = proxy.most_in_flight();
    println!("bound: 48 golfers at once, DynamoDB 250 ms a call: {} calls, at most {most} in flight (bound {bound})", proxy.calls().len());
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(most, bound, "the calls in flight reach the bound and never pass it");
}

/// A store slower than the admission wait: every message is refused with a 503 before the model,
/// and the calls given up on hold their permits until DynamoDB is done with them, so a second
/// burst mostly waits in the process's queue (refused from there, at no cost to the store)
/// instead of adding its calls to those DynamoDB is still working on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_given_up_on_still_count_against_the_bound_until_dynamodb_is_done() {
    let (proxy, app) = behind_proxy(27).await;
    let bound = app.config.dynamodb_max_calls;
    // Longer than the admission wait, shorter than the hold of a call given up on.
    proxy.set_faults(Faults { latency: Duration::from_secs(5), ..Faults::default() });
    assert!(app.config.admission_wait < Duration::from_secs(5) && coach_api::store::GIVEN_UP_HOLD > Duration::from_secs(5));

    let ask = |_: &str| json!({ "message": "Why do I top the ball?" });
    let first = at_once(&app, "golfer-held-0", 40, ask).await;
    let second = at_once(&app, "golfer-held-1", 40, ask).await;
    let most = proxy.most_in_flight();
    let actions = proxy.calls().iter().fold(std::collections::BTreeMap::<String, usize>::new(), |mut m, c| {
        *m.entry(c.action.clone()).or_default() += 1;
        m
    });
    println!("held: 2 × 40 golfers, DynamoDB 5 s a call: {actions:?}, at most {most} in flight (bound {bound})");
    for a in first.iter().chain(&second) {
        assert_eq!(a.status, 503, "{}", a.body);
        crate::helpers::assert_valid(&crate::helpers::schemas().error, &a.body);
    }
    assert!(app.model_requests().await.is_empty(), "no message reached the model");
    // Without the hold, each burst's calls went out beside those DynamoDB was still working on
    // (107 at once here, most of them the second burst's); with it, 48 and 54.
    assert!(most < 2 * bound, "calls DynamoDB still works on count against the bound: {most} in flight (bound {bound})");
}
