//! A recorded API Gateway REST proxy event (Cognito authorizer claims) fed through
//! lambda_http's adapter, the same path `lambda_http::run` takes in Lambda.

use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{Adapter, Context, LambdaEvent};
use serde_json::Value;

use crate::helpers::{assert_valid, prompt_text, schemas, spawn_with};
use coach_api::config::AuthMode;

const EVENT: &str = include_str!("../fixtures/apigw-rest-chat.json");

async fn invoke(state: coach_api::chat::AppState, event: &str) -> Value {
    let request: LambdaRequest = serde_json::from_str(event).unwrap_or_else(|e| panic!("fixture: {e}"));
    let mut context = Context::default();
    context.request_id = "lambda-invocation-1".into();
    context.deadline = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0) + 29_000;
    let adapter: Adapter<'_, _, _> = Adapter::from(coach_api::api::lambda_service(state));
    let response = adapter
        .oneshot(LambdaEvent::new(request, context))
        .await
        .unwrap_or_else(|e| panic!("adapter: {e}"));
    serde_json::to_value(response).unwrap_or_default()
}

#[tokio::test]
async fn a_recorded_api_gateway_event_reaches_the_handler_as_the_cognito_caller() {
    let app = spawn_with(|c| c.auth_mode = AuthMode::Cognito).await;
    let response = invoke(app.state.clone(), EVENT).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_valid(&schemas().chat_response, &body);
    assert_eq!(body["request_id"], "5d2f8a0e-8c1b-4f3e-a2d7-9e6b1c4f0a37", "API Gateway's request id");
    assert_eq!(body["conversation_id"].as_str().map(|s| s.starts_with("conv_3f9c2a71-58d4-4c1e-9b7a-0d6e2f4a8b13_")), Some(true));
    let sent = app.model_requests().await;
    assert_eq!(sent.len(), 1);
    assert!(prompt_text(&sent[0]).contains("How do I stop slicing my driver?"));
}

#[tokio::test]
async fn without_authorizer_claims_the_event_is_refused() {
    let app = spawn_with(|c| c.auth_mode = AuthMode::Cognito).await;
    let mut event: Value = serde_json::from_str(EVENT).unwrap_or_default();
    event["requestContext"]["authorizer"] = Value::Null;
    let response = invoke(app.state.clone(), &event.to_string()).await;
    assert_eq!(response["statusCode"], 401, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_valid(&schemas().error, &body);
    assert!(app.model_requests().await.is_empty());
}
