//! The one place errors become HTTP: an exhaustive status per variant, a body that matches
//! `schema/error.json`, a message in the coach's voice, and nothing internal in it.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::account::AccountError;
use crate::chat::ChatError;
use crate::limits::{Counter, Refusal};
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{ErrorBody, ErrorBodyCode, FieldError};
use crate::prompts::PromptError;
use crate::schemas::{SchemaError, Violation};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body does not match the request schema")]
    Invalid(Vec<Violation>),
    #[error("the content type is not JSON")]
    UnsupportedMediaType,
    #[error("the body is larger than allowed")]
    PayloadTooLarge,
    #[error("no caller identity")]
    Unauthorized,
    #[error("the request names another golfer")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error(transparent)]
    Chat(#[from] ChatError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("a value of ours out of its shape")]
    Internal,
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Chat(c) => match c {
                ChatError::ForeignConversation => StatusCode::FORBIDDEN,
                ChatError::SwingNotFound => StatusCode::NOT_FOUND,
                ChatError::InProgress => StatusCode::CONFLICT,
                ChatError::IdReused => StatusCode::UNPROCESSABLE_ENTITY,
                ChatError::Limited { refusal, .. } if refusal.counter == Counter::GlobalDay => StatusCode::SERVICE_UNAVAILABLE,
                ChatError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
                ChatError::TooLong(_) => StatusCode::BAD_REQUEST,
                ChatError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                ChatError::Prompt(_) | ChatError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            Self::Account(AccountError::NotFound | AccountError::NoSuchFact) => StatusCode::NOT_FOUND,
            Self::Account(AccountError::TooManyRatings { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Self::Account(AccountError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Schema(_) | Self::Prompt(_) | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> ErrorBodyCode {
        match self.status_code() {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ErrorBodyCode::InvalidRequest,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorBodyCode::UnsupportedMediaType,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorBodyCode::PayloadTooLarge,
            StatusCode::UNAUTHORIZED => ErrorBodyCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorBodyCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorBodyCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorBodyCode::MethodNotAllowed,
            StatusCode::CONFLICT => ErrorBodyCode::Conflict,
            StatusCode::TOO_MANY_REQUESTS => ErrorBodyCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE if matches!(self, Self::Chat(ChatError::Limited { .. })) => ErrorBodyCode::AtCapacity,
            StatusCode::SERVICE_UNAVAILABLE => ErrorBodyCode::Unavailable,
            _ => ErrorBodyCode::Internal,
        }
    }

    /// What the golfer (or the app developer, for 4xx about the request) reads.
    fn message(&self) -> String {
        let s = |t: &str| t.to_string();
        match self {
            Self::Invalid(_) => s("I couldn't read that message: some fields aren't in the shape I expect. The list below says which."),
            Self::UnsupportedMediaType => s("Send your message as JSON (Content-Type: application/json) and I'll take a look."),
            Self::PayloadTooLarge => s("That's more than I can read in one go: keep a message under 10 KB."),
            Self::Unauthorized => s("Please sign in again so I know who I'm coaching."),
            Self::Forbidden | Self::Chat(ChatError::ForeignConversation) => s("That conversation isn't one of yours, so I can't open it."),
            Self::NotFound | Self::Account(AccountError::NotFound) => s("There's nothing here. The coach is at POST /api/chat/coaching."),
            Self::Account(AccountError::NoSuchFact) => s("I don't have that in my notes about you: it may already be forgotten."),
            Self::Account(AccountError::TooManyRatings { .. }) => s("Thanks for all the ratings! That's plenty for this hour: rate more after the hour turns."),
            Self::MethodNotAllowed => s("That method isn't supported here."),
            Self::Chat(ChatError::SwingNotFound) => s("I couldn't find that swing in your analyses. Pick one from your list and ask me again."),
            Self::Chat(ChatError::InProgress) => s("I'm still answering that message. Give me a moment and I'll have it for you."),
            Self::Chat(ChatError::IdReused) => s("That message id was already used for a different message. Send this one with a new id."),
            Self::Chat(ChatError::Limited { message, .. }) => message.clone(),
            Self::Chat(ChatError::TooLong(_)) => s("That message is too long for me to answer well in one go. Could you ask it in a shorter way?"),
            Self::Chat(ChatError::Store(_)) | Self::Account(AccountError::Unavailable(_)) => {
                s("I can't reach your coaching notes right now. Nothing was charged: please try again in a minute.")
            }
            Self::Chat(ChatError::Prompt(_) | ChatError::Internal(_)) | Self::Schema(_) | Self::Prompt(_) | Self::Internal => {
                s("Something went wrong on my side. Please try again in a moment.")
            }
        }
    }

    /// What this error contributes to the request's metrics and security line.
    pub fn outcome(&self) -> Outcome {
        let kind = if self.status_code().is_server_error() { OutcomeKind::Error } else { OutcomeKind::Refused };
        Outcome { limit: self.refusal().map(|r| r.counter), ..Outcome::of(kind) }
    }

    fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Chat(ChatError::Limited { refusal, .. }) => Some(refusal),
            _ => None,
        }
    }

    /// The schema-shaped body for this error.
    pub fn body(&self, request_id: &str) -> ErrorBody {
        let fields = match self {
            Self::Invalid(v) => v.iter().map(|v| FieldError { field: v.field.clone(), problem: v.problem.clone() }).collect(),
            Self::Chat(ChatError::TooLong(e)) => vec![FieldError { field: "/message".into(), problem: e.to_string() }],
            Self::Chat(ChatError::IdReused) => vec![FieldError { field: "/clientMessageId".into(), problem: "was already used for a different message".into() }],
            _ => vec![],
        };
        let retry_after_seconds = match (self.refusal(), self) {
            (Some(r), _) => Some(r.retry_after_secs),
            (None, Self::Account(AccountError::TooManyRatings { retry_after_secs })) => Some(*retry_after_secs),
            (None, _) => match self.status_code() {
                StatusCode::SERVICE_UNAVAILABLE => Some(30),
                StatusCode::CONFLICT => Some(2),
                _ => None,
            },
        };
        ErrorBody { code: self.code(), message: self.message(), request_id: request_id.to_string(), retry_after_seconds, fields, quota: self.refusal().map(|r| r.quota.clone()) }
    }
}

impl ApiError {
    /// The body, with the one log line every error gets.
    pub fn logged_body(&self, request_id: &str) -> ErrorBody {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(request_id, status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::info!(request_id, status = status.as_u16(), error = %self, "request refused");
        }
        self.body(request_id)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let request_id = super::observe::current_request_id();
        let body = self.logged_body(&request_id);
        let mut headers = HeaderMap::new();
        if let Some(secs) = body.retry_after_seconds {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        let quota = body.quota.clone();
        let mut response = (status, headers, Json(body)).into_response();
        if let Some(q) = &quota {
            response = super::RateLimit::attach(q, response);
        }
        response.extensions_mut().insert(self.outcome());
        response
    }
}
