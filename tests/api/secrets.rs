//! The model key comes from Secrets Manager at start and again after a 401, never from the
//! function's environment. A loopback stand-in speaks Secrets Manager's JSON protocol.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{completion, payload, spawn_with, MODEL_PATH};

/// A Secrets Manager answering GetSecretValue with the current `api_key`; counts the reads.
async fn secrets_manager(key: Arc<Mutex<String>>, reads: Arc<Mutex<u32>>) -> String {
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, body: String| {
        let (key, reads) = (key.clone(), reads.clone());
        async move {
            let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            assert_eq!(target, "secretsmanager.GetSecretValue");
            let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            *reads.lock().unwrap() += 1;
            let secret = json!({ "api_key": key.lock().unwrap().clone(), "log_hash_key": "from-the-secret" }).to_string();
            let answer = json!({ "ARN": request["SecretId"], "Name": "golf-coach/openai", "SecretString": secret, "VersionId": "v1" });
            ([("content-type", "application/x-amz-json-1.1")], answer.to_string())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn the_key_is_read_from_the_secret_at_start_and_again_after_a_401() {
    let key = Arc::new(Mutex::new("sk-first-from-secret".to_string()));
    let reads = Arc::new(Mutex::new(0));
    let endpoint = secrets_manager(key.clone(), reads.clone()).await;
    crate::logs::sensitive("sk-first-from-secret");
    crate::logs::sensitive("sk-rotated-from-secret");
    let app = spawn_with(move |c| {
        c.model.api_key = None;
        c.model.secret_arn = Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:golf-coach/openai-AbCdEf".into());
        c.secrets_endpoint = Some(endpoint);
    })
    .await;
    assert_eq!(*reads.lock().unwrap(), 1, "read once at start");
    // The provider knows only the rotated key.
    Mock::given(method("POST"))
        .and(path(MODEL_PATH))
        .and(header("authorization", "Bearer sk-rotated-from-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&payload("Rotated and answering."), 700, 120)))
        .with_priority(1)
        .mount(&app.model)
        .await;
    Mock::given(method("POST"))
        .and(path(MODEL_PATH))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "error": { "message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } })),
        )
        .with_priority(2)
        .mount(&app.model)
        .await;
    *key.lock().unwrap() = "sk-rotated-from-secret".into(); // rotated after the function started
    let (status, body) = app.chat_json("golfer-secret-1", &json!({ "message": "Coach?" })).await;
    assert_eq!((status, body["degraded"].clone()), (200, json!(false)), "answered with the key read again: {body}");
    assert_eq!(*reads.lock().unwrap(), 2, "read again after the 401");
    let auths: Vec<String> =
        app.model.received_requests().await.unwrap_or_default().iter().filter_map(|r| r.headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string)).collect();
    assert_eq!(auths, ["Bearer sk-first-from-secret", "Bearer sk-rotated-from-secret"]);
}

#[tokio::test]
async fn without_the_secret_the_service_does_not_start() {
    let mut config = coach_api::config::Config { dynamodb_endpoint: Some(crate::helpers::dynamodb_endpoint()), ..Default::default() };
    config.model.secret_arn = Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:missing".into());
    config.secrets_endpoint = Some("http://127.0.0.1:9".into()); // nothing listens there
    let started = coach_api::state::AppState::build(config, coach_api::state::Warm::Now, Default::default()).await;
    let error = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("could not be read from Secrets Manager"), "{error}");
}
