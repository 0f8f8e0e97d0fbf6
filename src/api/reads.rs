//! The app's read paths: today's (or a day's) conversation, current themes, usage, and the
//! deletion of the caller's data. Identity and observation work as for the chat call.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;

use super::error::ApiError;
use super::observe::respond;
use super::RateLimit;
use crate::account;
use crate::chat::Caller;
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{ConversationStatus, ConversationView, ConversationViewConversationStatus};
use crate::schemas::Violation;
use crate::state::AppState;

/// A read's result as a response, observed like every request.
pub(super) fn answered(caller: &Caller, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(response) => respond(caller, Outcome::of(OutcomeKind::Read), response),
        Err(e) => respond(caller, e.outcome(), e),
    }
}

fn date_param(query: Option<&str>) -> Result<Option<NaiveDate>, ApiError> {
    let Some(raw) = query.into_iter().flat_map(|q| q.split('&')).find_map(|kv| kv.strip_prefix("date=")) else {
        return Ok(None);
    };
    let bad = || ApiError::Invalid(vec![Violation { field: "/date".into(), problem: "must be a date as YYYY-MM-DD".into() }]);
    if raw.len() != 10 {
        return Err(bad());
    }
    crate::clock::parse_date(raw).map(Some).ok_or_else(bad)
}

pub async fn conversation(State(state): State<AppState>, caller: Caller, RawQuery(query): RawQuery) -> Response {
    answered(&caller, conversation_view(&state, &caller, query.as_deref()).await)
}

async fn conversation_view(state: &AppState, caller: &Caller, query: Option<&str>) -> Result<Response, ApiError> {
    let day = match date_param(query)? {
        Some(d) => d.and_hms_opt(12, 0, 0).map(|t| t.and_utc()).unwrap_or_else(|| state.clock.now()),
        None => state.clock.now(),
    };
    let c = account::conversation_of(state, caller, day).await?;
    let view = ConversationView {
        request_id: caller.request_id.clone(),
        conversation_id: c.conversation_id,
        date: crate::clock::date(day).try_into().map_err(|_| ApiError::Internal)?,
        messages: c.recent_messages,
        summary: c.summary,
        coaching_themes: c.coaching_themes,
        referenced_swings: c.referenced_swings,
        conversation_status: match c.conversation_status {
            ConversationStatus::Active => ConversationViewConversationStatus::Active,
            ConversationStatus::Archived => ConversationViewConversationStatus::Archived,
            ConversationStatus::Compressed => ConversationViewConversationStatus::Compressed,
        },
    };
    Ok(Json(view).into_response())
}

pub async fn themes(State(state): State<AppState>, caller: Caller) -> Response {
    let result = account::themes_of(&state, &caller).await.map(|view| Json(view).into_response()).map_err(ApiError::from);
    answered(&caller, result)
}

pub async fn usage(State(state): State<AppState>, caller: Caller) -> Response {
    let result = account::usage_of(&state, &caller).await.map_err(ApiError::from).map(|view| {
        let quota = view.quota.clone();
        RateLimit::attach(&quota, Json(view).into_response())
    });
    answered(&caller, result)
}

pub async fn delete_me(State(state): State<AppState>, caller: Caller) -> Response {
    let result = account::erase(&state, &caller).await.map(|report| Json(report).into_response()).map_err(ApiError::from);
    answered(&caller, result)
}
