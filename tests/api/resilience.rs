//! When things fail: retries with backoff inside the deadline, the circuit breaker, graceful
//! degradation, idempotent retries, concurrent turns, bounded items and storage outages.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{assert_valid, completion, ok_reply, payload, schemas, spawn_full, spawn_with, uid, TestApp, MODEL_PATH};
use coach_api::limits::IpHash;
use coach_api::llm::breaker::BreakerConfig;
use coach_api::store::keys;

/// Answers from a script (the last entry repeats) and records when each request arrived.
#[derive(Clone)]
struct Scripted {
    script: Arc<Vec<ResponseTemplate>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn new(script: Vec<ResponseTemplate>) -> Self {
        Self { script: Arc::new(script), arrivals: Arc::new(Mutex::new(vec![])) }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Respond for Scripted {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut a = self.arrivals.lock().unwrap();
        a.push(Instant::now());
        let i = (a.len() - 1).min(self.script.len() - 1);
        self.script[i].clone()
    }
}

async fn script(app: &TestApp, responses: Vec<ResponseTemplate>) -> Scripted {
    let s = Scripted::new(responses);
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(s.clone()).with_priority(1).mount(&app.model).await;
    s
}

fn fast_retries(c: &mut coach_api::config::Config) {
    c.model.max_attempts = 4;
    c.model.backoff_base = Duration::from_millis(40);
    c.model.backoff_cap = Duration::from_millis(400);
}

async fn assert_fallback(app: &TestApp, user: &str, leak: &str) -> Value {
    let (status, body) = app.chat_json(user, &json!({ "message": "Is the coach there today?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    assert_eq!(body["degraded"], true, "{body}");
    assert_eq!(body["source"], "fallback");
    assert!(!body.to_string().contains(leak), "upstream text leaked: {body}");
    body
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_reply_arrives() {
    let app = spawn_with(fast_retries).await;
    let s = script(
        &app,
        vec![
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}})),
            ok_reply("Back in business: keep the grip light."),
        ],
    )
    .await;
    let (status, body) = app.chat_json("golfer-retry-1", &json!({ "message": "Hello again coach" })).await;
    assert_eq!(status, 200);
    assert_eq!(body["degraded"], false);
    let a = s.arrivals();
    assert_eq!(a.len(), 2);
    assert!(a[1] - a[0] >= Duration::from_millis(990), "waited {:?}", a[1] - a[0]);
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_is_not_waited_for() {
    let app = spawn_with(fast_retries).await;
    let s = script(
        &app,
        vec![ResponseTemplate::new(429)
            .insert_header("retry-after", "120")
            .set_body_json(json!({"error": {"message": "quota window secret-429-text", "type": "rate_limit_error", "param": null, "code": null}}))],
    )
    .await;
    let started = Instant::now();
    assert_fallback(&app, "golfer-retry-2", "secret-429-text").await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(s.arrivals().len(), 1, "no second attempt: the wait does not fit the deadline");
}

#[tokio::test]
async fn persistent_500s_use_every_attempt_with_backoff_then_fall_back() {
    let app = spawn_with(fast_retries).await;
    let s = script(&app, vec![ResponseTemplate::new(500).set_body_string("stack trace: secret-500-text")]).await;
    assert_fallback(&app, "golfer-retry-3", "secret-500-text").await;
    let a = s.arrivals();
    assert_eq!(a.len(), 4, "max_attempts");
    let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
    // Full jitter: each wait is at most its doubling ceiling (40, 80, 160 ms plus request time).
    for (i, g) in gaps.iter().enumerate() {
        assert!(*g <= Duration::from_millis((40 << i) + 250), "gap {i} was {g:?}");
    }
}

#[test]
fn backoff_ceilings_grow_exponentially_up_to_the_cap() {
    // The largest of many jittered waits approaches each attempt's ceiling: 40, 80, 160, 320, 400 (cap).
    let cfg = coach_api::llm::settings::ModelConfig { backoff_base: Duration::from_millis(40), backoff_cap: Duration::from_millis(400), ..Default::default() };
    let ceilings: Vec<u128> = (0..5).map(|a| cfg.backoff_base.saturating_mul(1 << a).min(cfg.backoff_cap).as_millis()).collect();
    assert_eq!(ceilings, [40, 80, 160, 320, 400]);
}

#[tokio::test]
async fn slow_replies_time_out_per_attempt_and_the_deadline_bounds_the_request() {
    let app = spawn_with(|c| {
        fast_retries(c);
        c.model.attempt_timeout = Duration::from_millis(400);
        c.request_time_limit = Duration::from_millis(2500);
        c.deadline_margin = Duration::from_millis(500);
    })
    .await;
    let s = script(&app, vec![ok_reply("too late").set_delay(Duration::from_secs(3))]).await;
    let started = Instant::now();
    assert_fallback(&app, "golfer-slow-1", "too late").await;
    assert!(started.elapsed() < Duration::from_millis(3000), "took {:?}", started.elapsed());
    assert!(s.arrivals().len() >= 2, "timed-out attempts are retried within the deadline");
}

#[tokio::test]
async fn unusable_answers_are_billed_tried_once_more_then_fall_back() {
    for (i, bad) in [
        ResponseTemplate::new(200).set_body_string("{\"choices\": [ not json secret-json-text"),
        ResponseTemplate::new(200).set_body_json(json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": []})),
        ResponseTemplate::new(200).set_body_json(completion(&json!({ "reply": "hi", "mood": "secret-extra-field" }), 10, 10)),
        ResponseTemplate::new(200).set_body_json(completion(&json!("plain text, not the reply object"), 10, 10)),
    ]
    .into_iter()
    .enumerate()
    {
        let app = spawn_with(fast_retries).await;
        let s = script(&app, vec![bad]).await;
        let user = format!("golfer-bad-{i}");
        let body = assert_fallback(&app, &user, "secret-").await;
        assert_eq!(s.arrivals().len(), 2, "case {i}: an unusable answer is tried once more, not blindly again and again");
        // The golfer's message is stored with the fallback, and what the provider billed is
        // charged: the answers with usage at it, the unreadable ones at their worst case.
        let conv = app.store.conversation(&keys::conversation(&uid(&user), chrono::Utc::now())).await.unwrap().unwrap();
        assert_eq!(conv.recent_messages.len(), 2);
        assert_eq!(conv.recent_messages[1].degraded, Some(true));
        let spend = app.day_spend(&user).await;
        assert_eq!(body["usage"]["cost_micro_usd"], spend, "the answer reports what was charged");
        if i >= 2 {
            assert_eq!(spend, 2 * coach_api::limits::cost(&app.config.limits, 10, 10), "case {i}: billed at its usage");
        } else {
            let worst = coach_api::limits::call_worst_case(&app.config.limits);
            assert!(spend > 0 && spend <= 2 * worst, "case {i}: billed at most at its worst case: {spend}");
        }
        assert_eq!(app.hour_count(&user).await, 1, "case {i}: a billed request keeps its slot");
    }
}

#[tokio::test]
async fn connection_failures_are_retried_then_fall_back() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_with(|c| {
        fast_retries(c);
        c.model.base_url = Some(format!("http://127.0.0.1:{port}/v1"));
    })
    .await;
    assert_fallback(&app, "golfer-conn-1", "Connection refused").await;
}

#[tokio::test]
async fn the_breaker_opens_serves_fallbacks_without_calling_then_half_opens_and_recovers() {
    let app = crate::helpers::spawn_with_quick_breaker(Duration::from_millis(800)).await;
    // A provider with a health switch. (wiremock's scoped mocks are not used: dropping one
    // after its list was re-sorted by priority switches off a different mock.)
    #[derive(Clone)]
    struct Provider(Arc<std::sync::atomic::AtomicBool>);
    impl Respond for Provider {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                ok_reply("Back to full coaching.")
            } else {
                ResponseTemplate::new(503).set_body_string("provider-outage-7781")
            }
        }
    }
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(Provider(healthy.clone())).with_priority(1).mount(&app.model).await;
    assert_fallback(&app, "golfer-breaker-1", "provider-outage").await; // 3 failed attempts: the breaker opens
    assert_eq!(app.model_requests().await.len(), 3);

