//! Every rule of schema/chat-request.json is enforced with a 400 that names the field; size
//! and media type have their own codes; every error body matches schema/error.json; and a
//! refused request reaches neither the model nor the table.

use serde_json::{json, Value};

use crate::helpers::{assert_valid, schemas, spawn_app, TestApp};
use coach_api::api::CHAT_PATH;

async fn expect_400(app: &TestApp, body: Value, field: &str) {
    let (status, err) = app.chat_json("golfer-val", &body).await;
    assert_eq!(status, 400, "{body} → {err}");
    assert_valid(&schemas().error, &err);
    assert_eq!(err["code"], "invalid_request");
    let fields: Vec<&str> = err["fields"].as_array().map(|a| a.iter().filter_map(|f| f["field"].as_str()).collect()).unwrap_or_default();
    assert!(fields.contains(&field), "expected {field} in {fields:?} for {body}");
}

#[tokio::test]
async fn each_schema_rule_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    let long = "a".repeat(1001);
    let cases = [
        (json!({}), "/message"),
        (json!({ "message": "" }), "/message"),
        (json!({ "message": long }), "/message"),
        (json!({ "message": 42 }), "/message"),
        (json!({ "message": "hi", "userId": "golfer_val" }), "/userId"),
        (json!({ "message": "hi", "conversationId": "profile_golfer-val" }), "/conversationId"),
        (json!({ "message": "hi", "swingId": "../etc" }), "/swingId"),
        (json!({ "message": "hi", "clientMessageId": "short" }), "/clientMessageId"),
        (json!({ "message": "hi", "context": { "handicap": 60 } }), "/context/handicap"),
        (json!({ "message": "hi", "context": { "screen": "settings" } }), "/context/screen"),
        (json!({ "message": "hi", "context": { "locale": "english" } }), "/context/locale"),
        (json!({ "message": "hi", "context": { "club": "x".repeat(41) } }), "/context/club"),
        (json!({ "message": "hi", "context": { "mood": "great" } }), "/context/mood"),
        (json!({ "message": "hi", "admin": true }), "/admin"),
        (json!("just a string"), ""),
    ];
    for (body, field) in cases {
        expect_400(&app, body, field).await;
    }
    // Several problems at once are all named.
    let (_, err) = app.chat_json("golfer-val", &json!({ "message": "", "extra": 1, "swingId": "a b" })).await;
    assert_eq!(err["fields"].as_array().map(Vec::len), Some(3), "{err}");

    assert!(app.model_requests().await.is_empty(), "no invalid request reached the model");
    assert!(app.raw_item("quota_golfer-val_").await.is_none());
}

#[tokio::test]
async fn a_message_of_only_invisible_characters_is_refused_after_normalization() {
    let app = spawn_app().await;
    expect_400(&app, json!({ "message": "\u{200B}\u{200B}\u{FEFF}" }), "/message").await;
}

#[tokio::test]
async fn a_body_over_10_kb_is_413_and_non_json_is_415() {
    let app = spawn_app().await;
    let big = json!({ "message": "x".repeat(500), "pad": "y".repeat(11 * 1024) });
    let r = app.chat("golfer-val", &big).await;
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap_or_default();
    assert_valid(&schemas().error, &body);
    assert_eq!(body["code"], "payload_too_large");

    // Over the limit without a Content-Length (chunked) is caught while reading.
    let stream = futures::stream::iter((0..12).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let r = app
        .http
        .post(format!("{}{CHAT_PATH}", app.url))
        .header("x-user-id", "golfer-val")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 413);

    let r = app
        .http
        .post(format!("{}{CHAT_PATH}", app.url))
        .header("x-user-id", "golfer-val")
        .header("content-type", "text/plain")
        .body("{\"message\":\"hi\"}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 415);
    let body: Value = r.json().await.unwrap_or_default();
    assert_valid(&schemas().error, &body);

    let r = app
        .http
        .post(format!("{}{CHAT_PATH}", app.url))
        .header("x-user-id", "golfer-val")
        .header("content-type", "application/json")
        .body("{\"message\": \"unterminated")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 400);
    assert!(app.model_requests().await.is_empty());
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_schema() {
    let app = spawn_app().await;
    let r = app.http.get(format!("{}/nope", app.url)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 404);
    assert_valid(&schemas().error, &r.json().await.unwrap_or_default());
    let r =
        app.http.request(reqwest::Method::from_bytes(b"TRACE").unwrap_or(reqwest::Method::PUT), format!("{}{CHAT_PATH}", app.url)).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 405);
    assert_valid(&schemas().error, &r.json().await.unwrap_or_default());
}
