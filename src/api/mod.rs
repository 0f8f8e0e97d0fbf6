//! The HTTP edge: the route table and the router it builds, the `Caller` extractor, the
//! observation layer, and the mapping of the domain's results to responses. The same Router
//! serves Lambda (through lambda_http) and `serve`.

pub mod caller;
pub mod chat;
pub mod error;
pub mod feedback;
pub mod identity;
pub mod memory;
pub mod observe;
pub mod reads;
pub mod routes;
pub mod stream;

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter, MethodRouter};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::models::Quota;
use crate::schemas;
use crate::state::AppState;
use error::ApiError;
use routes::{Operation, ROUTES};
pub use routes::{CHAT_PATH, CHAT_STREAM_PATH};

/// The handler of each operation in the route table.
fn handler(operation: Operation, filter: MethodFilter) -> MethodRouter<AppState> {
    match operation {
        Operation::PostCoachingMessage => on(filter, chat::post_chat),
        Operation::StreamCoachingMessage => on(filter, stream::post_chat_stream),
        Operation::GetConversation => on(filter, reads::conversation),
        Operation::GetThemes => on(filter, reads::themes),
        Operation::GetUsage => on(filter, reads::usage),
        Operation::DeleteMyData => on(filter, reads::delete_me),
        Operation::RateAnswer => on(filter, feedback::rate),
        Operation::GetMemory => on(filter, memory::list),
        Operation::ForgetFact => on(filter, memory::forget),
        Operation::SetMemory => on(filter, memory::settings),
    }
}

fn method_filter(method: &str) -> Option<MethodFilter> {
    match method {
        "get" => Some(MethodFilter::GET),
        "post" => Some(MethodFilter::POST),
        "delete" => Some(MethodFilter::DELETE),
        "put" => Some(MethodFilter::PUT),
        _ => None,
    }
}

pub fn router(state: AppState) -> Router {
    let cors = cors(&state.config.cors_origins);
    let mut app = Router::new();
    for route in ROUTES {
        // The table's methods are all known (a unit test checks); an unknown one is not served.
        if let Some(filter) = method_filter(route.method) {
            app = app.route(route.path, handler(route.operation, filter));
        }
    }
    let mut app = app
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe::observe))
        .with_state(state);
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
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS])
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

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], schemas::OPENAPI).into_response()
}

/// The golfer's quota, left in a response's extensions by whoever answers with one; the
/// observation layer writes it as the RateLimit headers, counted on the service's clock.
#[derive(Debug, Clone)]
pub struct RateLimit(pub Quota);

impl RateLimit {
    /// `response` with the quota for the layer to write.
    pub fn attach(quota: &Quota, mut response: Response) -> Response {
        response.extensions_mut().insert(Self(quota.clone()));
        response
    }
}

/// IETF draft RateLimit headers from the quota, the reset in seconds from `now`.
fn rate_limit_headers(headers: &mut HeaderMap, q: &Quota, now: chrono::DateTime<chrono::Utc>) {
    let reset = crate::clock::seconds_until(&q.hour_resets_at, now);
    for (name, value) in
        [("ratelimit-limit", q.requests_limit_hour.to_string()), ("ratelimit-remaining", q.requests_remaining_hour.to_string()), ("ratelimit-reset", reset.to_string())]
    {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_known_method_and_a_path_of_its_own() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(method_filter(r.method).is_some(), "{} {}", r.method, r.path);
            assert!(seen.insert(r.path), "{} is in the table twice", r.path);
        }
    }

    #[test]
    fn the_openapi_document_has_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(schemas::OPENAPI).unwrap_or_default();
        let mut documented: Vec<(String, String, String)> = vec![];
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                documented.push((path.clone(), method.clone(), op["operationId"].as_str().unwrap_or_default().to_string()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String, String)> = ROUTES.iter().map(|r| (r.path.to_string(), r.method.to_string(), r.operation_id.to_string())).collect();
        served.sort();
        assert_eq!(documented, served);
    }
}
