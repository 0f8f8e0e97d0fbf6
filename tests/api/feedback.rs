//! Every answer names the prompt set, variant and model that wrote it; golfers rate their own
//! answers; a prompt variant reaches its share of golfers behind a switch.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_valid, prompt_text, schemas, spawn_with, TestApp};
use coach_api::api::routes::FEEDBACK_PATH;
use coach_api::store::keys;

async fn rate(app: &TestApp, user: &str, body: &Value) -> (u16, Value) {
    let r = app.http.post(format!("{}{FEEDBACK_PATH}", app.url)).header("x-user-id", user).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_answer_names_its_prompt_version_and_variant_in_the_response_the_turn_and_the_metrics() {
    let app = spawn_with(|_| {}).await;
    let (status, body) = app.chat_json("golfer-trace-1", &json!({ "message": "Tempo help?", "clientMessageId": "trace-0001-abcd" })).await;
    assert_eq!(status, 200, "{body}");
    assert_valid(&schemas().chat_response, &body);
    let version = body["prompt_version"].as_str().unwrap().to_string();
    assert_eq!(version.len(), 12, "{body}");
    assert_eq!(body["variant"], "base", "no experiment: everyone gets the base");
    let spec = coach_api::llm::table::spec("gpt-6-luna").unwrap();
    assert_eq!(version, coach_api::prompts::prompt_version(app.state.prompts.hash(), &spec.asked()), "the templates' hash with the model row that answered");
    let turn = app.store.completed_turn(&keys::turn(&crate::helpers::uid("golfer-trace-1"), "trace-0001-abcd")).await.unwrap().unwrap();
    assert_eq!((turn.response.prompt_version.as_deref(), turn.response.variant.as_deref()), (Some(version.as_str()), Some("base")));
    let line: Value = app.emf_lines().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| l["Outcome"] == "model").unwrap();
    assert_eq!((line["PromptVersion"].as_str(), line["Variant"].as_str(), line["Model"].as_str()), (Some(version.as_str()), Some("base"), Some("gpt-6-luna")));
    assert!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"].as_array().unwrap().contains(&json!(["Service", "PromptVersion", "Model", "Variant"])), "{line}");
    // The replay says the same.
    let (_, again) = app.chat_json("golfer-trace-1", &json!({ "message": "Tempo help?", "clientMessageId": "trace-0001-abcd" })).await;
    assert_eq!(again["prompt_version"], body["prompt_version"]);
}

#[tokio::test]
async fn a_golfer_rates_their_own_answer_once_and_nobody_elses() {
    let app = spawn_with(|_| {}).await;
    let (status, answer) = app.chat_json("golfer-rate-1", &json!({ "message": "Chipping?", "clientMessageId": "rate-0001-abcd" })).await;
    assert_eq!(status, 200, "{answer}");

    let (status, receipt) = rate(&app, "golfer-rate-1", &json!({ "clientMessageId": "rate-0001-abcd", "rating": "up" })).await;
    assert_eq!(status, 200, "{receipt}");
    assert_valid(&schemas().feedback_receipt, &receipt);
    assert_eq!((receipt["prompt_version"].clone(), receipt["variant"].clone(), receipt["model"].clone()), (answer["prompt_version"].clone(), json!("base"), json!("gpt-6-luna")));
    let line: Value = app.emf_lines().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| l.get("FeedbackUp").is_some()).unwrap();
    assert_eq!((line["FeedbackUp"].as_i64(), line["FeedbackDown"].as_i64(), line["PromptVersion"].clone()), (Some(1), Some(0), answer["prompt_version"].clone()));

    // Rating again replaces it; a repeat is the same rating.
    for _ in 0..2 {
        let (status, again) = rate(&app, "golfer-rate-1", &json!({ "clientMessageId": "rate-0001-abcd", "rating": "down", "reason": "too_long" })).await;
        assert_eq!((status, again["rating"].clone(), again["reason"].clone()), (200, json!("down"), json!("too_long")), "{again}");
    }
    let key = keys::rating(&crate::helpers::uid("golfer-rate-1"), "rate-0001-abcd");
    let stored = app.raw_item(&key).await.unwrap();
    assert_eq!(stored["rating"].as_s().unwrap(), "down", "one rating, the last");

    // Another golfer's answer and an unknown id: the same 404, saying nothing about existence.
    let (theirs, body) = rate(&app, "golfer-rate-2", &json!({ "clientMessageId": "rate-0001-abcd", "rating": "down" })).await;
    let (unknown, body2) = rate(&app, "golfer-rate-1", &json!({ "clientMessageId": "rate-9999-abcd", "rating": "up" })).await;
    assert_eq!((theirs, unknown), (404, 404));
    assert_eq!(body["code"], body2["code"]);
    assert_eq!(body["message"], body2["message"]);
    // A bad body names the field.
    let (bad, problem) = rate(&app, "golfer-rate-1", &json!({ "clientMessageId": "rate-0001-abcd", "rating": "meh" })).await;
    assert_eq!(bad, 400);
    assert_eq!(problem["fields"][0]["field"], "/rating", "{problem}");
    assert_valid(&schemas().error, &problem);
    // Ratings spend no model budget and are not counted as messages.
    assert_eq!(app.hour_count("golfer-rate-1").await, 1);

    // DELETE /me erases the rating with the turn.
    let (status, _) = app.read(Method::DELETE, "golfer-rate-1", "/api/chat/coaching/me").await;
    assert_eq!(status, 200);
    assert!(app.raw_item(&key).await.is_none(), "nothing of the rating remains");
}