    let started = Instant::now();
    assert_fallback(&app, "golfer-breaker-1", "provider-outage").await;
    assert_eq!(app.model_requests().await.len(), 3, "open: the model is not called");
    assert!(started.elapsed() < Duration::from_millis(500), "served at once");

    healthy.store(true, std::sync::atomic::Ordering::SeqCst); // the provider recovers
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (status, body) = app.chat_json("golfer-breaker-1", &json!({ "message": "Is the coach back?" })).await;
    assert_eq!((status, body["degraded"].clone()), (200, json!(false)), "the half-open probe succeeds: {body}");
    assert_eq!(app.model_requests().await.len(), 4);
    let (_, body) = app.chat_json("golfer-breaker-1", &json!({ "message": "Still there?" })).await;
    assert_eq!(body["degraded"], false, "closed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_requests_at_a_thirty_percent_fault_rate_lose_nothing_and_charge_only_successes() {
    #[derive(Clone)]
    struct Faulty(Arc<Mutex<u64>>);
    impl Respond for Faulty {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            let mut n = self.0.lock().unwrap();
            *n += 1;
            // A fixed pseudo-random pattern: 30 in every 100 attempts fail, in mixed ways.
            match (*n * 37) % 100 {
                0..=9 => ResponseTemplate::new(500).set_body_string("fault"),
                10..=19 => ResponseTemplate::new(429).set_body_json(json!({"error": {"message": "rl", "type": "rate_limit_error", "param": null, "code": null}})),
                20..=24 => ResponseTemplate::new(200).set_body_string("{broken"),
                25..=29 => ResponseTemplate::new(200).set_body_json(completion(&json!({"reply": 1}), 1, 1)),
                _ => ResponseTemplate::new(200).set_body_json(completion(&payload("Solid plan: keep going."), 650, 90)),
            }
        }
    }
    let app = spawn_full(
        |c| {
            c.model.max_attempts = 2;
            c.model.backoff_base = Duration::from_millis(2);
            c.model.backoff_cap = Duration::from_millis(10);
        },
        // The breaker is exercised on its own above; here every request reaches the faults.
        BreakerConfig { consecutive: 10_000, ratio: 1.1, ..BreakerConfig::default() },
    )
    .await;
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(Faulty(Arc::new(Mutex::new(0)))).with_priority(1).mount(&app.model).await;

