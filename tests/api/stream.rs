//! `POST /api/chat/coaching/stream` against a model that streams its answer: the reply shows
//! while it is written, nothing unsafe shows even for a moment, what is stored is what was
//! shown, and a golfer who hangs up is still billed exactly and finds the answer stored.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::helpers::completion::split_even;
use crate::helpers::{assert_valid, payload, schemas, spawn_shipped_with, TestApp};
use crate::stream_model::{Script, StreamModel};
use coach_api::api::CHAT_STREAM_PATH;

/// An app whose model is `model`, at the shipped defaults.
async fn app_with(model: &StreamModel) -> TestApp {
    let url = model.base_url.clone();
    spawn_shipped_with(move |c| c.model.base_url = Some(url)).await
}

async fn post_stream(app: &TestApp, user: &str, body: &Value) -> reqwest::Response {
    app.post(CHAT_STREAM_PATH, user, body).await
}

/// Reads server-sent events as they arrive: each `data:` JSON with when it arrived.
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Events { body: response.bytes_stream().boxed(), buffer: String::new() }
    }

    async fn next(&mut self) -> Option<(Instant, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let event: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event {data:?}: {e}"));
                assert_valid(&schemas().chat_stream, &event);
                return Some((Instant::now(), event));
            }
            let chunk = self.body.next().await?.unwrap_or_else(|e| panic!("stream: {e}"));
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    async fn all(mut self) -> Vec<(Instant, Value)> {
        let mut out = vec![];
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// What the golfer sees after each event.
fn screens(events: &[(Instant, Value)]) -> Vec<String> {
    let mut shown = String::new();
    let mut out = vec![];
    for (_, e) in events {
        match e["type"].as_str() {
            Some("delta") => shown.push_str(e["text"].as_str().unwrap_or_default()),
            Some("replace") => shown = e["text"].as_str().unwrap_or_default().to_string(),
            _ => continue,
        }
        out.push(shown.clone());
    }
    out
}

async fn stored_reply(app: &TestApp, user: &str) -> Option<String> {
    let (status, conversation) = app.read(reqwest::Method::GET, user, "/api/chat/coaching/conversation").await;
    if status != 200 {
        return None;
    }
    let messages = conversation["messages"].as_array()?;
    messages.iter().rev().find(|m| m["role"] == "assistant").and_then(|m| m["content"].as_str()).map(str::to_string)
}

const REPLY: &str = "Great question. Your tempo is rushing at the top, so the club gets steep and cuts across the ball. \
    Try a slow one-two count: one on the way back, two as you turn through. Hit ten balls at half speed, then build up.";

#[tokio::test]
async fn the_reply_shows_while_it_is_written_and_the_deltas_are_what_is_stored() {
    let content = payload(REPLY).to_string();
    let model = StreamModel::start(Script::new(split_even(&content, 12), Duration::from_millis(80), (700, 120))).await;
    let app = app_with(&model).await;

    let response = post_stream(&app, "stream-alice", &json!({ "message": "Why do I slice?" })).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = Events::new(response).all().await;

    let written = model.written();
    assert_eq!(written.len(), 12, "the model wrote 12 pieces");
    let first_delta = events.iter().find(|(_, e)| e["type"] == "delta").map(|(t, _)| *t).expect("a delta event");
    assert!(
        first_delta < written[6],
        "the first delta arrived {:?} after the model's first piece; half the answer was written after {:?}",
        first_delta - written[0],
        written[6] - written[0]
    );
    let deltas = events.iter().filter(|(_, e)| e["type"] == "delta").count();
    assert!(deltas >= 6, "the reply arrives in many deltas, not one: {deltas}");

    let shown = screens(&events).pop().unwrap_or_default();
    let (_, last) = events.last().expect("events");
    assert_eq!(last["type"], "done");
    assert_eq!(last["response"]["message"]["content"], shown.as_str(), "done carries what was shown");
    assert_eq!(last["response"]["usage"]["prompt_tokens"], 700, "settled at the streamed usage");
    assert_eq!(last["response"]["usage"]["completion_tokens"], 120);
    assert_eq!(stored_reply(&app, "stream-alice").await.as_deref(), Some(shown.as_str()), "stored is what was shown");

    // The request's EMF line (emitted as the stream ends) has its time to the first words,
    // well before its end: the model wrote for 11 more gaps (880 ms) after its first piece.
    let mut line = None;
    for _ in 0..50 {
        line = app.emf_lines().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| v.get("FirstDeltaTime").is_some());
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = line.expect("an EMF line with FirstDeltaTime");
    let (first, total) = (line["FirstDeltaTime"].as_f64().unwrap_or(-1.0), line["ResponseTime"].as_f64().unwrap_or(0.0));
    assert!(first > 0.0 && first + 500.0 < total, "first delta {first} ms, response {total} ms");

    let sent = model.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["stream"], true);
    assert_eq!(sent[0]["stream_options"]["include_usage"], true);
    // Structured outputs write the keys in the schema's order: `reply` must come first.
    let properties = sent[0]["response_format"]["json_schema"]["schema"]["properties"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>());
    assert_eq!(properties.unwrap_or_default().first().map(String::as_str), Some("reply"));
}