#[tokio::test]
async fn ratings_have_their_own_hourly_cap() {
    let app = spawn_with(|_| {}).await;
    assert_eq!(app.chat_json("golfer-rate-3", &json!({ "message": "Putting?", "clientMessageId": "rate-0003-abcd" })).await.0, 200);
    for i in 0..coach_api::limits::RATINGS_PER_HOUR {
        let rating = if i % 2 == 0 { "up" } else { "down" };
        assert_eq!(rate(&app, "golfer-rate-3", &json!({ "clientMessageId": "rate-0003-abcd", "rating": rating })).await.0, 200);
    }
    let (status, body) = rate(&app, "golfer-rate-3", &json!({ "clientMessageId": "rate-0003-abcd", "rating": "up" })).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited");
    assert!(body["retry_after_seconds"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_variant_reaches_its_share_of_golfers_and_the_model_gets_its_templates() {
    let app = spawn_with(|c| c.experiment = Some(("warmer".into(), 10_000))).await;
    let (status, body) = app.chat_json("golfer-variant-1", &json!({ "message": "Driver?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["variant"], "warmer");
    let system = app.model_requests().await[0]["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.contains("notices something the golfer did well"), "the variant's system template: {system}");
    assert_ne!(body["prompt_version"].as_str().unwrap(), coach_api::prompts::prompt_version(app.state.prompts.hash(), &coach_api::llm::table::spec("gpt-6-luna").unwrap().asked()));

    // A share of 0 is the kill switch: the base for everyone; the base's prompt says nothing of it.
    let off = spawn_with(|c| c.experiment = None).await;
    let (_, body) = off.chat_json("golfer-variant-1", &json!({ "message": "Driver?" })).await;
    assert_eq!(body["variant"], "base");
    assert!(!prompt_text(&off.model_requests().await[0]).contains("notices something the golfer did well"));

    // Half the golfers: each stays where they are, in another process too.
    let half = |_: ()| async { spawn_with(|c| c.experiment = Some(("warmer".into(), 5_000))).await };
    let (a, b) = (half(()).await, half(()).await);
    let mut seen = std::collections::BTreeSet::new();
    for g in 0..12 {
        let user = crate::helpers::uid(&format!("golfer-split-{g:02}"));
        let (one, two) = (a.state.prompt_set(&user).variant, b.state.prompt_set(&user).variant);
        assert_eq!(one, two, "a golfer's variant does not change across processes");
        seen.insert(one);
    }
    assert_eq!(seen.len(), 2, "both sides of a half split are reached: {seen:?}");
}
