//! The app's read paths: today's (or a day's) conversation, current themes, usage, and the
//! deletion of the caller's data. Identity works as for the chat call.

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use tokio::time::Instant;

use super::error::ApiError;
use super::identity::{caller_identity, client_ip};
use super::{current_request_id, observe, rate_limit_headers};
use crate::chat::{AppState, Caller, Outcome};
use crate::conversation::default_themes;
use crate::limits;
use crate::models::{ConversationView, ConversationViewConversationStatus, DeletionReport, ThemesView, UsageView};
use crate::schemas::Violation;
use crate::store::keys::{self, IpHash};

/// The caller of a read, established exactly as for the chat call.
pub struct Golfer(pub Caller);

impl FromRequestParts<AppState> for Golfer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = caller_identity(state.config.auth_mode, parts)?;
        let ip = client_ip(parts)
            .or_else(|| parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()));
        Ok(Self(Caller { user, ip: IpHash::of(ip.as_deref().unwrap_or("unknown")) }))
    }
}

/// Runs a read, then emits its metrics and security line like every request.
async fn observed<F>(state: &AppState, golfer: Result<Golfer, ApiError>, read: impl FnOnce(Caller) -> F) -> Response
where
    F: std::future::Future<Output = Result<Response, ApiError>>,
{
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let (who, result) = match golfer {
        Ok(Golfer(caller)) => (Some(caller.clone()), read(caller).await),
        Err(e) => (None, Err(e)),
    };
    outcome.metrics.outcome = match &result {
        Ok(_) => "read",
        Err(e) if e.status_code().is_server_error() => "error",
        Err(_) => "refused",
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    observe(state, who.as_ref(), response.status(), &mut outcome, started);
    response
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

pub async fn conversation(State(state): State<AppState>, golfer: Result<Golfer, ApiError>, RawQuery(query): RawQuery) -> Response {
    let st = state.clone();
    observed(&state, golfer, |caller| async move {
        let state = st;
        let day = match date_param(query.as_deref())? {
            Some(d) => d.and_hms_opt(12, 0, 0).map(|t| t.and_utc()).unwrap_or_else(|| state.clock.now()),
            None => state.clock.now(),
        };
        let key = keys::conversation(&caller.user, day);
        let Some(c) = state.store.conversation(&key).await? else {
            return Err(ApiError::NotFound);
        };
        let view = ConversationView {
            request_id: current_request_id(),
            conversation_id: c.conversation_id,
            date: day
                .format("%Y-%m-%d")
                .to_string()
                .try_into()
                .map_err(|_| ApiError::Store(crate::store::StoreError::Rejected("date".into())))?,
            messages: c.recent_messages,
            summary: c.summary,
            coaching_themes: c.coaching_themes,
            referenced_swings: c.referenced_swings,
            conversation_status: match c.conversation_status {
                crate::models::ConversationStatus::Active => ConversationViewConversationStatus::Active,
                crate::models::ConversationStatus::Archived => ConversationViewConversationStatus::Archived,
                crate::models::ConversationStatus::Compressed => ConversationViewConversationStatus::Compressed,
            },
        };
        Ok(Json(view).into_response())
    })
    .await
}

pub async fn themes(State(state): State<AppState>, golfer: Result<Golfer, ApiError>) -> Response {
    let st = state.clone();
    observed(&state, golfer, |caller| async move {
        let state = st;
        let latest = state.store.latest_conversation(&caller.user).await?;
        let view = match latest {
            Some(c) => ThemesView {
                request_id: current_request_id(),
                coaching_themes: c.coaching_themes,
                referenced_swings: c.referenced_swings,
                last_updated: Some(c.last_updated),
            },
            None => ThemesView {
                request_id: current_request_id(),
                coaching_themes: default_themes(),
                referenced_swings: vec![],
                last_updated: None,
            },
        };
        Ok(Json(view).into_response())
    })
    .await
}

pub async fn usage(State(state): State<AppState>, golfer: Result<Golfer, ApiError>) -> Response {
    let st = state.clone();
    observed(&state, golfer, |caller| async move {
        let state = st;
        let now = state.clock.now();
        let admission = limits::admission(&state.config.limits, &caller.user, &caller.ip, now);
        let used = state.store.usage(&admission.keys).await?;
        let quota = limits::quota(&state.config.limits, used, now);
        let mut headers = HeaderMap::new();
        rate_limit_headers(&mut headers, &quota);
        Ok((StatusCode::OK, headers, Json(UsageView { request_id: current_request_id(), quota })).into_response())
    })
    .await
}

pub async fn delete_me(State(state): State<AppState>, golfer: Result<Golfer, ApiError>) -> Response {
    let st = state.clone();
    observed(&state, golfer, |caller| async move {
        let state = st;
        let d = state.store.delete_golfer(&caller.user).await?;
        Ok(Json(DeletionReport {
            request_id: current_request_id(),
            conversations_deleted: d.conversations,
            profile_deleted: d.profile,
            idempotency_records_deleted: d.idempotency_records,
        })
        .into_response())
    })
    .await
}
