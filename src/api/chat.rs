//! `POST /api/chat/coaching`: the body checks in the order a gateway applies them (size,
//! media type, JSON, schema, the caller's own user id, input sanitizing), then the domain.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::observe::respond;
use super::RateLimit;
use crate::chat::{Caller, ChatInput};
use crate::models::CoachingChatRequest;
use crate::safety;
use crate::schemas::{self, Violation};
use crate::state::AppState;

/// A JSON body the way a gateway checks it: the caller first, then size, media type, JSON
/// and the schema `schema` picks (the same one API Gateway validates with), as `T`.
pub async fn checked_body<T: serde::de::DeserializeOwned>(
    request: Request,
    state: &AppState,
    schema: fn(&schemas::Schemas) -> &jsonschema::Validator,
) -> Result<(Caller, T), ApiError> {
    let validator = schema(schemas::get()?);
    let (mut parts, body) = request.into_parts();
    let caller = Caller::from_request_parts(&mut parts, state).await?;
    let max = state.config.limits.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::PayloadTooLarge);
    }
    let is_json =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()).is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes: Bytes = axum::body::to_bytes(body, max).await.map_err(|_| ApiError::PayloadTooLarge)?;
    Ok((caller, validated(&bytes, validator)?))
}

impl FromRequest<AppState> for ChatInput {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (caller, request): (Caller, CoachingChatRequest) = checked_body(request, state, |s| &s.chat_request).await?;
        if request.user_id.as_ref().is_some_and(|u| u != &caller.user) {
            return Err(ApiError::Forbidden);
        }
        let message = safety::clean_input(&request.message).map_err(|e| ApiError::Invalid(vec![Violation { field: "/message".into(), problem: e.to_string() }]))?;
        Ok(ChatInput { request, message })
    }
}

/// The body as the schema accepts it.
fn validated<T: serde::de::DeserializeOwned>(bytes: &[u8], validator: &jsonschema::Validator) -> Result<T, ApiError> {
    let whole = |problem: String| ApiError::Invalid(vec![Violation { field: String::new(), problem }]);
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| whole("is not valid JSON".into()))?;
    let violations = schemas::violations(validator, &value);
    if !violations.is_empty() {
        return Err(ApiError::Invalid(violations));
    }
    // The schema accepted it, so a failure here is a schema/type mismatch on our side; say so plainly.
    serde_json::from_value(value).map_err(|e| whole(format!("does not match the request type: {e}")))
}

pub async fn post_chat(State(state): State<AppState>, caller: Caller, input: ChatInput) -> Response {
    match crate::chat::whole_answer(&state, &caller, &input).await {
        Ok(answered) => {
            let quota = answered.response.quota.clone();
            let response = (StatusCode::OK, Json(answered.response)).into_response();
            // A replay is not counted against the hour again: it carries no RateLimit headers.
            let response = if answered.replay { response } else { RateLimit::attach(&quota, response) };
            respond(&caller, answered.outcome, response)
        }
        Err(e) => {
            let e = ApiError::from(e);
            respond(&caller, e.outcome(), e)
        }
    }
}
