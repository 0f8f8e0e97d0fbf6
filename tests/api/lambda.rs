//! A recorded API Gateway REST proxy event (Cognito authorizer claims) fed through
//! lambda_http's adapter, the same path `lambda_http::run` takes in Lambda.

use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{Adapter, Context, LambdaEvent};
use serde_json::Value;

use crate::helpers::{assert_valid, prompt_text, schemas, spawn_with};
use coach_api::config::AuthMode;

const EVENT: &str = include_str!("../fixtures/apigw-rest-chat.json");

async fn invoke(state: coach_api::state::AppState, event: &str) -> Value {
    let request: LambdaRequest = serde_json::from_str(event).unwrap_or_else(|e| panic!("fixture: {e}"));
    let mut context = Context::default();
    context.request_id = "lambda-invocation-1".into();
    context.deadline = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0) + 29_000;
    let adapter: Adapter<'_, _, _> = Adapter::from(coach_api::api::lambda_service(state));
    let response = adapter.oneshot(LambdaEvent::new(request, context)).await.unwrap_or_else(|e| panic!("adapter: {e}"));
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

/// A minimal Lambda Runtime API (2018-06-01): hands out one event, collects its response.
mod emulator {
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::{get, post};
    use axum::Router;
    use tokio::sync::Notify;

    pub type Chunk = (tokio::time::Instant, Vec<u8>);

    #[derive(Clone, Default)]
    pub struct Runtime {
        pub event: Arc<Mutex<Option<String>>>,
        pub response: Arc<Mutex<Option<String>>>,
        /// The response's body as it arrived: each chunk with when it came.
        pub chunks: Arc<Mutex<Vec<Chunk>>>,
        /// The `Lambda-Runtime-Function-Response-Mode` header of the response.
        pub mode: Arc<Mutex<Option<String>>>,
        pub error: Arc<Mutex<Option<String>>>,
        pub done: Arc<Notify>,
    }

    async fn next(State(rt): State<Runtime>) -> (HeaderMap, String) {
        let event = rt.event.lock().unwrap().take();
        let Some(event) = event else {
            // No more work: park the runtime's long poll, as Lambda does between invocations.
            std::future::pending::<()>().await;
            unreachable!()
        };
        let mut h = HeaderMap::new();
        let deadline = chrono::Utc::now().timestamp_millis() + 29_000;
        h.insert("lambda-runtime-aws-request-id", "emulated-invocation-1".parse().unwrap());
        h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().unwrap());
        h.insert("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:coach-api".parse().unwrap());
        h.insert("lambda-runtime-trace-id", "Root=1-6743a1f2-0b5c3d1e2f3a4b5c6d7e8f90;Sampled=0".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        (h, event)
    }

    async fn response(State(rt): State<Runtime>, Path(_id): Path<String>, headers: HeaderMap, body: axum::body::Body) -> &'static str {
        use futures::StreamExt;
        let mode = headers.get("lambda-runtime-function-response-mode").and_then(|v| v.to_str().ok()).map(str::to_string);
        *rt.mode.lock().unwrap() = mode;
        let mut data = body.into_data_stream();
        let mut all = vec![];
        while let Some(Ok(chunk)) = data.next().await {
            rt.chunks.lock().unwrap().push((tokio::time::Instant::now(), chunk.to_vec()));
            all.extend_from_slice(&chunk);
        }
        *rt.response.lock().unwrap() = Some(String::from_utf8_lossy(&all).into_owned());
        rt.done.notify_one();
        "{}"
    }

    async fn error(State(rt): State<Runtime>, body: String) -> &'static str {
        *rt.error.lock().unwrap() = Some(body);
        rt.done.notify_one();
        "{}"
    }

    pub async fn start(rt: Runtime) -> String {
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(error))
            .with_state(rt);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("127.0.0.1:{}", addr.port())
    }
}

/// The release binary as Lambda starts it, against the emulated Runtime API at `api`.
fn lambda_binary(api: &str, app: &crate::helpers::TestApp, model_url: &str, mode: &str) -> tokio::process::Child {
    lambda_command(api, app, model_url, mode).stderr(std::process::Stdio::null()).spawn().expect("the binary starts")
}