#[tokio::test]
async fn a_link_an_email_and_markup_split_across_chunks_never_show() {
    let reply = "Nice work today! Read the drill at https://evil.example/slice-fix and mail pro@golf.example with your video. \
        <b>Keep</b> your **head** still, see [this](https://phish.example/x) and call +1 415-555-0132. Rules: https://www.usga.org/rules ok.";
    let content = payload(reply).to_string();
    // Cut inside each thing that must not show.
    let mut pieces = vec![];
    let mut rest = content.as_str();
    for cut in ["https://ev", "il.example/sl", "mail pro", "@golf.ex", "<", "b>Keep</", "**he", "[thi", "s](https://ph", "+1 41", "5-555"] {
        let at = rest.find(cut).map(|i| i + cut.len()).unwrap_or_else(|| panic!("{cut} in {rest}"));
        pieces.push(rest[..at].to_string());
        rest = &rest[at..];
    }
    pieces.push(rest.to_string());
    let model = StreamModel::start(Script::new(pieces, Duration::from_millis(20), (650, 90))).await;
    let app = app_with(&model).await;

    let events = Events::new(post_stream(&app, "stream-bob", &json!({ "message": "Any drills?" })).await).all().await;
    let screens = screens(&events);
    assert!(screens.len() > 3, "the reply streamed: {screens:?}");
    for screen in &screens {
        for never in ["evil", "pro@", "@golf", "<", "**", "phish", "](", "415", "555-0132"] {
            assert!(!screen.contains(never), "{never:?} was shown: {screen:?}");
        }
    }
    let last = screens.last().cloned().unwrap_or_default();
    assert!(last.contains("https://www.usga.org/rules"), "an allowed link stays: {last}");
    assert!(last.contains("Keep your head still"), "{last}");
    assert_eq!(stored_reply(&app, "stream-bob").await.as_deref(), Some(last.as_str()));
}