    let users: Vec<String> = (0..50).map(|i| format!("golfer-fault-{i}")).collect();
    let mut results = vec![];
    for wave in 0..10 {
        let calls = users.iter().enumerate().map(|(i, u)| {
            let app = &app;
            async move { app.chat_json(u, &json!({ "message": format!("Wave {wave} from golfer {i}") })).await }
        });
        results.extend(join_all(calls).await);
    }
    assert_eq!(results.len(), 500);
    let mut charged = 0i64;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        assert_valid(&schemas().chat_response, body);
        charged += body["usage"]["cost_micro_usd"].as_i64().unwrap_or(0);
    }
    let degraded = results.iter().filter(|(_, b)| b["degraded"] == true).count();
    assert!(degraded > 0 && degraded < 100, "{degraded} fallbacks");
    let now = chrono::Utc::now();
    let mut stored = 0;
    let mut spend = 0;
    for u in &users {
        let conv = app.store.conversation(&keys::conversation(&uid(u), now)).await.unwrap().unwrap();
        stored += conv.recent_messages.len();
        spend += app.day_spend(u).await;
        for wave in 0..10 {
            let n = conv.recent_messages.iter().filter(|m| m.content.starts_with(&format!("Wave {wave} from"))).count();
            assert_eq!(n, 1, "{u}'s wave {wave} message stored exactly once");
        }
    }
    assert_eq!(stored, 1000, "every accepted message with its reply or fallback");
    assert_eq!(spend, charged, "stored spend is the sum of the successful calls' costs");
    assert_eq!(app.global_held().await, charged, "the global budget holds exactly what was spent");
}