/// The binary's command as Lambda would run it, with the deployment's log-hash key.
fn lambda_command(api: &str, app: &crate::helpers::TestApp, model_url: &str, mode: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_coach-api"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "coach-api")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/coach-api")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "emulated")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("DYNAMODB_ENDPOINT", crate::helpers::dynamodb_endpoint())
        .env("DYNAMODB_TABLE_COACHING", app.store.table())
        .env("DYNAMODB_TABLE_ANALYSES", app.store.analyses_table())
        .env("OPENAI_BASE_URL", model_url)
        .env("LAMBDA_RESPONSE_MODE", mode)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .env("AUTH_MODE", "cognito")
        .env("LOG_HASH_KEY", "lambda-test-log-hash-key")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_binary_refuses_to_start_with_the_public_log_hash_key() {
    let app = spawn_with(|c| c.auth_mode = AuthMode::Cognito).await;
    let rt = emulator::Runtime::default();
    let api = emulator::start(rt.clone()).await;
    let mut command = lambda_command(&api, &app, &format!("{}/v1", app.model.uri()), "buffered");
    command.env_remove("LOG_HASH_KEY").stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("the binary starts");
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output()).await.expect("it exits").expect("its output");
    assert!(!output.status.success(), "it served with a public key");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("log-hash key must be set"), "{stderr}");
    assert!(app.model_requests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_binary_answers_a_recorded_event_under_a_runtime_api_emulator() {
    let app = spawn_with(|c| c.auth_mode = AuthMode::Cognito).await;
    let rt = emulator::Runtime::default();
    *rt.event.lock().unwrap() = Some(EVENT.to_string());
    let api = emulator::start(rt.clone()).await;

    let child = lambda_binary(&api, &app, &format!("{}/v1", app.model.uri()), "buffered");
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), rt.done.notified()).await;
    assert!(answered.is_ok(), "no response from the Lambda binary within 30 s");
    let mut child = child;
    let _ = child.start_kill();
    let output = child.wait_with_output().await.expect("the binary's output");
    assert!(rt.error.lock().unwrap().is_none(), "the runtime reported an error: {:?}", rt.error.lock().unwrap());

    let response: Value = serde_json::from_str(rt.response.lock().unwrap().as_deref().unwrap_or("null")).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_valid(&schemas().chat_response, &body);
    assert_eq!(body["source"], "gpt-6-luna");
    assert_eq!(app.model_requests().await.len(), 1);

    // The binary printed exactly one EMF line for the invocation, valid per the EMF structure.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let emf: Vec<&str> = stdout.lines().filter(|l| l.contains("\"_aws\"")).collect();
    assert_eq!(emf.len(), 1, "{stdout}");
    let line = crate::helpers::assert_emf(emf[0]);
    assert_eq!(line["ConversationRequests"], 1);
    assert_eq!(line["TokensUsed"], 820);
    assert!(!emf[0].contains("3f9c2a71"), "no user id in metrics");
}

/// The streamed route's function: the same binary in streaming mode answers the recorded
/// event, sent to the stream path, with Lambda's HTTP integration response (a JSON prelude,
/// eight NUL bytes, then the body) and writes the events while the model writes its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_streaming_lambda_binary_streams_the_events_under_a_runtime_api_emulator() {
    use crate::stream_model::{Script, StreamModel};
    let content = crate::helpers::payload("Keep your head still and let the arms swing through. Count one-two on the way back and through.").to_string();
    let model = StreamModel::start(Script::new(crate::helpers::completion::split_even(&content, 12), std::time::Duration::from_millis(80), (700, 120))).await;
    let app = spawn_with(|c| c.auth_mode = AuthMode::Cognito).await;
    let mut event: Value = serde_json::from_str(EVENT).unwrap_or_default();
    event["path"] = coach_api::api::CHAT_STREAM_PATH.into();
    event["resource"] = coach_api::api::CHAT_STREAM_PATH.into();
    event["requestContext"]["resourcePath"] = coach_api::api::CHAT_STREAM_PATH.into();
    event["requestContext"]["path"] = format!("/prod{}", coach_api::api::CHAT_STREAM_PATH).into();
    let rt = emulator::Runtime::default();
    *rt.event.lock().unwrap() = Some(event.to_string());
    let api = emulator::start(rt.clone()).await;
    let mut child = lambda_binary(&api, &app, &model.base_url, "streaming");
    let stdout = child.stdout.take().expect("the binary's stdout");
    let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let lines = printed.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
        }
    });

    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), rt.done.notified()).await;
    // The metrics line of a streamed answer is written as its stream ends.
    let mut emf = None;
    for _ in 0..40 {
        emf = printed.lock().unwrap().iter().find(|l| l.contains("\"_aws\"")).cloned();
        if emf.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.start_kill();
    assert!(answered.is_ok(), "no response from the Lambda binary within 30 s");
    let line = crate::helpers::assert_emf(&emf.expect("an EMF line for the streamed invocation"));
    assert_eq!(line["ConversationRequests"], 1);
    assert!(line["FirstDeltaTime"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(rt.error.lock().unwrap().is_none(), "the runtime reported an error: {:?}", rt.error.lock().unwrap());
    assert_eq!(rt.mode.lock().unwrap().as_deref(), Some("streaming"));

    let whole = rt.response.lock().unwrap().clone().unwrap_or_default();
    let (prelude, body) = whole.split_once("\0\0\0\0\0\0\0\0").expect("a prelude and eight NUL bytes");
    let prelude: Value = serde_json::from_str(prelude).unwrap_or_else(|e| panic!("prelude {prelude:?}: {e}"));
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "text/event-stream");
    let events: Vec<Value> = body.split("\n\n").filter_map(|b| b.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    for e in &events {
        assert_valid(&schemas().chat_stream, e);
    }
    let last = events.last().expect("events");
    assert_eq!(last["type"], "done", "{body}");
    let shown: String = events.iter().filter(|e| e["type"] == "delta").map(|e| e["text"].as_str().unwrap_or_default()).collect();
    assert_eq!(last["response"]["message"]["content"], shown.as_str());

    // Streamed, not buffered: the first delta reached the Runtime API before the model had
    // written half its answer.
    let written = model.written();
    let chunks = rt.chunks.lock().unwrap().clone();
    let first_delta = chunks.iter().find(|(_, c)| String::from_utf8_lossy(c).contains("\"type\":\"delta\"")).map(|(t, _)| *t).expect("a delta chunk");
    assert!(first_delta < written[6], "first delta {:?} after the model's first piece", first_delta - written[0]);
}
