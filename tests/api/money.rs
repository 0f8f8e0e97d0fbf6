//! Counted spend is an upper bound of what the provider bills: every billed call settled,
//! unusable answers handled as outcomes, a breaker that never strands, any model of the table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{completion, on_day, payload, prompt_text, spawn_model, spawn_with, MODEL_PATH};
use coach_api::limits::Limits;

/// A provider that answers by a fixed rotation, and keeps what it billed each golfer (the
/// golfer's name is in the message) at the model's prices.
#[derive(Clone)]
struct BillingProvider {
    kinds: Vec<&'static str>,
    next: Arc<Mutex<usize>>,
    billed: Arc<Mutex<HashMap<String, i64>>>,
    limits: Limits,
}

impl BillingProvider {
    fn answer(kind: &str) -> (Value, u32, u32) {
        let choice = |message: Value, finish: &str| json!({ "index": 0, "message": message, "finish_reason": finish });
        match kind {
            "usable" => (choice(json!({ "role": "assistant", "content": payload("Keep the tempo smooth.").to_string() }), "stop"), 700, 120),
            "cut" => (choice(json!({ "role": "assistant", "content": "{\"reply\": \"Keep the tempo smooth and then" }), "length"), 700, 400),
            "refusal" => (choice(json!({ "role": "assistant", "content": null, "refusal": "I can't help with that." }), "stop"), 700, 12),
            _ => (choice(json!({ "role": "assistant", "content": "{\"answer\": \"off the schema\"}" }), "stop"), 700, 30),
        }
    }
}

impl Respond for BillingProvider {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let text = prompt_text(&body);
        let golfer = text.split_whitespace().find(|w| w.starts_with("golfer-money-")).unwrap_or("?").to_string();
        let kind = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            self.kinds[*n % self.kinds.len()]
        };
        let (choice, prompt, completion_tokens) = Self::answer(kind);
        *self.billed.lock().unwrap().entry(golfer).or_default() += coach_api::limits::cost(&self.limits, u64::from(prompt), u64::from(completion_tokens));
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-money", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [choice],
            "usage": { "prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens }
        }))
    }
}

