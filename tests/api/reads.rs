//! Coaching continuity over two days with structured model replies, and the app's read paths.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Respond, ResponseTemplate};

use crate::helpers::{assert_valid, completion, schemas, spawn_with, TestApp, MODEL_PATH};
use coach_api::models::UserId;
use coach_api::store::keys;

/// Replies in order with the given structured payloads (the last repeats).
struct Replies(std::sync::Mutex<Vec<Value>>);

impl Respond for Replies {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let mut v = self.0.lock().unwrap();
        let next = if v.len() > 1 { v.remove(0) } else { v[0].clone() };
        ResponseTemplate::new(200).set_body_json(completion(&next, 640, 90))
    }
}

fn reply(text: &str, primary: Option<&str>, secondary: Option<&str>, improvement: Option<&str>, swing: Option<&str>) -> Value {
    json!({ "reply": text, "primary_focus": primary, "secondary_focus": secondary, "improvement": improvement, "swing_reference": swing, "memory": [] })
}

async fn say(app: &TestApp, user: &str, text: &str) -> Value {
    let (status, body) = app.chat_json(user, &json!({ "message": text })).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    body
}

#[tokio::test]
async fn themes_move_as_the_model_proposes_over_two_days() {
    let app = spawn_with(|_| {}).await;
    app.seed().await;
    let script = vec![
        reply("Your driver path is the story.", Some("Swing path with the driver"), None, None, Some("swing-alice-003")),
        reply("Nice, that's progress.", None, Some("Tempo"), Some("Smoother transition"), None),
        reply("Look at Ben's swing.", None, None, Some("smoother transition"), Some("swing-ben-001")),
        reply("A new day: face control.", Some("Clubface control"), None, Some("Fewer slices on the range"), Some("swing-alice-002")),
        reply("Invalid", None, None, None, None),
    ];
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(Replies(std::sync::Mutex::new(script))).with_priority(2).mount(&app.model).await;
    let user = "demo-alice";

    // Day 1: yesterday's themes (session 3) carry into a new session.
    let b1 = say(&app, user, "My drives curve right.").await;
    assert_eq!(b1["coaching_themes"]["primary_focus"], "Swing path with the driver");
    assert_eq!(b1["coaching_themes"]["session_count"], 4);
    let b2 = say(&app, user, "I felt smoother today.").await;
    assert_eq!(b2["coaching_themes"]["secondary_focus"], "Tempo");
    assert_eq!(b2["coaching_themes"]["recent_improvements"], json!(["Smoother transition"]));
    let b3 = say(&app, user, "What about my friend's swing?").await;
    assert_eq!(b3["coaching_themes"]["recent_improvements"], json!(["smoother transition"]), "duplicates are folded, not repeated");
    assert!(b3["message"].get("swing_reference").is_none(), "another golfer's swing is never referenced: {b3}");
    let day1 = app.state.clock.now();
    let (_, conv1) = app.read(Method::GET, user, "/api/chat/coaching/conversation").await;
    assert_eq!(conv1["referenced_swings"], json!(["swing-alice-003"]));

    // Day 2: a new conversation, one more session, themes carried and moved again.
    app.state.clock.advance(chrono::Duration::days(1));
    let b4 = say(&app, user, "New day, new range session.").await;
    assert_ne!(b4["conversation_id"], b1["conversation_id"]);
    assert_eq!(b4["coaching_themes"]["session_count"], 5);
    assert_eq!(b4["coaching_themes"]["primary_focus"], "Clubface control");
    assert_eq!(b4["coaching_themes"]["secondary_focus"], "Tempo", "carried from day 1");
    assert_eq!(b4["coaching_themes"]["recent_improvements"], json!(["smoother transition", "Fewer slices on the range"]));

    // A reply that breaks the reply schema is not stored as such: the fallback answers and themes stay.
    let b5 = {
        Mock::given(method("POST"))
            .and(path(MODEL_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(completion(&json!({ "reply": "x", "primary_focus": "Hacked focus" }), 10, 10)))
            .with_priority(1)
            .mount(&app.model)
            .await;
        say(&app, user, "One more?").await
    };
    assert_eq!(b5["degraded"], true);
    assert_eq!(b5["coaching_themes"]["primary_focus"], "Clubface control");

    let (_, themes) = app.read(Method::GET, user, "/api/chat/coaching/themes").await;
    assert_valid(&schemas().themes_view, &themes);
    assert_eq!(themes["coaching_themes"]["primary_focus"], "Clubface control");
    assert_eq!(themes["referenced_swings"], json!(["swing-alice-002"]));
    let (status, day1_view) = app.read(Method::GET, user, &format!("/api/chat/coaching/conversation?date={}", day1.format("%Y-%m-%d"))).await;
    assert_eq!(status, 200);
    assert_eq!(day1_view["messages"].as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn each_read_path_answers_in_its_schema_and_only_for_the_caller() {
    let app = spawn_with(|_| {}).await;
    app.seed().await;
    say(&app, "demo-alice", "Alice's private question about her slice").await;
    say(&app, "demo-ben", "Ben asks about his irons").await;

    let (s, conv) = app.read(Method::GET, "demo-ben", "/api/chat/coaching/conversation").await;
    assert_eq!(s, 200);
    assert_valid(&schemas().conversation_view, &conv);
    assert_eq!(conv["messages"].as_array().map(Vec::len), Some(2));
    assert!(!conv.to_string().contains("Alice"), "only Ben's conversation: {conv}");

    let (s, themes) = app.read(Method::GET, "demo-ben", "/api/chat/coaching/themes").await;
    assert_eq!(s, 200);
    assert_valid(&schemas().themes_view, &themes);
    assert_eq!(themes["coaching_themes"]["primary_focus"], "Solid contact");

    let (s, usage) = app.read(Method::GET, "demo-ben", "/api/chat/coaching/usage").await;
    assert_eq!(s, 200);
    assert_valid(&schemas().usage_view, &usage);
    assert_eq!(usage["quota"]["requests_remaining_hour"], 14);

    // A golfer with nothing yet: 404 for the day's conversation, default themes, full quota.
    let (s, none) = app.read(Method::GET, "golfer-new-1", "/api/chat/coaching/conversation").await;
    assert_eq!(s, 404);
    assert_valid(&schemas().error, &none);
    let (_, themes) = app.read(Method::GET, "golfer-new-1", "/api/chat/coaching/themes").await;
    assert_eq!(themes["coaching_themes"]["session_count"], 0);
    let (_, usage) = app.read(Method::GET, "golfer-new-1", "/api/chat/coaching/usage").await;
    assert_eq!(usage["quota"]["requests_remaining_hour"], 15);

    let (s, bad) = app.read(Method::GET, "demo-ben", "/api/chat/coaching/conversation?date=yesterday").await;
    assert_eq!(s, 400);
    assert_eq!(bad["fields"][0]["field"], "/date");
    let (s, _) = app.read(Method::GET, "", "/api/chat/coaching/themes").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn delete_me_leaves_nothing_of_the_golfer_but_expiring_counters() {
    let app = spawn_with(|_| {}).await;
    app.seed().await;
    let user = "demo-chloe";
    let (s, _) = app.chat_json(user, &json!({ "message": "Wedge distances please", "clientMessageId": "del-0001-abcd" })).await;
    assert_eq!(s, 200);
    app.state.clock.advance(chrono::Duration::days(1));
    let (s, _) = app.chat_json(user, &json!({ "message": "And today?", "clientMessageId": "del-0002-abcd" })).await;
    assert_eq!(s, 200);
    say(&app, "demo-alice", "Alice stays").await;

    let (s, report) = app.read(Method::DELETE, user, "/api/chat/coaching/me").await;
    assert_eq!(s, 200, "{report}");
    assert_valid(&schemas().deletion_report, &report);
    // Yesterday's seeded conversation, day 1 and day 2: a turn each (each its stored answer).
    assert_eq!(report["conversations_deleted"], 3);
    assert_eq!(report["profile_deleted"], true);
    assert_eq!(report["turns_deleted"], 3);

    // Everything left in the table for Chloe is a counter or the erase marker, with a TTL.
    let scan = app.store.client().scan().table_name(app.store.table()).send().await.unwrap();
    let mine: Vec<_> =
        scan.items.unwrap_or_default().into_iter().filter(|i| i.get("conversation_id").and_then(|v| v.as_s().ok()).is_some_and(|k| k.contains("demo-chloe"))).collect();
    assert!(!mine.is_empty(), "her counters are still there");
    for item in &mine {
        let key = item["conversation_id"].as_s().unwrap();
        assert!(key.starts_with("quota_") || key.starts_with("erased_"), "{key} survived the deletion");
        assert!(item.contains_key(keys::TTL_ATTRIBUTE), "{key} has no expiry");
    }
    let alice = UserId::try_from("demo-alice".to_string()).unwrap();
    assert!(app.store.profile(&alice).await.unwrap().is_some(), "another golfer's data is untouched");
    let (_, again) = app.read(Method::DELETE, user, "/api/chat/coaching/me").await;
    assert_eq!((again["conversations_deleted"].clone(), again["profile_deleted"].clone()), (json!(0), json!(false)));
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// A message answered while its golfer deletes their data does not write the turn back: the
/// golfer gets the answer (not stored), and nothing of theirs is left after.
#[tokio::test]
async fn a_message_in_flight_during_delete_me_does_not_bring_the_data_back() {
    let app = spawn_with(|_| {}).await;
    Mock::given(method("POST"))
        .and(path(crate::helpers::MODEL_PATH))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(crate::helpers::completion(&crate::helpers::payload("Answered during the deletion."), 700, 120))
                .set_delay(Duration::from_millis(1500)),
        )
        .with_priority(1)
        .mount(&app.model)
        .await;
    let user = "golfer-erase-1";
    say(&app, user, "Before the deletion").await;
    let last = json!({ "message": "Sent just before deleting", "clientMessageId": "erase-0001-abcd" });
    let in_flight = app.chat_json(user, &last);
    let delete = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.read(Method::DELETE, user, "/api/chat/coaching/me").await
    };
    let ((status, answer), (deleted, report)) = tokio::join!(in_flight, delete);
    assert_eq!((status, deleted), (200, 200), "{answer} {report}");
    assert_eq!(answer["stored"], false, "answered, not written back: {answer}");
    assert_eq!(answer["storage"], "discarded", "told apart from a background save: {answer}");
    assert_eq!(report["turns_deleted"], 1);
    let turns = app.store.day_turns(&crate::helpers::uid(user), chrono::Utc::now()).await.unwrap();
    assert!(turns.is_empty(), "nothing came back: {turns:?}");
    // The message's claim went with it, and its spend was settled at what the model billed.
    let claim = coach_api::store::keys::turn(&crate::helpers::uid(user), "erase-0001-abcd");
    assert!(app.raw_item(&claim).await.is_none(), "the in-progress claim is deleted");
    assert_eq!(app.day_spend(user).await, 2 * answer["usage"]["cost_micro_usd"].as_i64().unwrap(), "both messages settled at their cost");
    let (_, again) = app.read(Method::DELETE, user, "/api/chat/coaching/me").await;
    assert_eq!(again["turns_deleted"], 0, "deleting again finds nothing");
}

/// A message asked after the erase marker was written belongs to the golfer's new history:
/// it is stored, and the deletion's second sweep (after the index catches up) leaves it.
#[tokio::test]
async fn a_message_sent_while_delete_me_sweeps_is_kept_as_new_history() {
    let app = spawn_with(|_| {}).await;
    let user = "golfer-erase-2";
    say(&app, user, "Before the deletion").await;
    let delete = app.read(Method::DELETE, user, "/api/chat/coaching/me");
    let during = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        app.chat_json(user, &json!({ "message": "A fresh start", "clientMessageId": "erase-0002-abcd" })).await
    };
    let ((deleted, report), (status, answer)) = tokio::join!(delete, during);
    assert_eq!((deleted, status), (200, 200), "{report} {answer}");
    assert_eq!((answer["stored"].clone(), answer["storage"].clone()), (json!(true), json!("stored")), "{answer}");
    assert_eq!(report["turns_deleted"], 1, "only the turn asked before the deletion: {report}");
    let turns = app.store.day_turns(&crate::helpers::uid(user), app.state.clock.now()).await.unwrap();
    assert_eq!(turns.len(), 1, "the new turn stays: {turns:?}");
    assert_eq!(turns[0].user_message.content, "A fresh start");
}

/// The read and account routes wait for DynamoDB no longer than the request's deadline, as the
/// chat does (a test of the deadline itself: a short request time limit against a store that
/// answers every call four seconds late).
#[tokio::test]
async fn the_account_routes_answer_by_the_requests_deadline_when_dynamodb_is_slow() {
    use crate::dynamo_proxy::{DynamoProxy, Faults};
    let proxy = DynamoProxy::start(&crate::helpers::dynamodb_endpoint(), 11).await;
    let endpoint = proxy.endpoint.clone();
    let app = spawn_with(move |c| {
        c.dynamodb_endpoint = Some(endpoint);
        c.request_time_limit = Duration::from_millis(1500);
        c.deadline_margin = Duration::from_millis(500);
    })
    .await;
    proxy.set_faults(Faults { latency: Duration::from_secs(4), ..Faults::default() });
    let routes = [
        (Method::GET, "/api/chat/coaching/themes"),
        (Method::GET, "/api/chat/coaching/usage"),
        (Method::GET, "/api/chat/coaching/conversation"),
        (Method::GET, "/api/chat/coaching/memory"),
        (Method::DELETE, "/api/chat/coaching/me"),
    ];
    for (verb, route) in routes {
        let started = std::time::Instant::now();
        let (status, body) = app.read(verb.clone(), "golfer-slow-store", route).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{verb} {route}: {body}");
        assert!(took < Duration::from_millis(2500), "{verb} {route} took {took:?}, past its deadline of about 1 s");
    }
}