#[tokio::test]
async fn a_golfer_who_hangs_up_is_billed_at_the_streamed_usage_and_the_retry_returns_the_stored_answer() {
    let content = payload(REPLY).to_string();
    let model = StreamModel::start(Script::new(split_even(&content, 12), Duration::from_millis(80), (710, 130))).await;
    let app = app_with(&model).await;
    let body = json!({ "message": "Why do I slice?", "clientMessageId": "5b0c3e8e-6a43-4a51-9a8e-1f2b3c4d5e6f" });

    let mut events = Events::new(post_stream(&app, "stream-carol", &body).await);
    for _ in 0..2 {
        let (_, e) = events.next().await.expect("an event");
        assert_eq!(e["type"], "delta");
    }
    drop(events); // the golfer closes the app

    let started = Instant::now();
    let stored = loop {
        if let Some(reply) = stored_reply(&app, "stream-carol").await {
            break reply;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the turn was not stored after the client left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(stored.starts_with("Great question."), "{stored}");
    let billed = coach_api::limits::Billed { prices: app.config.limits.prices, prompt_tokens: 710, completion_tokens: 130, ..Default::default() };
    let cost = coach_api::limits::billed_cost(&billed);
    assert_eq!(app.day_spend("stream-carol").await, cost, "spend settled at the streamed usage");

    // The retry, streamed or not, is the stored answer; the model is not asked again.
    let events = Events::new(post_stream(&app, "stream-carol", &body).await).all().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1["type"], "done");
    assert_eq!(events[0].1["response"]["message"]["content"], stored.as_str());
    let (status, json) = app.chat_json("stream-carol", &body).await;
    assert_eq!(status, 200);
    assert_eq!(json["message"]["content"], stored.as_str());
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn a_stream_that_breaks_is_asked_again_the_screen_starts_over_and_both_calls_are_billed() {
    let content = payload(REPLY).to_string();
    let script = Script { drop_first_after: Some(6), ..Script::new(split_even(&content, 12), Duration::from_millis(30), (700, 120)) };
    let model = StreamModel::start(script).await;
    let app = app_with(&model).await;

    let events = Events::new(post_stream(&app, "stream-erin", &json!({ "message": "Why do I slice?" })).await).all().await;
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e["type"].as_str().unwrap_or_default()).collect();
    let restart = kinds.iter().position(|k| *k == "replace").expect("a replace when the coach started over");
    assert!(kinds[..restart].contains(&"delta"), "the first attempt showed text before it broke: {kinds:?}");
    assert_eq!(events[restart].1["text"], "", "the screen is cleared");
    let shown = screens(&events).pop().unwrap_or_default();
    let (_, last) = events.last().expect("events");
    assert_eq!(last["type"], "done");
    assert_eq!(last["response"]["message"]["content"], shown.as_str());
    assert_eq!(last["response"]["degraded"], false);
    assert_eq!(model.requests().len(), 2);
    // The broken call had no usage: it is billed at its worst case (the whole reply budget),
    // the second at its streamed usage.
    let usage = &last["response"]["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap_or(0) > 700, "{usage}");
    assert_eq!(usage["completion_tokens"].as_u64(), Some(120 + u64::from(app.config.limits.max_reply_tokens)), "{usage}");
    assert_eq!(app.day_spend("stream-erin").await, usage["cost_micro_usd"].as_i64().unwrap_or(-1));
    assert_eq!(stored_reply(&app, "stream-erin").await.as_deref(), Some(shown.as_str()));
}

#[tokio::test]
async fn bad_input_and_refusals_are_json_errors_before_any_event() {
    let model = StreamModel::start(Script::new(vec![payload("x").to_string()], Duration::ZERO, (1, 1))).await;
    let app = app_with(&model).await;
    let response = post_stream(&app, "stream-dave", &json!({ "message": "" })).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap_or_default();
    assert_valid(&schemas().error, &body);
    let foreign = json!({ "message": "hi", "conversationId": "conv_someone-else_20261126" });
    assert_eq!(post_stream(&app, "stream-dave", &foreign).await.status(), 403);
    // Found only after admission, still before the coach is asked: JSON, and the hour's slot
    // given back.
    let unknown_swing = post_stream(&app, "stream-dave", &json!({ "message": "This swing?", "swingId": "swing-nobody-999" })).await;
    assert_eq!(unknown_swing.status(), 404);
    assert_eq!(unknown_swing.headers()["content-type"], "application/json");
    let body: Value = unknown_swing.json().await.unwrap_or_default();
    assert_valid(&schemas().error, &body);
    assert_eq!(body["code"], "not_found");
    assert_eq!(app.hour_count("stream-dave").await, 0, "the reservation was given back");
    assert!(model.requests().is_empty());
}
