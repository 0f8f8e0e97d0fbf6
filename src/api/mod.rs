//! The HTTP edge: router, request id, identity, body checks, and the mapping of the domain's
//! results to responses. The same Router serves Lambda (through lambda_http) and `serve`.

pub mod error;
pub mod identity;
pub mod reads;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::time::Instant;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::chat::{Answer, AppState, Caller, Outcome};
use crate::config::AuthMode;
use crate::models::{CoachingChatRequest, Quota};
use crate::safety;
use crate::schemas;
use crate::store::keys::IpHash;
use error::ApiError;
use identity::{caller_identity, client_ip, lambda_deadline_ms, lambda_request_id};

pub const CHAT_PATH: &str = "/api/chat/coaching";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served ("" outside one).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors_origins);
    let mut app = Router::new()
        .route(CHAT_PATH, post(post_chat))
        .route("/api/chat/coaching/conversation", get(reads::conversation))
        .route("/api/chat/coaching/themes", get(reads::themes))
        .route("/api/chat/coaching/usage", get(reads::usage))
        .route("/api/chat/coaching/me", delete(reads::delete_me))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn(with_request_id));
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    app
}

/// The Router as Lambda serves it: lambda_http puts the API Gateway stage in front of the
/// path (`/prod/api/...`); it is removed before routing so routes are stage-independent.
pub fn lambda_service(state: AppState) -> tower::util::MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request> {
    tower::ServiceExt::map_request(router(state), strip_stage::<lambda_http::Body> as fn(_) -> _)
}

fn strip_stage<B>(mut request: http::Request<B>) -> http::Request<B> {
    let Some(stage) = identity::stage(&request) else { return request };
    let prefix = format!("/{stage}");
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix(&prefix).filter(|r| r.starts_with('/')) else { return request };
    let rebuilt = match request.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    if let Ok(uri) = rebuilt.parse() {
        *request.uri_mut() = uri;
    }
    request
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::HeaderName::from_static("x-user-id")])
            .expose_headers([
                header::RETRY_AFTER,
                header::HeaderName::from_static("ratelimit-limit"),
                header::HeaderName::from_static("ratelimit-remaining"),
                header::HeaderName::from_static("ratelimit-reset"),
                header::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

async fn with_request_id(request: Request, next: Next) -> Response {
    let id = lambda_request_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], schemas::OPENAPI).into_response()
}

/// IETF draft RateLimit headers from the quota.
pub fn rate_limit_headers(headers: &mut HeaderMap, q: &Quota) {
    let reset = chrono::DateTime::parse_from_rfc3339(&q.hour_resets_at)
        .map(|t| (t.timestamp() - chrono::Utc::now().timestamp()).max(0))
        .unwrap_or(0);
    for (name, value) in [
        ("ratelimit-limit", q.requests_limit_hour.to_string()),
        ("ratelimit-remaining", q.requests_remaining_hour.to_string()),
        ("ratelimit-reset", reset.to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The checks before the domain, in the order a gateway would apply them.
async fn parse(state: &AppState, request: Request) -> Result<(Caller, CoachingChatRequest, String, Instant), ApiError> {
    let (parts, body) = request.into_parts();
    let user = caller_identity(state.config.auth_mode, &parts)?;
    let ip = client_ip(&parts).or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()));
    let ip = IpHash::of(ip.as_deref().unwrap_or("unknown"));

    let max = state.config.limits.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::PayloadTooLarge);
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes: Bytes = axum::body::to_bytes(body, max).await.map_err(|_| ApiError::PayloadTooLarge)?;

    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::Invalid(vec![schemas::Violation { field: String::new(), problem: "is not valid JSON".into() }])
    })?;
    let violations = schemas::violations(&schemas::get()?.chat_request, &value);
    if !violations.is_empty() {
        return Err(ApiError::Invalid(violations));
    }
    let chat: CoachingChatRequest = serde_json::from_value(value).map_err(|e| {
        // The schema accepted it, so this is a schema/type mismatch on our side; say so plainly.
        ApiError::Invalid(vec![schemas::Violation { field: String::new(), problem: format!("does not match the request type: {e}") }])
    })?;
    if chat.user_id.as_ref().is_some_and(|u| u != &user) {
        return Err(ApiError::Forbidden);
    }
    let message = safety::clean_input(&chat.message).map_err(|e| {
        ApiError::Invalid(vec![schemas::Violation { field: "/message".into(), problem: e.to_string() }])
    })?;

    let budget = state.config.request_budget;
    let margin = state.config.deadline_margin;
    let left = match lambda_deadline_ms(&parts) {
        Some(deadline_ms) => {
            let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
            Duration::from_millis(deadline_ms.saturating_sub(now_ms)).min(budget)
        }
        None => budget,
    };
    let deadline = Instant::now() + left.saturating_sub(margin);
    Ok((Caller { user, ip }, chat, message, deadline))
}

async fn post_chat(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = current_request_id();
    let mut outcome = Outcome::default();
    let mut who: Option<Caller> = None;

    let (result, io) = crate::store::stats::scope(async {
        let (caller, chat, message, deadline) = parse(&state, request).await?;
        who = Some(caller.clone());
        state.handle(&caller, &chat, message, &request_id, deadline, &mut outcome).await.map_err(ApiError::from)
    })
    .await;
    outcome.metrics.io = io;

    let response = match result {
        Ok(Answer::Fresh(body)) => {
            let mut headers = HeaderMap::new();
            rate_limit_headers(&mut headers, &body.quota);
            (StatusCode::OK, headers, Json(body)).into_response()
        }
        Ok(Answer::Replay(body)) => {
            outcome.metrics.outcome = "replay";
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => {
            outcome.metrics.outcome = if e.status_code().is_server_error() { "error" } else { "refused" };
            e.into_response()
        }
    };

    observe(&state, who.as_ref(), response.status(), &mut outcome, started);
    response
}

/// After every request: one EMF line and one security line.
pub(crate) fn observe(state: &AppState, who: Option<&Caller>, status: StatusCode, outcome: &mut Outcome, started: Instant) {
    let request_id = current_request_id();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    outcome.metrics.response_ms = elapsed_ms;
    outcome.metrics.server_error = status.is_server_error() && outcome.limit.is_none();
    outcome.metrics.emit(&state.metrics);
    security_log(state, &request_id, who, status, outcome, elapsed_ms);
}

/// One line per request with hashed ids and no message text.
fn security_log(state: &AppState, request_id: &str, who: Option<&Caller>, status: StatusCode, outcome: &Outcome, elapsed_ms: f64) {
    let key = &*state.log_key;
    let user = who.map(|c| safety::log_hash(key, c.user.as_str())).unwrap_or_default();
    let ip = who.map(|c| safety::log_hash(key, c.ip.as_str())).unwrap_or_default();
    tracing::info!(
        target: "security",
        request_id,
        user_hash = %user,
        ip_hash = %ip,
        status = status.as_u16(),
        outcome = outcome.metrics.outcome,
        limit = outcome.limit.unwrap_or(""),
        model_error = outcome.model_error.unwrap_or(""),
        filtered = outcome.metrics.filtered,
        auth = match state.config.auth_mode { AuthMode::Cognito => "cognito", AuthMode::Local => "local" },
        latency_ms = elapsed_ms,
        "request"
    );
}