#[tokio::test]
async fn a_duplicate_client_message_id_gets_the_identical_answer_with_one_model_call() {
    let app = spawn_with(|_| {}).await;
    let body = json!({ "message": "Same question twice?", "clientMessageId": "retry-0001-abcd" });
    let first = app.chat("golfer-idem-1", &body).await.text().await.unwrap();
    let second = app.chat("golfer-idem-1", &body).await.text().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.model_requests().await.len(), 1);
    let conv = app.store.conversation(&keys::conversation(&uid("golfer-idem-1"), chrono::Utc::now())).await.unwrap().unwrap();
    assert_eq!(conv.recent_messages.len(), 2, "stored once");
    assert_eq!(app.hour_count("golfer-idem-1").await, 1, "charged once");
    // Another golfer's same id is a different message.
    assert_eq!(app.chat_json("golfer-idem-2", &body).await.0, 200);
    assert_eq!(app.model_requests().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicates_resolve_to_one_model_call() {
    let app = spawn_with(|_| {}).await;
    script(&app, vec![ok_reply("One answer for all of you.").set_delay(Duration::from_millis(800))]).await;
    let body = json!({ "message": "Tapping send many times", "clientMessageId": "burst-0001-abcd" });
    let results = join_all((0..10).map(|_| app.chat_json("golfer-idem-3", &body))).await;
    assert_eq!(app.model_requests().await.len(), 1);
    let ok: Vec<&Value> = results.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    let conflicts: Vec<&Value> = results.iter().filter(|(s, _)| *s == 409).map(|(_, b)| b).collect();
    assert_eq!(ok.len() + conflicts.len(), 10);
    assert!(!ok.is_empty());
    assert!(ok.windows(2).all(|w| w[0] == w[1]), "every success is the same answer");
    for c in conflicts {
        assert_valid(&schemas().error, c);
        assert_eq!(c["code"], "conflict");
    }
    // Once answered, a late duplicate gets the stored answer.
    let (status, late) = app.chat_json("golfer-idem-3", &body).await;
    assert_eq!((status, &late), (200, ok[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_messages_to_one_conversation_all_survive() {
    let app = spawn_with(|c| {
        c.limits.requests_per_hour = 100;
        c.max_recent_messages = 10;
    })
    .await;
    let user = "golfer-concurrent-1";
    let bodies: Vec<Value> = (0..20).map(|i| json!({ "message": format!("Concurrent note {i:02}") })).collect();
    let results = join_all(bodies.iter().map(|b| app.chat_json(user, b))).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    let conv = app.store.conversation(&keys::conversation(&uid(user), chrono::Utc::now())).await.unwrap().unwrap();
    let summary = conv.summary.clone().unwrap_or_default();
    let kept = conv.recent_messages.len();
    let folded = summary.lines().count();
    assert_eq!(kept + folded, 40, "all 40 messages are kept or folded into the summary");
    for i in 0..20 {
        let note = format!("Concurrent note {i:02}");
        let here = conv.recent_messages.iter().any(|m| m.content == note) || summary.contains(&note);
        assert!(here, "{note} lost");
    }
    assert_eq!(app.store.day_turns(&uid(user), chrono::Utc::now()).await.unwrap().len(), 20, "twenty turns, each written once");
}

#[tokio::test]
async fn a_long_day_of_the_largest_turns_keeps_every_item_small() {
    let app = spawn_with(|_| {}).await;
    let user = uid("golfer-marathon");
    let now = chrono::Utc::now();
    let conversation: coach_api::models::ConversationId = keys::conversation(&user, now).try_into().unwrap();
    // The largest turns the service can store: a 1,000-character message and a capped reply.
    let msg = |role, text: String| coach_api::models::ChatMessage {
        content: text,
        degraded: None,
        message_id: uuid::Uuid::new_v4().to_string(),
        role,
        swing_reference: Some("swing-marathon-001".into()),
        timestamp: coach_api::clock::timestamp(now),
        tokens_used: 400,
    };
    let stored = serde_json::from_value::<coach_api::models::StoredResponse>(json!({
        "request_id": uuid::Uuid::new_v4().to_string(), "source": "gpt-4o", "degraded": false,
        "usage": { "prompt_tokens": 1100, "completion_tokens": 400, "total_tokens": 1500, "token_limit": 1500, "cost_micro_usd": 6750 },
        "quota": { "requests_limit_hour": 15, "requests_remaining_hour": 0, "hour_resets_at": "2026-11-25T08:00:00.000Z",
                   "spend_limit_micro_usd_day": 5000000, "spend_remaining_micro_usd_day": 0, "day_resets_at": "2026-11-26T00:00:00.000Z" }
    }))
    .unwrap();
    let mut newest: Option<coach_api::models::TurnItem> = None;
    let mut largest = 0;
    for i in 0..300 {
        let turn = coach_api::conversation::Turn {
            user_message: msg(coach_api::models::Role::User, format!("{i} {}", "q".repeat(995))),
            reply: msg(coach_api::models::Role::Assistant, format!("{i} {}", "a".repeat(coach_api::safety::MAX_REPLY_CHARS - 6))),
            tokens: 800,
            proposal: None,
            own_swings: &[],
            latest_score: Some(70),
        };
        let key = keys::turn(&user, &format!("{i:04}-{}", "c".repeat(59)));
        let place = coach_api::conversation::Placement { user: user.clone(), conversation: conversation.clone(), now };
        let item = coach_api::conversation::next_turn(place, newest.as_ref().map(coach_api::conversation::RecentTurn::from).as_ref(), &turn, stored.clone(), format!("hash-{i}"));
        assert!(app.store.create_turn(&key, &item).await.unwrap(), "DynamoDB accepts it");
        let raw = app.raw_item(&key).await.unwrap();
        largest = largest.max(raw.iter().map(|(k, v)| k.len() + size(v)).sum::<usize>());
        newest = Some(item);
    }
    // A turn is written once and never grows: the day's length does not change its size.
    assert!(largest < 6 * 1024, "the largest turn is {largest} bytes");
    let back = app.store.conversation(conversation.as_str()).await.unwrap().unwrap();
    assert_eq!(back.recent_messages.len(), app.config.max_recent_messages);
    assert_eq!(back.total_tokens_used, 300 * 800);
    assert!(back.summary.unwrap_or_default().chars().count() <= coach_api::conversation::MAX_SUMMARY_CHARS);
}

/// DynamoDB's item size: attribute names plus values, as UTF-8 (numbers count ~their digits).
fn size(v: &aws_sdk_dynamodb::types::AttributeValue) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::S(s) | A::N(s) => s.len(),
        A::L(l) => 3 + l.iter().map(|x| 1 + size(x)).sum::<usize>(),
        A::M(m) => 3 + m.iter().map(|(k, x)| 1 + k.len() + size(x)).sum::<usize>(),
        A::Bool(_) | A::Null(_) => 1,
        _ => 0,
    }
}

/// A DynamoDB Local of this test's own, on a file so it keeps its data across a restart.
struct OwnDynamo {
    port: u16,
    dir: tempdir::Dir,
    child: Option<std::process::Child>,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("ddb-outage-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl OwnDynamo {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut d = Self { port, dir: tempdir::Dir::new(), child: None };
        d.restart();
        d
    }

    fn restart(&mut self) {
        let jar = std::env::var("DYNAMODB_LOCAL_DIR").expect("DYNAMODB_LOCAL_DIR is set by scripts/test");
        let child = std::process::Command::new("java")
            .arg(format!("-Djava.library.path={jar}/DynamoDBLocal_lib"))
            .args(["-jar", &format!("{jar}/DynamoDBLocal.jar"), "-sharedDb", "-dbPath"])
            .arg(&self.dir.0)
            .args(["-port", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("java starts");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "DynamoDB Local did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(1500));
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnDynamo {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storage_outage_answers_what_the_model_answered_refuses_the_rest_early_and_stores_the_turn_when_it_returns() {
    let mut ddb = tokio::task::spawn_blocking(OwnDynamo::start).await.unwrap();
    let endpoint = format!("http://127.0.0.1:{}", ddb.port);
    let app = spawn_with(|c| c.dynamodb_endpoint = Some(endpoint.clone())).await;
    script(&app, vec![ok_reply("Good question.").set_delay(Duration::from_millis(1500))]).await;
    let user = "golfer-outage-1";
    assert_eq!(app.chat_json(user, &json!({ "message": "Before the outage" })).await.0, 200);

    // Storage dies while a request waits on the model: admitted, then it cannot store the turn.
    let during = json!({ "message": "During the outage" });
    let in_flight = app.chat_json(user, &during);
    let killer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ddb.stop();
    };
    let ((status, body), ()) = tokio::join!(in_flight, killer);
    // The model answered: the golfer gets the answer, marked as not stored yet.
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    assert_eq!((body["stored"].clone(), body["message"]["content"].clone()), (json!(false), json!("Good question.")));

    // While it is down, requests are refused before the model, in the coach's voice.
    let calls = app.model_requests().await.len();
    let (status, body) = app.chat_json(user, &json!({ "message": "Still down?" })).await;
    assert_eq!((status, body["code"].clone()), (503, json!("unavailable")));
    assert!(body["message"].as_str().unwrap_or_default().contains("coaching notes"));
    assert_eq!(app.model_requests().await.len(), calls, "not sent to the model");

    // It comes back: the deferred turn lands (once), the deferred release runs.
    let mut ddb = tokio::task::spawn_blocking(move || {
        ddb.restart();
        ddb
    })
    .await
    .unwrap();
    let now = chrono::Utc::now();
    let waited = Instant::now();
    while app.store.conversation(&keys::conversation(&uid(user), now)).await.ok().flatten().map(|c| c.recent_messages.len()) != Some(4) || app.hour_count(user).await != 2 {
        assert!(waited.elapsed() < Duration::from_secs(40), "the deferred turn or release never landed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let conv = app.store.conversation(&keys::conversation(&uid(user), now)).await.unwrap().unwrap();
    assert_eq!(conv.recent_messages[2].content, "During the outage", "the answered turn is stored");
    let cost = coach_api::limits::cost(&app.config.limits, 700, 120);
    assert_eq!(app.day_spend(user).await, 2 * cost, "both answered turns settled, once each");
    assert_eq!(app.number(&keys::ip_hour_quota(&IpHash::keyed("test-key", "127.0.0.1"), now), "request_count").await, 2);
    assert_eq!(app.chat_json(user, &json!({ "message": "After the outage" })).await.0, 200);
    ddb.stop();
}

/// A TCP proxy in front of DynamoDB Local. While `hold` is set it forwards requests at once
/// but holds every response for `delay`: DynamoDB acts, and the service hears nothing in time.
struct SlowAnswers {
    endpoint: String,
    hold: Arc<std::sync::atomic::AtomicBool>,
}

impl SlowAnswers {
    async fn start(upstream: String, delay: Duration) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let hold = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let held = hold.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let held = held.clone();
                tokio::spawn(async move {
                    let (mut client_rd, mut client_wr) = client.into_split();
                    let (mut server_rd, mut server_wr) = server.into_split();
                    let requests = tokio::spawn(async move { tokio::io::copy(&mut client_rd, &mut server_wr).await });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if held.load(Ordering::SeqCst) {
                            tokio::time::sleep(delay).await;
                        }
                        if client_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    requests.abort();
                });
            }
        });
        Self { endpoint, hold }
    }

    fn hold(&self, on: bool) {
        self.hold.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admission_that_gets_no_answer_is_resolved_and_given_back() {
    let upstream = crate::helpers::dynamodb_endpoint().trim_start_matches("http://").to_string();
    let proxy = SlowAnswers::start(upstream, Duration::from_secs(3)).await;
    let endpoint = proxy.endpoint.clone();
    // A test of the admission's wait itself: it gives up sooner than the shipped 3 s.
    let app = spawn_with(|c| {
        c.dynamodb_endpoint = Some(endpoint);
        c.admission_wait = Duration::from_millis(1200);
    })
    .await;
    let user = "golfer-unanswered-1";
    let body = json!({ "message": "Is my grip too strong?", "clientMessageId": "unanswered-0001" });

    // DynamoDB applies the admission; its answer (and the SDK's retries' answers) arrive late.
    proxy.hold(true);
    let (status, error) = app.chat_json(user, &body).await;
    assert_eq!(status, 503, "{error}");
    assert_valid(&schemas().error, &error);
    assert_eq!(error["code"], "unavailable");
    assert!(app.model_requests().await.is_empty(), "an unanswered admission never reaches the model");
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.hold(false);

    // The admission stood in DynamoDB; the service resolves it and gives everything back.
    let now = chrono::Utc::now();
    let quota = keys::user_quota(&uid(user), now);
    let claim = keys::turn(&uid(user), "unanswered-0001");
    let waited = Instant::now();
    while app.hour_count(user).await != 0 || app.raw_item(&claim).await.is_some() {
        assert!(waited.elapsed() < Duration::from_secs(30), "the unanswered admission was never given back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(app.raw_item(&quota).await.is_some(), "the admission had been applied, then released");
    assert_eq!(app.day_spend(user).await, 0);
    assert_eq!(app.global_held().await, 0);
    assert_eq!(app.number(&keys::ip_hour_quota(&IpHash::keyed("test-key", "127.0.0.1"), now), "request_count").await, 0);

    // The app's retry with the same id is answered as a first request.
    let (status, answer) = app.chat_json(user, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(app.hour_count(user).await, 1);
}

/// A model endpoint's absurd Retry-After (2^64 − 1 seconds) once overflowed an Instant and
/// panicked the request: it is capped, and a wait past the deadline is not waited for.
#[tokio::test]
async fn an_absurd_retry_after_is_capped_not_a_panic() {
    let app = spawn_with(fast_retries).await;
    script(
        &app,
        vec![ResponseTemplate::new(429)
            .insert_header("retry-after", "18446744073709551615")
            .set_body_json(json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}}))],
    )
    .await;
    let started = Instant::now();
    let body = assert_fallback(&app, "golfer-retry-after-1", "slow down").await;
    assert!(started.elapsed() < Duration::from_secs(5), "not waited for: {:?}", started.elapsed());
    assert_eq!(body["usage"]["cost_micro_usd"], 0, "a 429 bills nothing");
    // The service is still there.
    assert_eq!(app.chat_json("golfer-retry-after-2", &json!({ "message": "Still up?" })).await.0, 200);
}

/// A message asked just before UTC midnight and answered after it still belongs to its day,
/// and its themes carry into the next day (a turn once stamped at commit time hid them).
#[tokio::test]
async fn a_turn_answered_after_midnight_keeps_its_days_themes_for_the_next_day() {
    let app = spawn_with(|_| {}).await;
    let proposal = json!({ "reply": "Count one-two.", "primary_focus": "Midnight tempo", "secondary_focus": null, "improvement": null, "swing_reference": null, "memory": [] });
    script(&app, vec![ResponseTemplate::new(200).set_body_json(completion(&proposal, 700, 120)).set_delay(Duration::from_millis(1500))]).await;
    let now = chrono::Utc::now();
    let midnight = coach_api::clock::next_day(now);
    app.state.clock.advance(midnight - chrono::Duration::milliseconds(700) - now);
    let (status, first) = app.chat_json("golfer-midnight-1", &json!({ "message": "Late-night range thoughts" })).await;
    assert_eq!(status, 200, "{first}");
    assert!(app.state.clock.now() > midnight, "answered after midnight");
    assert_eq!(first["coaching_themes"]["primary_focus"], "Midnight tempo");
    let session = first["coaching_themes"]["session_count"].as_i64().unwrap();
    app.state.clock.advance(chrono::Duration::minutes(10));
    let (_, second) = app.chat_json("golfer-midnight-1", &json!({ "message": "Still at the range" })).await;
    assert_eq!(second["coaching_themes"]["primary_focus"], "Midnight tempo", "carried: {second}");
    assert_eq!(second["coaching_themes"]["session_count"].as_i64().unwrap(), session, "midnight crossed inside one conversation");
    assert_ne!(first["conversation_id"], second["conversation_id"], "a new day's conversation view");
    app.state.clock.advance(chrono::Duration::hours(8));
    let (_, third) = app.chat_json("golfer-midnight-1", &json!({ "message": "Morning now" })).await;
    assert_eq!(third["coaching_themes"]["primary_focus"], "Midnight tempo", "carried: {third}");
    assert_eq!(third["coaching_themes"]["session_count"].as_i64().unwrap(), session + 1, "back after a night's sleep: a new session");
}

/// A clientMessageId names one message: reused with another message it is refused, never
/// answered with the first message's answer (which would leave the second unanswered).
#[tokio::test]
async fn a_client_message_id_reused_for_another_message_is_refused() {
    let app = spawn_with(|_| {}).await;
    let first = json!({ "message": "How do I stop slicing?", "clientMessageId": "reuse-0001-abcd" });
    assert_eq!(app.chat_json("golfer-reuse-1", &first).await.0, 200);
    let other = json!({ "message": "And my putting?", "clientMessageId": "reuse-0001-abcd" });
    let (status, body) = app.chat_json("golfer-reuse-1", &other).await;
    assert_eq!(status, 422, "{body}");
    assert_valid(&schemas().error, &body);
    assert_eq!(body["fields"][0]["field"], "/clientMessageId");
    assert_eq!(app.model_requests().await.len(), 1, "not answered from the first message");
    assert_eq!(app.chat_json("golfer-reuse-1", &first).await.0, 200, "the same message is still a retry");
    assert_eq!(app.model_requests().await.len(), 1);
    let conv = app.store.conversation(&keys::conversation(&uid("golfer-reuse-1"), chrono::Utc::now())).await.unwrap().unwrap();
    assert_eq!(conv.recent_messages.len(), 2, "only the first message was stored");
}

/// After a model outage the app retries with the same clientMessageId: it gets a real answer,
/// not the fallback ("send your question again in a minute") for 24 hours.
#[tokio::test]
async fn a_fallback_is_not_the_answer_kept_for_its_client_message_id() {
    let app = spawn_with(fast_retries).await;
    script(&app, vec![ResponseTemplate::new(500), ResponseTemplate::new(500), ResponseTemplate::new(500), ResponseTemplate::new(500), ok_reply("Now the real answer.")]).await;
    let body = json!({ "message": "Is the coach there?", "clientMessageId": "fallback-0001-abcd" });
    let (status, first) = app.chat_json("golfer-fallback-id", &body).await;
    assert_eq!((status, first["degraded"].clone()), (200, json!(true)), "{first}");
    let (status, second) = app.chat_json("golfer-fallback-id", &body).await;
    assert_eq!((status, second["degraded"].clone()), (200, json!(false)), "the retry is answered anew: {second}");
    assert_eq!(second["message"]["content"], "Now the real answer.");
    let (_, third) = app.chat_json("golfer-fallback-id", &body).await;
    assert_eq!(third, second, "and that answer is the one kept for the id");
    let conv = app.store.conversation(&keys::conversation(&uid("golfer-fallback-id"), chrono::Utc::now())).await.unwrap().unwrap();
    assert_eq!(conv.recent_messages.len(), 4, "the message was saved with the fallback, then answered");
}
