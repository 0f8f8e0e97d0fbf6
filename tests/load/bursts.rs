//! The seed's load at the shipped defaults (no raised timeouts or limits): bursts of distinct
//! golfers and of one golfer against DynamoDB Local, with a model that takes 150 ms.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{assert_valid, prompt_text, schemas, slow_model, spawn_shipped, TestApp};

/// One message from each of `golfers` at once (each from its own loopback address); returns
/// (status, body, marker, latency) per request.
async fn wave(app: &TestApp, wave: usize, golfers: usize) -> Vec<(u16, Value, String, Duration)> {
    let marker = |user: &str| format!("load-marker-w{wave}-{user}");
    let answers = crate::at_once(app, "golfer-load", golfers, |user| {
        let marker = marker(user);
        crate::logs::sensitive(&marker);
        json!({ "message": format!("How is my tempo? {marker}"), "clientMessageId": format!("msg-{marker}") })
    })
    .await;
    answers.into_iter().map(|a| (a.status, a.body, marker(&a.user), a.took)).collect()
}

/// This process's CPU time so far (service and test client: they share the process), from
/// `/proc/self/stat`'s utime and stime in Linux's clock ticks of 10 ms.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok())).sum();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1);
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_waves_of_a_hundred_golfers_are_served_at_the_shipped_defaults() {
    let app = spawn_shipped().await;
    slow_model(&app, Duration::from_millis(150)).await;
    let mut all = vec![];
    let mut cpu = vec![];
    for w in 0..3 {
        let before = process_cpu();
        all.extend(wave(&app, w, 100).await);
        cpu.push(process_cpu().saturating_sub(before));
    }
    let reached: HashSet<String> = app
        .model_requests()
        .await
        .iter()
        .map(prompt_text)
        // The message asked about is the prompt's last; earlier turns' markers come before it.
        .filter_map(|t| t.split_whitespace().rfind(|w| w.starts_with("load-marker-")).map(str::to_string))
        .collect();
    let ok = all.iter().filter(|(s, ..)| *s == 200).count();
    let mut latencies: Vec<Duration> = all.iter().map(|(.., d)| *d).collect();
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    let errors_after_model: Vec<_> = all.iter().filter(|(s, _, m, _)| *s != 200 && reached.contains(m)).map(|(s, v, ..)| (*s, v["code"].clone())).collect();
    let statuses: std::collections::BTreeMap<u16, usize> = all.iter().fold(Default::default(), |mut m, (s, ..)| {
        *m.entry(*s).or_default() += 1;
        m
    });
    let per_wave: Vec<String> = all
        .chunks(100)
        .map(|w| {
            let slowest = w.iter().map(|(.., d)| *d).max().unwrap_or_default();
            format!("{} answered, slowest {slowest:.2?}", w.iter().filter(|(s, ..)| *s == 200).count())
        })
        .collect();
    println!("load: {ok}/300 answered 200 {statuses:?}; p50 {p50:?}, p99 {p99:?}; {} reached the model; waves: {per_wave:?}; this process's CPU per wave: {cpu:?}", reached.len());
    assert_eq!(reached.len(), ok, "every answered message reached the model once, and only those");
    assert!(errors_after_model.is_empty(), "requests that reached the model were answered with errors: {errors_after_model:?}");
    assert!(ok >= 294, "at least 98% answered 200: {ok}/300 {statuses:?}");
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_golfer_sending_a_hundred_at_once_gets_exactly_fifteen_answers_five_times_over() {
    let app = spawn_shipped().await;
    slow_model(&app, Duration::from_millis(150)).await;
    for burst in 0..5 {
        let user = format!("golfer-burst-{burst}");
        let tasks = (0..100).map(|i| {
            let client = app.client_from(u8::try_from(2 + i).unwrap());
            let url = format!("{}{}", app.url, coach_api::api::CHAT_PATH);
            let user = user.clone();
            async move {
                let body = json!({ "message": format!("Burst {burst} message {i}") });
                let r = client.post(url).header("x-user-id", &user).json(&body).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        });
        let before = app.model_requests().await.len();
        let results = futures::future::join_all(tasks).await;
        let calls = app.model_requests().await.len() - before;
        let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((ok, limited, calls), (15, 85, 15), "burst {burst}: {statuses:?}");
        for (status, body) in &results {
            let validator = if *status == 200 { &schemas().chat_response } else { &schemas().error };
            assert_valid(validator, body);
        }
        assert_eq!(app.hour_count(&user).await, 15, "burst {burst}: the counter holds exactly the admitted");
    }
}
