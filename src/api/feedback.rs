//! `POST /api/chat/coaching/feedback`: the body checked like the chat route's, then the
//! golfer's rating of their own answer (`AppState::rate`).

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::chat::checked_body;
use super::error::ApiError;
use super::observe::respond;
use crate::account;
use crate::chat::Caller;
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{FeedbackReceiptRating, FeedbackRequest};
use crate::state::AppState;

pub async fn rate(State(state): State<AppState>, request: Request) -> Response {
    let (caller, body): (Caller, FeedbackRequest) = match checked_body(request, &state, |s| &s.feedback_request).await {
        Ok(checked) => checked,
        Err(e) => return e.into_response(),
    };
    match account::rate(&state, &caller, &body).await {
        Ok(receipt) => {
            let outcome = Outcome {
                rating: Some(receipt.rating == FeedbackReceiptRating::Up),
                prompt_version: Some(receipt.prompt_version.clone()),
                variant: Some(receipt.variant.clone()),
                model: Some(receipt.model.clone()),
                ..Outcome::of(OutcomeKind::Read)
            };
            respond(&caller, outcome, Json(receipt))
        }
        Err(e) => {
            let e = ApiError::from(e);
            respond(&caller, e.outcome(), e)
        }
    }
}
