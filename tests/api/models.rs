//! The coach outlives its model: a row past its shutdown date is replaced by its replacement,
//! a model the provider says is gone is replaced at once (the same message answered by the
//! replacement, the breaker untouched), `coach-api models check` reads the provider's list,
//! and every row's request is one OpenAI's chat-completions schema accepts.

use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{on_day, spawn_model, MODEL_PATH};

/// gpt-6-luna's bill for 700 prompt tokens (none cached, each possibly a cache write at
/// $0.125/M) and 120 output tokens at $0.50/M.
const LUNA_700_120: i64 = 88 + 60;

#[tokio::test]
async fn from_its_shutdown_date_a_row_is_answered_by_its_replacement_at_the_replacements_prices() {
    let app = spawn_model("gpt-4o").await;
    on_day(&app, "2027-01-14");
    let (status, body) = app.chat_json("golfer-model-date", &json!({ "message": "Still coaching after January?" })).await;
    assert_eq!(status, 200, "{body}");
    let sent = &app.model_requests().await[0];
    assert_eq!(sent["model"], "gpt-6-luna");
    assert_eq!((sent["max_completion_tokens"].clone(), sent["reasoning_effort"].clone()), (json!(400), json!("none")), "the replacement's parameters: {sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    assert_eq!((body["source"].clone(), body["degraded"].clone()), (json!("gpt-6-luna"), json!(false)));
    assert_eq!(body["usage"]["cost_micro_usd"], LUNA_700_120, "settled at the replacement's prices");
    assert_eq!(app.day_spend("golfer-model-date").await, LUNA_700_120, "the reservation (at luna's worst case) settled to the bill");
    let turns = app.store.day_turns(&crate::helpers::uid("golfer-model-date"), app.state.clock.now()).await.unwrap();
    assert_eq!(turns[0].response.source, "gpt-6-luna", "the stored turn names the model that answered");

    // The day before, gpt-4o itself is called.
    let before = spawn_model("gpt-4o").await;
    on_day(&before, "2027-01-13");
    assert_eq!(before.chat_json("golfer-model-date", &json!({ "message": "And today?" })).await.0, 200);
    assert_eq!(before.model_requests().await[0]["model"], "gpt-4o");
}

#[tokio::test]
async fn a_model_the_provider_says_does_not_exist_is_replaced_at_once_and_the_same_message_answered() {
    let app = spawn_model("gpt-4o").await;
    on_day(&app, "2026-12-02");
    let gone = json!({ "error": { "message": "The model `gpt-4o` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found" } });
    Mock::given(method("POST"))
        .and(path(MODEL_PATH))
        .and(body_partial_json(json!({ "model": "gpt-4o" })))
        .respond_with(ResponseTemplate::new(404).set_body_json(gone))
        .with_priority(1)
        .mount(&app.model)
        .await;
    let (status, body) = app.chat_json("golfer-model-gone", &json!({ "message": "Is my coach still there?" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["degraded"].clone(), body["source"].clone()), (json!(false), json!("gpt-6-luna")), "the replacement answered, not the fallback: {body}");
    assert_eq!(body["message"]["content"], "Keep your tempo smooth: count one-two on the backswing.");
    let models: Vec<Value> = app.model_requests().await.iter().map(|r| r["model"].clone()).collect();
    assert_eq!(models, [json!("gpt-4o"), json!("gpt-6-luna")]);
    assert!(!app.state.coach.breaker_open(), "a model that is gone is not an outage");
    let line = app.emf_lines().into_iter().filter_map(|l| serde_json::from_str::<Value>(&l).ok()).find(|l| l["Outcome"] == "model").unwrap();
    assert_eq!(line["ModelReplaced"], 1, "{line}");
    assert!(line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().iter().any(|m| m["Name"] == "ModelReplaced"));

    // From then on the replacement is called first.
    assert_eq!(app.chat_json("golfer-model-gone", &json!({ "message": "And next time?" })).await.0, 200);
    assert_eq!(app.model_requests().await.last().unwrap()["model"], "gpt-6-luna");
    assert_eq!(app.model_requests().await.len(), 3);
}

#[tokio::test]
async fn every_rows_request_is_one_openais_chat_completions_schema_accepts() {
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string("tests/fixtures/openai-chat-completions-request.json").unwrap()).unwrap();
    let validator = jsonschema::draft4::new(&fixture).unwrap();
    for (row, temperature, effort, limit) in
        [("gpt-4o", true, None, "max_tokens"), ("gpt-6.1-sol", false, Some("low"), "max_completion_tokens"), ("gpt-6-luna", true, Some("none"), "max_completion_tokens")]
    {
        let app = spawn_model(row).await;
        on_day(&app, "2026-12-02");
        assert_eq!(app.chat_json("golfer-model-schema", &json!({ "message": "Driver tips?" })).await.0, 200);
        let sent = app.model_requests().await.remove(0);
        let errors: Vec<String> = validator.iter_errors(&sent).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{row}: {errors:?}");
        assert_eq!(sent["model"], row);
        assert_eq!(sent.get("temperature").is_some(), temperature, "{row}: temperature only where the row accepts it");
        assert_eq!(sent["reasoning_effort"].as_str(), effort, "{row}");
        assert_eq!(sent[limit], 400, "{row}");
    }
}

/// Runs `coach-api models check` against a provider listing `listed`, `days_ahead` days from now.
async fn models_check(configured: &str, listed: Value, days_ahead: i64) -> (bool, String) {
    let provider = wiremock::MockServer::start().await;
    Mock::given(method("GET")).and(path("/v1/models")).respond_with(ResponseTemplate::new(200).set_body_json(json!({ "object": "list", "data": listed }))).mount(&provider).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_coach-api"))
        .args(["models", "check"])
        .env_clear()
        .env("OPENAI_BASE_URL", format!("{}/v1", provider.uri()))
        .env("OPENAI_API_KEY", "sk-check")
        .env("OPENAI_MODEL", configured)
        .env("CLOCK_OFFSET_SECONDS", (days_ahead * 86_400).to_string())
        .output()
        .await
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn models_check_compares_the_table_with_the_providers_list_and_fails_before_a_shutdown() {
    let listed = |gpt4o_date: Value| {
        json!([
            { "id": "gpt-6-luna", "object": "model", "owned_by": "openai", "shutdown_date": null },
            { "id": "gpt-6.1-sol", "object": "model", "owned_by": "openai" },
            { "id": "gpt-4o", "object": "model", "owned_by": "openai", "shutdown_date": gpt4o_date },
        ])
    };
    let today = chrono::Utc::now().date_naive();
    let shutdown = chrono::NaiveDate::from_ymd_opt(2027, 1, 14).unwrap();
    let far = (shutdown - today).num_days() - 40; // 40 days before gpt-4o's shutdown
    let near = (shutdown - today).num_days() - 20; // 20 days before

    let (ok, table) = models_check("gpt-6-luna", listed(json!("2027-01-14")), 0).await;
    assert!(ok, "{table}");
    assert!(table.lines().any(|l| l.starts_with("gpt-6-luna") && l.contains(" yes ") && l.contains("configured")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("gpt-6.1-terra") && l.contains(" no ")), "a row the provider does not list: {table}");

    let (ok, table) = models_check("gpt-4o", listed(json!("2027-01-14")), far).await;
    assert!(ok, "40 days ahead of the shutdown: {table}");
    assert!(table.lines().any(|l| l.starts_with("gpt-4o") && l.contains("2027-01-14") && l.contains("gpt-6-luna")), "{table}");

    let (ok, table) = models_check("gpt-4o", listed(json!("2027-01-14")), near).await;
    assert!(!ok, "20 days ahead: {table}");
    assert!(table.lines().any(|l| l.starts_with("gpt-4o") && l.contains("shuts down within 30 days")), "{table}");

    let (ok, table) = models_check("gpt-4o", json!([{ "id": "gpt-4o", "shutdown_date": "2027-01-14" }]), far).await;
    assert!(!ok, "the replacement is not listed: {table}");
    assert!(table.lines().any(|l| l.starts_with("gpt-6-luna") && l.contains("replacement: not listed")), "{table}");
}