/// 10 golfers × 6 messages against `kinds`; (golfer, recorded spend from GET /usage, billed).
async fn a_day_of(kinds: Vec<&'static str>) -> Vec<(String, i64, i64)> {
    let app = spawn_with(|_| {}).await;
    let provider = BillingProvider { kinds, next: Arc::new(Mutex::new(0)), billed: Arc::default(), limits: app.config.limits.clone() };
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(provider.clone()).with_priority(1).mount(&app.model).await;
    let golfers: Vec<String> = (0..10).map(|g| format!("golfer-money-{g}")).collect();
    let days = golfers.iter().map(|g| {
        let app = &app;
        async move {
            for m in 0..6 {
                let (status, body) = app.chat_json(g, &json!({ "message": format!("{g} asks question {m}") })).await;
                assert_eq!(status, 200, "{body}");
            }
        }
    });
    futures::future::join_all(days).await;
    let mut out = vec![];
    for g in &golfers {
        let (_, usage) = app.read(Method::GET, g, "/api/chat/coaching/usage").await;
        let q = &usage["quota"];
        let recorded = q["spend_limit_micro_usd_day"].as_i64().unwrap() - q["spend_remaining_micro_usd_day"].as_i64().unwrap();
        let billed = provider.billed.lock().unwrap().get(g).copied().unwrap_or(0);
        out.push((g.clone(), recorded, billed));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_forty_percent_billed_but_unusable_answers_no_golfer_is_charged_less_than_billed() {
    // 4 of 10 answers are billed and unusable: cut at the token limit, refused, off the schema.
    let day = a_day_of(vec!["usable", "cut", "usable", "refusal", "usable", "off-schema", "usable", "cut", "usable", "usable"]).await;
    for (g, recorded, billed) in &day {
        assert!(billed > &0, "{g} was billed");
        assert!(recorded >= billed, "{g}: recorded {recorded} < billed {billed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_every_answer_usable_recorded_spend_is_exactly_what_was_billed() {
    for (g, recorded, billed) in a_day_of(vec!["usable"]).await {
        assert_eq!(recorded, billed, "{g}");
    }
}

#[tokio::test]
async fn a_refusal_is_answered_in_the_coachs_voice_once_and_a_cut_answer_is_asked_for_shorter_once() {
    let app = spawn_with(|_| {}).await;
    let provider = BillingProvider { kinds: vec!["refusal"], next: Arc::default(), billed: Arc::default(), limits: app.config.limits.clone() };
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(provider).with_priority(1).mount(&app.model).await;
    let (status, body) = app.chat_json("golfer-money-r", &json!({ "message": "golfer-money-r wants stock tips" })).await;
    assert_eq!((status, body["degraded"].clone()), (200, json!(false)), "{body}");
    assert!(body["message"]["content"].as_str().unwrap_or_default().contains("outside what I can help with"), "{body}");
    assert_eq!(app.model_requests().await.len(), 1, "a refusal is not retried");
    assert_eq!(body["usage"]["cost_micro_usd"], coach_api::limits::cost(&app.config.limits, 700, 12));
    assert_eq!(app.hour_count("golfer-money-r").await, 1, "the slot of a billed request is kept");

    let app = spawn_with(|_| {}).await;
    let provider = BillingProvider { kinds: vec!["usable", "cut"], next: Arc::default(), billed: Arc::default(), limits: app.config.limits.clone() };
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(provider).with_priority(1).mount(&app.model).await;
    let (status, body) = app.chat_json("golfer-money-c", &json!({ "message": "golfer-money-c asks a long one" })).await;
    assert_eq!((status, body["degraded"].clone()), (200, json!(false)), "the shorter answer is used: {body}");
    let sent = app.model_requests().await;
    assert_eq!(sent.len(), 2, "cut once, asked once more");
    assert!(prompt_text(&sent[1]).contains("was cut off"), "the retry asks for a shorter answer");
    let first = sent[0]["max_completion_tokens"].as_u64().unwrap();
    let second = sent[1]["max_completion_tokens"].as_u64().unwrap();
    assert!(second < first, "the instruction's tokens come out of the reply's budget: {second} vs {first}");
    let l = &app.config.limits;
    assert_eq!(app.day_spend("golfer-money-c").await, coach_api::limits::cost(l, 700, 400) + coach_api::limits::cost(l, 700, 120), "both calls settled");
}

#[tokio::test]
async fn a_cut_answer_is_not_asked_for_again_when_the_instruction_would_leave_under_half_the_reply() {
    // With a 24-token reply limit the instruction to be shorter (about 35 tokens) leaves no
    // budget: a real server refuses `max_tokens: 0` with a 400 (found against the local model).
    let app = spawn_with(|c| c.limits.max_reply_tokens = 24).await;
    // (The provider answers kinds[1] first.)
    let provider = BillingProvider { kinds: vec!["usable", "cut"], next: Arc::default(), billed: Arc::default(), limits: app.config.limits.clone() };
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(provider).with_priority(1).mount(&app.model).await;
    let (status, body) = app.chat_json("golfer-money-n", &json!({ "message": "golfer-money-n asks a long one" })).await;
    assert_eq!((status, body["degraded"].clone(), body["source"].clone()), (200, json!(true), json!("fallback")), "{body}");
    let sent = app.model_requests().await;
    assert_eq!(sent.len(), 1, "no second call with a budget the shorter answer cannot fit");
    assert_eq!(app.day_spend("golfer-money-n").await, coach_api::limits::cost(&app.config.limits, 700, 400), "the cut answer settled at its usage");
}

#[tokio::test]
async fn the_breaker_opens_on_500s_a_401_answers_its_probe_and_the_model_answers_again() {
    let app = crate::helpers::spawn_with_quick_breaker(Duration::from_millis(600)).await;
    #[derive(Clone)]
    struct Provider(Arc<Mutex<u16>>);
    impl Respond for Provider {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            match *self.0.lock().unwrap() {
                200 => ResponseTemplate::new(200).set_body_json(completion(&payload("Back to full coaching."), 700, 120)),
                401 => ResponseTemplate::new(401)
                    .set_body_json(json!({ "error": { "message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } })),
                s => ResponseTemplate::new(s),
            }
        }
    }
    let status = Arc::new(Mutex::new(500u16));
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(Provider(status.clone())).with_priority(1).mount(&app.model).await;
    let ask = |m: &'static str| {
        let app = &app;
        async move { app.chat_json("golfer-money-b", &json!({ "message": m })).await }
    };
    assert_eq!(ask("first").await.1["degraded"], true, "500s: the fallback, and the breaker opens");
    let calls = app.model_requests().await.len();
    assert_eq!(ask("while open").await.1["degraded"], true);
    assert_eq!(app.model_requests().await.len(), calls, "open: no call");
    let emf = crate::helpers::assert_emf(app.emf_lines().last().unwrap());
    assert_eq!(emf["BreakerOpen"], 1, "operators see it");

    *status.lock().unwrap() = 401; // the key was revoked: the probe gets an answer, not an outage
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(ask("probe").await.1["degraded"], true);
    assert_eq!(app.model_requests().await.len(), calls + 1, "one probe");

    *status.lock().unwrap() = 200; // the key is fixed
    let (_, body) = ask("back?").await;
    assert_eq!((body["degraded"].clone(), body["source"].clone()), (json!(false), json!("gpt-6-luna")), "the model answers again: {body}");
}

#[tokio::test]
async fn gpt_4o_gets_max_tokens_and_temperature_and_is_settled_at_its_prices() {
    let app = spawn_model("gpt-4o").await;
    on_day(&app, "2026-12-02"); // before its shutdown
    let (status, body) = app.chat_json("golfer-money-4o", &json!({ "message": "Driver tips?" })).await;
    assert_eq!(status, 200, "{body}");
    let sent = &app.model_requests().await[0];
    assert_eq!((sent["max_tokens"].clone(), sent["temperature"].clone()), (json!(400), json!(0.7)));
    assert!(sent.get("max_completion_tokens").is_none() && sent.get("reasoning_effort").is_none(), "{sent}");
    let id = sent["safety_identifier"].as_str().unwrap_or_default();
    assert!(id.len() >= 16 && !id.contains("golfer-money-4o"), "a keyed hash of the caller: {id}");
    assert_eq!(app.day_spend("golfer-money-4o").await, 700 * 5 / 2 + 120 * 10, "$2.50 and $10 per million");
}

#[tokio::test]
async fn a_reasoning_model_gets_max_completion_tokens_and_no_temperature_and_is_settled_with_cached_and_reasoning_tokens() {
    let app = spawn_model("gpt-6.1-sol").await;
    let usage = json!({
        "prompt_tokens": 700, "completion_tokens": 220, "total_tokens": 920,
        "prompt_tokens_details": { "cached_tokens": 300 }, "completion_tokens_details": { "reasoning_tokens": 100 }
    });
    let mut answer = completion(&payload("Smooth tempo, minimal effort."), 700, 220);
    answer["usage"] = usage;
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(ResponseTemplate::new(200).set_body_json(answer)).with_priority(1).mount(&app.model).await;
    let (status, body) = app.chat_json("golfer-money-5", &json!({ "message": "Iron tips?" })).await;
    assert_eq!((status, body["source"].clone()), (200, json!("gpt-6.1-sol")), "{body}");
    let sent = &app.model_requests().await[0];
    assert_eq!(sent["max_completion_tokens"], 400, "the reply's token limit, reasoning included");
    assert!(sent.get("max_tokens").is_none() && sent.get("temperature").is_none(), "{sent}");
    assert_eq!(sent["reasoning_effort"], "low", "gpt-6.1-sol accepts no effort below low");
    // 400 uncached at $2.50 (cache writes are billed, and usage does not say which tokens were
    // written: each may have been), 300 cached at $0.10, 220 output (100 of them reasoning) at $10.
    assert_eq!(app.day_spend("golfer-money-5").await, 1000 + 30 + 2200);
}

/// The reservation is a guard: dropped unsettled before the model was asked (an exit nobody
/// wrote a release for), it gives back what admission took, in the background; dropped after
/// the model was asked, the worst case stays charged (the provider may bill the call).
#[tokio::test]
async fn a_reservation_dropped_unsettled_gives_itself_back_unless_the_model_was_asked() {
    use coach_api::chat::reservation::{Counters, Reservation};
    use coach_api::store::counters::{AdmitDecision, CounterKeys};
    let app = crate::helpers::spawn_app().await;
    let ip = coach_api::limits::IpHash::keyed("test-key", "127.0.0.1");
    for (user, asked) in [("golfer-guard-free", false), ("golfer-guard-billed", true)] {
        let now = app.state.clock.now();
        let golfer = crate::helpers::uid(user);
        let check = coach_api::limits::quota_check(&app.config.limits, &golfer, &ip, now);
        assert!(matches!(app.store.admit(&check, None, "guard-test").await, Ok(AdmitDecision::Admitted)));
        assert_eq!((app.hour_count(user).await, app.day_spend(user).await), (1, check.cost_micro), "{user}: admitted");
        let mut reservation =
            Reservation::new(&app.store, &app.state.budget, CounterKeys::of(&golfer, &ip, now), check.cost_micro).with_counters(Counters { claim_key: None, unsure: None });
        if asked {
            reservation.billable();
        }
        drop(reservation);
        // A release runs after its backoff's floor (250 ms): waited for up to 5 s, or 1.5 s for one that must not come.
        let deadline = std::time::Instant::now() + if asked { Duration::from_millis(1500) } else { Duration::from_secs(5) };
        while app.hour_count(user).await != 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = (app.hour_count(user).await, app.day_spend(user).await);
        if asked {
            assert_eq!(left, (1, check.cost_micro), "{user}: the model was asked, so the worst case stays");
        } else {
            assert_eq!(left, (0, 0), "{user}: nothing was asked, everything came back");
        }
    }
}
