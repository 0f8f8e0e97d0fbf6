//! The golfer's memory: `GET /api/chat/coaching/memory`, `DELETE …/memory/{factId}` and
//! `PUT …/memory/settings` (the body checked like the chat route's). Each answers with what
//! the coach remembers after it.

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::chat::checked_body;
use super::error::ApiError;
use crate::account;
use crate::account::AccountError;
use crate::chat::Caller;
use crate::models::{MemorySettings, MemoryView};
use crate::state::AppState;

/// The memory as it now is, or the error, observed as every read is.
fn answered(caller: &Caller, result: Result<MemoryView, AccountError>) -> Response {
    super::reads::answered(caller, result.map(|view| Json(view).into_response()).map_err(ApiError::from))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Response {
    answered(&caller, account::memory_of(&state, &caller).await)
}

/// A fact id that is not one of ours is no fact of the caller's (404, like an unknown one).
pub async fn forget(State(state): State<AppState>, caller: Caller, Path(fact_id): Path<String>) -> Response {
    let result = match fact_id.parse::<crate::models::FactId>() {
        Ok(id) => account::forget_fact(&state, &caller, id.as_str()).await,
        Err(_) => Err(AccountError::NoSuchFact),
    };
    answered(&caller, result)
}

pub async fn settings(State(state): State<AppState>, request: Request) -> Response {
    let (caller, body): (Caller, MemorySettings) = match checked_body(request, &state, |s| &s.memory_settings).await {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    answered(&caller, account::set_memory(&state, &caller, body.enabled).await)
}
