//! The model behind one trait. `OpenAiCoach` calls any OpenAI-compatible endpoint;
//! `OfflineCoach` answers from `prompts/offline.tera` when no model is configured.

pub mod breaker;
pub mod check;
pub mod offline;
pub mod openai;
pub mod settings;
mod stream;
pub mod table;
pub mod watch;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio::time::Instant;

use crate::limits::Billed;
use crate::models::CoachReplyPayload;
use crate::prompts::{PromptMessage, PromptVars, Prompts};

/// One message for the coach.
#[derive(Debug, Clone, Copy)]
pub struct CoachRequest<'a> {
    pub messages: &'a [PromptMessage],
    /// The messages' tokens as packing counted them (`tokens::count_chat` of `messages`).
    pub prompt_tokens: usize,
    /// The reply's token limit (`max_tokens`, or `max_completion_tokens` with reasoning).
    pub max_tokens: u32,
    /// After this instant no attempt may still be running.
    pub deadline: Instant,
    /// The variables the prompt was rendered from (the offline coach renders from them).
    pub vars: &'a PromptVars,
    /// The instruction added when an answer was cut at the token limit (prompts/shorter.tera).
    pub shorter: &'a PromptMessage,
    /// A keyed hash of the caller, sent as OpenAI's `safety_identifier`.
    pub safety_identifier: &'a str,
    /// What this message's calls may cost together (its reservation, micro-dollars): no
    /// attempt is started that could take the total past it.
    pub reserved_micro: i64,
    /// The templates the message is answered with (the offline coach renders from them).
    pub prompts: &'a Prompts,
    /// The model row the message is answered by, decided at admission (the variant's own, or
    /// the one in service then); its replacement is called if the provider says it is gone.
    pub model: &'a table::ModelSpec,
}

/// What a streamed answer yields: the reply's text as the model writes it (the `reply` field,
/// decoded), and last the attempts' result.
#[derive(Debug, Clone, PartialEq)]
pub enum CoachEvent {
    /// More of the reply.
    Text(String),
    /// The coach starts over (another attempt): the text before is void.
    Restart,
    /// The end: the draft (or why there is none) and every call billed.
    Done(Attempts),
}

/// A validated draft: the structured payload the coach wrote, before output safety.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub payload: CoachReplyPayload,
    /// The model's name, or "offline".
    pub source: String,
}

/// Every model call the coach made for one message, with what each billed, and the draft
/// when one was usable.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempts {
    pub draft: Result<Draft, LlmError>,
    pub billed: Vec<Billed>,
    /// The provider said the configured model is gone, and its replacement answered.
    pub replaced_model: bool,
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
    /// The model declined to answer (OpenAI's `refusal`; the label keeps that word).
    #[error("the model declined to answer")]
    Declined,
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
            Self::Declined => "refusal",
            Self::CutOff => "cut_off",
            Self::CircuitOpen => "circuit_open",
            Self::Offline(_) => "offline",
        }
    }
}

pub trait Coach: Send + Sync {
    /// The coach's answer to a message, whole.
    fn reply<'a>(&'a self, req: CoachRequest<'a>) -> BoxFuture<'a, Attempts>;
    /// The same, as the coach writes it: text pieces, restarts, then [`CoachEvent::Done`].
    fn reply_stream<'a>(&'a self, req: CoachRequest<'a>) -> BoxStream<'a, CoachEvent>;
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
    static TOKENS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| crate::schemas::get().map(|s| crate::tokens::count(&s.coach_reply_for_model.to_string())).unwrap_or(0));
    *TOKENS
}
