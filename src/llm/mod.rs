//! The model behind one trait. `OpenAiCoach` calls any OpenAI-compatible endpoint;
//! `OfflineCoach` answers from `prompts/offline.tera` when no model is configured.

pub mod breaker;
pub mod models;
pub mod offline;
pub mod openai;
mod stream;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::config::Limits;
use crate::prompts::{PromptMessage, PromptVars};
use crate::models::CoachReplyPayload;

/// One call to the coach.
#[derive(Debug, Clone, Copy)]
pub struct CoachRequest<'a> {
    pub messages: &'a [PromptMessage],
    /// The reply's token budget (`max_tokens`, or `max_completion_tokens` with reasoning).
    pub max_tokens: u32,
    /// After this instant no attempt may still be running.
    pub deadline: Instant,
    /// The variables the prompt was rendered from (the offline coach renders from them).
    pub vars: &'a PromptVars,
    /// The instruction added when an answer was cut at the token limit (prompts/shorter.tera).
    pub shorter: &'a PromptMessage,
    /// A keyed hash of the caller, sent as OpenAI's `safety_identifier`.
    pub safety_identifier: &'a str,
    /// What this request's calls may cost together (its reservation, micro-dollars): no
    /// attempt is started that could take the total past it.
    pub budget_micro: i64,
    pub limits: &'a Limits,
    /// For a streamed answer: where the reply's text goes as the model writes it.
    pub stream: Option<&'a ReplyTextSender>,
}

/// The reply's text as the model writes it (the `reply` field, decoded), for a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyText {
    /// More of the reply.
    Text(String),
    /// The coach starts over (another attempt): the text before is void.
    Restart,
}

pub type ReplyTextSender = tokio::sync::mpsc::UnboundedSender<ReplyText>;

/// A validated reply: the structured payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CoachReply {
    pub payload: CoachReplyPayload,
    /// The model's name, or "offline".
    pub source: String,
}

/// What one model call billed, or may have: its usage, or (`estimated`) the worst case of a
/// call that was sent and never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Billed {
    pub prompt_tokens: u64,
    /// Of the prompt tokens, those billed at the cached-input price.
    pub cached_tokens: u64,
    /// Output tokens, reasoning included (billed as output).
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub estimated: bool,
    /// This call's answer is the reply the golfer gets.
    pub used: bool,
}

/// The coach's answer: the reply (or why there is none) and every call it billed.
#[derive(Debug, Clone, PartialEq)]
pub struct CoachAnswer {
    pub reply: Result<CoachReply, LlmError>,
    pub billed: Vec<Billed>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the model did not answer before the deadline")]
    Timeout,
    #[error("the model kept refusing with rate limits")]
    RateLimited,
    #[error("the model failed with status {0}")]
    Upstream(u16),
    #[error("the model refused the request with status {0}")]
    Refused(u16),
    #[error("the connection to the model failed")]
    Transport,
    #[error("the model's answer was malformed")]
    Malformed,
    #[error("the model declined to answer")]
    Refusal,
    #[error("the model's answer was cut at the token limit")]
    CutOff,
    #[error("the circuit breaker is open")]
    CircuitOpen,
    #[error("the offline coach could not render: {0}")]
    Offline(String),
}

impl LlmError {
    /// A stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Upstream(_) => "upstream_5xx",
            Self::Refused(_) => "refused",
            Self::Transport => "transport",
            Self::Malformed => "malformed",
            Self::Refusal => "refusal",
            Self::CutOff => "cut_off",
            Self::CircuitOpen => "circuit_open",
            Self::Offline(_) => "offline",
        }
    }
}

pub trait Coach: Send + Sync {
    fn reply<'a>(&'a self, req: CoachRequest<'a>) -> BoxFuture<'a, CoachAnswer>;
    /// The circuit breaker is open: the model is not being called (for metrics).
    fn breaker_open(&self) -> bool {
        false
    }
}

/// Parses and validates a model's content against `schema/coach-reply.json`.
pub fn parse_reply(content: &str) -> Result<CoachReplyPayload, LlmError> {
    let value: serde_json::Value = serde_json::from_str(content).map_err(|_| LlmError::Malformed)?;
    let schemas = crate::schemas::get().map_err(|_| LlmError::Malformed)?;
    if !schemas.coach_reply.is_valid(&value) {
        return Err(LlmError::Malformed);
    }
    let payload: CoachReplyPayload = serde_json::from_value(value).map_err(|_| LlmError::Malformed)?;
    if payload.reply.trim().is_empty() {
        return Err(LlmError::Malformed);
    }
    Ok(payload)
}

/// Tokens the structured-output schema adds to every model request (it is billed as input),
/// kept out of the prompt's budget so prompt + schema + reply stays within the limit.
pub fn response_format_tokens() -> usize {
    static TOKENS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        crate::schemas::get()
            .map(|s| crate::tokens::count(&s.coach_reply_for_model.to_string()))
            .unwrap_or(0)
    });
    *TOKENS
}
