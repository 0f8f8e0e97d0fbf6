//! The app's read paths: today's (or a day's) conversation, current themes, usage, and the
//! deletion of the caller's data. Identity and observation work as for the chat call.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;

use super::error::ApiError;
use super::observe::respond;
use super::rate_limit_headers;
use crate::chat::Caller;
use crate::conversation::default_themes;
use crate::limits;
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{ConversationStatus, ConversationView, ConversationViewConversationStatus, DeletionReport, ThemesView, UsageView};
use crate::schemas::Violation;
use crate::state::AppState;
use crate::store::keys;
use crate::store::StoreError;

/// A read's result as a response, observed like every request.
fn answered(caller: &Caller, result: Result<Response, ApiError>) -> Response {
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
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(Some).map_err(|_| bad())
}

pub async fn conversation(State(state): State<AppState>, caller: Caller, RawQuery(query): RawQuery) -> Response {
    answered(&caller, conversation_view(&state, &caller, query.as_deref()).await)
}

async fn conversation_view(state: &AppState, caller: &Caller, query: Option<&str>) -> Result<Response, ApiError> {
    let day = match date_param(query)? {
        Some(d) => d.and_hms_opt(12, 0, 0).map(|t| t.and_utc()).unwrap_or_else(|| state.clock.now()),
        None => state.clock.now(),
    };
    let Some(c) = state.store.conversation(&keys::conversation(&caller.user, day)).await? else {
        return Err(ApiError::NotFound);
    };
    let view = ConversationView {
        request_id: caller.request_id.clone(),
        conversation_id: c.conversation_id,
        date: crate::clock::date(day).try_into().map_err(|_| ApiError::Store(StoreError::Rejected("date".into())))?,
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
    let result = async {
        let view = match state.store.latest_turn(&caller.user).await? {
            Some(t) => ThemesView {
                request_id: caller.request_id.clone(),
                coaching_themes: t.coaching_themes,
                referenced_swings: t.referenced_swings,
                last_updated: Some(t.last_updated),
            },
            None => ThemesView {
                request_id: caller.request_id.clone(),
                coaching_themes: default_themes(),
                referenced_swings: vec![],
                last_updated: None,
            },
        };
        Ok(Json(view).into_response())
    };
    answered(&caller, result.await)
}

pub async fn usage(State(state): State<AppState>, caller: Caller) -> Response {
    let result = async {
        let now = state.clock.now();
        let admission = limits::admission(&state.config.limits, &caller.user, &caller.ip, now);
        let quota = limits::quota(&state.config.limits, state.store.usage(&admission.keys).await?, now);
        let mut headers = HeaderMap::new();
        rate_limit_headers(&mut headers, &quota);
        Ok((StatusCode::OK, headers, Json(UsageView { request_id: caller.request_id.clone(), quota })).into_response())
    };
    answered(&caller, result.await)
}

pub async fn delete_me(State(state): State<AppState>, caller: Caller) -> Response {
    let result = async {
        let d = state.store.delete_golfer(&caller.user, state.clock.now().timestamp_millis()).await?;
        let report = DeletionReport {
            request_id: caller.request_id.clone(),
            conversations_deleted: d.conversations,
            profile_deleted: d.profile,
            turns_deleted: d.turns,
        };
        Ok(Json(report).into_response())
    };
    answered(&caller, result.await)
}
