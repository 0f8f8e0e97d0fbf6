//! The coaching chat end to end: context from the store reaches the prompt, the reply is
//! stored, the day's second message sees the first, and the shapes match schema/.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{assert_valid, completion, prompt_text, schemas, spawn_app, spawn_with, MODEL_PATH};
use coach_api::store::keys;

fn today_conversation(user: &str) -> String {
    let u = coach_api::models::UserId::try_from(user.to_string()).unwrap_or_else(|e| panic!("{e}"));
    keys::conversation(&u, chrono::Utc::now())
}

#[tokio::test]
async fn a_demo_golfer_gets_a_reply_built_on_the_latest_swing_and_theme() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, body) = app.chat_json("demo-alice", &json!({ "message": "What should I work on with my driver?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    assert_eq!(body["source"], "gpt-6-luna", "the default model");
    assert_eq!(body["degraded"], false);
    assert_eq!(body["message"]["content"], "Keep your tempo smooth: count one-two on the backswing.");
    assert_eq!(body["usage"]["prompt_tokens"], 700);
    assert_eq!(body["usage"]["token_limit"], 1500);

    let sent = app.model_requests().await;
    assert_eq!(sent.len(), 1);
    let prompt = prompt_text(&sent[0]);
    // Alice's latest analysis (seeded newest) and the theme carried from yesterday.
    assert!(prompt.contains("an open clubface at impact"), "{prompt}");
    assert!(prompt.contains("Tempo and rhythm"), "{prompt}");
    assert!(prompt.contains("What should I work on with my driver?"));
    assert_eq!((sent[0]["max_completion_tokens"].clone(), sent[0]["reasoning_effort"].clone()), (json!(400), json!("none")), "the default: no reasoning to eat the reply");
    assert_eq!(sent[0]["temperature"], 0.7);
    assert_eq!(sent[0]["response_format"]["type"], "json_schema");
    assert_eq!(sent[0]["response_format"]["json_schema"]["strict"], true);

    // One EMF line for the request, with all six of the seed's metrics.
    let lines = app.emf_lines();
    assert_eq!(lines.len(), 1);
    let emf = crate::helpers::assert_emf(&lines[0]);
    for name in ["ConversationRequests", "TokensUsed", "ResponseTime", "ErrorRate", "CostPerDay", "UserActiveConversations"] {
        assert!(emf[name].is_number(), "{name}");
    }
    assert_eq!(emf["TokensUsed"], 820);
    assert_eq!(emf["UserActiveConversations"], 1, "the day's first message starts a conversation");
    assert_eq!(emf["Outcome"], "model");
    // Two sequential DynamoDB waves: the admission beside 3 context reads (the profile, the
    // memory and the quota item in a BatchGetItem, the newest turns, the swings), then the
    // turn. Five calls a message, and on a process's first message of the day a sixth in the
    // first wave: the lease of its first slice of the global budget.
    assert_eq!(emf["DynamoWaves"], 2, "{emf}");
    assert_eq!(emf["DynamoCalls"], 6, "{emf}");
    assert!(emf["DynamoWriteUnits"].as_f64().unwrap_or(0.0) > 0.0, "consumed capacity is reported: {emf}");
    assert!(emf["InProcessMs"].as_f64().is_some());
    assert!(!lines[0].contains("demo-alice"), "no user id in metrics");
}

#[tokio::test]
async fn the_offline_coach_answers_from_the_templates_and_says_so() {
    let app = spawn_with(|c| {
        c.model.api_key = None;
        c.model.base_url = None;
    })
    .await;
    app.seed().await;
    let (status, body) = app.chat_json("demo-alice", &json!({ "message": "Any tips for today?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    assert_eq!(body["source"], "offline");
    let content = body["message"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("offline coach"), "{content}");
    assert!(content.contains("71/100"), "names the latest swing's score: {content}");
    assert!(content.contains("Tempo and rhythm"), "names the theme: {content}");
    assert_eq!(body["usage"]["cost_micro_usd"], 0);
    assert!(app.model_requests().await.is_empty(), "offline never calls a model");
    // An answer is an answer: it holds its slot of the hour (only a fallback gives it back).
    assert_eq!(body["quota"]["requests_remaining_hour"], 14, "{body}");
    assert_eq!(app.hour_count("demo-alice").await, 1);
}

#[tokio::test]
async fn the_second_message_of_the_day_is_answered_with_the_first_exchange_in_the_prompt() {
    let app = spawn_app().await;
    app.seed().await;
    Mock::given(method("POST"))
        .and(path(MODEL_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&crate::helpers::payload("Try the split-hands drill for ten swings."), 600, 40)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.model)
        .await;
    let (s1, first) = app.chat_json("demo-ben", &json!({ "message": "My irons feel thin today." })).await;
    assert_eq!(s1, 200, "{first}");
    let (s2, second) = app.chat_json("demo-ben", &json!({ "message": "Did that drill help others?" })).await;
    assert_eq!(s2, 200, "{second}");
    assert_eq!(first["conversation_id"], second["conversation_id"]);

    let sent = app.model_requests().await;
    assert_eq!(sent.len(), 2);
    let messages = sent[1]["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    // The history is the golfer's newest turns, whatever their day: yesterday's, then today's.
    assert_eq!(roles, ["system", "user", "user", "assistant", "user", "assistant", "user"], "system, context, yesterday's exchange, the first exchange, new message");
    assert!(messages[2]["content"].as_str().unwrap_or_default().contains("What should we work on this week?"));
    assert!(messages[4]["content"].as_str().unwrap_or_default().contains("My irons feel thin today."));
    assert_eq!(messages[5]["content"], "Try the split-hands drill for ten swings.");

    // The stored item has both exchanges and matches the conversation schema.
    let conv = app.store.conversation(&today_conversation("demo-ben")).await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("no conversation stored"));
    assert_eq!(conv.recent_messages.len(), 4);
    assert_eq!(conv.coaching_themes.session_count, 4, "yesterday's session 3, today is a new one");
    assert_eq!(conv.coaching_themes.primary_focus, "Solid contact", "carried from yesterday");
    assert_eq!(conv.total_tokens_used, 640 + 820);
    let raw = serde_json::to_value(&conv).unwrap_or_default();
    assert_valid(&schemas().conversation, &raw);
}

/// The schemas describe the items as DynamoDB holds them, their key included: a turn, the
/// golfer's memory and profile, read raw, each validate against theirs.
#[tokio::test]
async fn a_stored_item_read_raw_from_dynamodb_validates_against_the_schema() {
    let app = spawn_app().await;
    app.seed().await;
    let mut p = crate::helpers::payload("Welcome back, Alice: let's keep that tempo.");
    p["memory"] = json!([{ "op": "remember", "id": null, "kind": "goal", "text": "Wants to break 90 this season" }]);
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path(crate::helpers::MODEL_PATH))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(crate::helpers::completion(&p, 700, 120)))
        .with_priority(1)
        .mount(&app.model)
        .await;
    let (status, body) = app.chat_json("demo-alice", &json!({ "message": "I want to break 90 this season.", "clientMessageId": "raw-0001-abcd" })).await;
    assert_eq!(status, 200, "{body}");
    let user = crate::helpers::uid("demo-alice");
    let app = &app;
    let raw = |key: String| async move {
        let item = app.raw_item(&key).await.unwrap_or_else(|| panic!("{key} is not stored"));
        let value: serde_json::Value = serde_dynamo::from_item(item).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(value[keys::PK], json!(key), "the item's key is part of what the schema describes");
        value
    };
    let turn = raw(keys::turn(&user, "raw-0001-abcd")).await;
    assert_valid(&schemas().turn, &turn);
    assert_eq!(turn["user_id"], "demo-alice");
    assert_eq!(turn["conversation"], today_conversation("demo-alice"));
    let memory = raw(keys::memory(&user)).await;
    assert_valid(&schemas().memory, &memory);
    assert_eq!(memory["facts"][0]["text"], "Wants to break 90 this season");
    assert_valid(&schemas().profile, &raw(keys::profile(&user)).await);
}

#[tokio::test]
async fn another_golfers_swing_never_reaches_the_prompt() {
    let app = spawn_app().await;
    app.seed().await;
    // Ben's swing, asked about by Alice: refused exactly like a swing that does not exist.
    let (status, body) = app.chat_json("demo-alice", &json!({ "message": "Look at this one", "swingId": "swing-ben-002" })).await;
    let (status_missing, body_missing) = app.chat_json("demo-alice", &json!({ "message": "Look at this one", "swingId": "swing-nobody-9" })).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(status_missing, 404);
    assert_eq!(body["message"], body_missing["message"], "no hint whether it exists");
    assert!(app.model_requests().await.is_empty());

    // Her own swing on screen is used; nothing of Ben's appears in any prompt.
    let (ok, _) = app.chat_json("demo-alice", &json!({ "message": "And this one?", "swingId": "swing-alice-001" })).await;
    assert_eq!(ok, 200);
    let sent = app.model_requests().await;
    assert_eq!(sent.len(), 1);
    let prompt = prompt_text(&sent[0]);
    assert!(prompt.contains("swing-alice-001"), "{prompt}");
    assert!(!prompt.contains("swing-ben") && !prompt.contains("early extension"), "{prompt}");
}

/// A golfer asks at 23:59:59 UTC and follows up a few seconds after midnight (4 pm in
/// California): the follow-up's prompt holds the exchange, each message's spend lands on the
/// day it was asked, each day's conversation view holds its own exchange, and the session
/// goes on.
#[tokio::test]
async fn the_thread_holds_across_utc_midnight() {
    let app = spawn_app().await;
    let user = "golfer-midnight-2";
    let now = chrono::Utc::now();
    let midnight = coach_api::clock::next_day(now);
    app.state.clock.advance(midnight - chrono::Duration::seconds(1) - now);
    let before = app.state.clock.now();
    let (s1, first) = app.chat_json(user, &json!({ "message": "Late range session: my driver keeps fading right" })).await;
    assert_eq!(s1, 200, "{first}");
    assert!(app.state.clock.now() < midnight, "asked and answered before midnight");
    app.state.clock.advance(chrono::Duration::seconds(6));
    let after = app.state.clock.now();
    let (s2, second) = app.chat_json(user, &json!({ "message": "Should I weaken my grip for that?" })).await;
    assert_eq!(s2, 200, "{second}");

    let sent = app.model_requests().await;
    let messages = sent[1]["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["system", "user", "user", "assistant", "user"], "the exchange before midnight is in the follow-up's prompt");
    assert!(messages[2]["content"].as_str().unwrap_or_default().contains("my driver keeps fading right"));
    assert_eq!(messages[3]["content"], first["message"]["content"]);
    assert_eq!(second["coaching_themes"]["session_count"], first["coaching_themes"]["session_count"], "one conversation, one session");
    assert_ne!(first["conversation_id"], second["conversation_id"], "each day has its own conversation view");

    // Spend on the day each message was asked.
    let golfer = crate::helpers::uid(user);
    for (at, answer) in [(before, &first), (after, &second)] {
        let spend = app.number(&coach_api::store::keys::user_quota(&golfer, at), "spend_micro").await;
        assert_eq!(spend, answer["usage"]["cost_micro_usd"].as_i64().unwrap(), "spend of {}", coach_api::clock::date(at));
    }
    // Each day's conversation view holds its own exchange.
    for (at, text) in [(before, "my driver keeps fading right"), (after, "Should I weaken my grip")] {
        let (status, view) = app.read(reqwest::Method::GET, user, &format!("/api/chat/coaching/conversation?date={}", coach_api::clock::date(at))).await;
        assert_eq!(status, 200, "{view}");
        let messages = view["messages"].as_array().cloned().unwrap_or_default();
        assert_eq!(messages.len(), 2, "{view}");
        assert!(messages[0]["content"].as_str().unwrap_or_default().contains(text), "{view}");
    }
}

/// A request's own future is what it holds for its whole life, the model's wait included, and
/// what every request waiting for a DynamoDB permit holds. The SDK's call futures live on the
/// heap only while their call is in flight (`Store::send_raw`), so admitting and composing a
/// message, with its first wave of four calls side by side, stays a few kilobytes inline.
#[tokio::test]
async fn admitting_and_composing_a_message_holds_no_dynamodb_call_inline() {
    let app = spawn_app().await;
    let caller = coach_api::chat::Caller {
        user: crate::helpers::uid("golfer-size"),
        ip: coach_api::limits::IpHash::keyed("test-key", "127.0.0.1"),
        deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(5),
        request_id: "size".into(),
    };
    let request = serde_json::from_value(json!({ "message": "How do I stop slicing?" })).unwrap_or_else(|e| panic!("{e}"));
    let input = coach_api::chat::ChatInput { request, message: "How do I stop slicing?".into() };
    let prepare = coach_api::chat::prepare(&app.state, &caller, &input);
    let inline = std::mem::size_of_val(&prepare);
    println!("chat::prepare future: {inline} bytes");
    assert!(inline < PREPARE_INLINE_BYTES, "chat::prepare's future is {inline} bytes");
}

/// About 4 KB in a debug build with the calls on the heap, 14 KB with them inline (debug
/// builds lay futures out larger than release builds).
const PREPARE_INLINE_BYTES: usize = 8 * 1024;
