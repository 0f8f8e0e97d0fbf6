//! The coach's reply as the golfer will see it: the model's (or offline coach's) answer after
//! output safety, the filtered-reply template when safety blocks it, or the fallback in the
//! coach's voice when the coach could not answer.

use crate::config::Limits;
use crate::limits;
use crate::llm::{CoachReply, LlmError};
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::CoachReplyPayload;
use crate::prompts::{PromptError, PromptVars, Prompts, ReplyVars, FALLBACK, FILTERED};
use crate::safety;

/// The reply after output safety, with what it cost.
#[derive(Debug, Clone)]
pub struct SafeReply {
    pub text: String,
    /// Theme proposals; `None` for a fallback.
    pub payload: Option<CoachReplyPayload>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The model's name, "offline" or "fallback".
    pub source: String,
    /// The fallback: the model was not reached.
    pub degraded: bool,
    /// Output safety replaced the reply.
    pub filtered: bool,
    /// Why the model could not answer.
    pub model_error: Option<&'static str>,
}

impl SafeReply {
    /// Applies output safety to the coach's reply, or renders the fallback when there is none.
    pub fn from_coach(prompts: &Prompts, reply: Result<CoachReply, LlmError>, vars: &PromptVars) -> Result<Self, PromptError> {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                return Ok(Self {
                    text: prompts.render(FALLBACK, &ReplyVars::from(vars))?,
                    payload: None,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    source: "fallback".into(),
                    degraded: true,
                    filtered: false,
                    model_error: Some(e.label()),
                })
            }
        };
        let clean = safety::clean_output(&reply.payload.reply);
        let (text, filtered) = if clean.blocked || clean.text.trim().is_empty() {
            (prompts.render(FILTERED, &ReplyVars::from(vars))?, true)
        } else {
            (clean.text, false)
        };
        Ok(Self {
            text,
            payload: Some(reply.payload),
            prompt_tokens: reply.prompt_tokens,
            completion_tokens: reply.completion_tokens,
            source: reply.source,
            degraded: false,
            filtered,
            model_error: None,
        })
    }

    pub fn model_reached(&self) -> bool {
        !self.degraded
    }

    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// What the reply cost: the model's usage at its prices; nothing offline or without a model.
    pub fn cost_micro(&self, l: &Limits) -> i64 {
        if self.source == "offline" || !self.model_reached() {
            return 0;
        }
        limits::cost(l, self.prompt_tokens, self.completion_tokens)
    }

    /// What this reply contributes to the request's metrics and security line.
    pub fn outcome(&self, l: &Limits, new_conversation: bool) -> Outcome {
        let kind = match (self.degraded, self.source.as_str()) {
            (true, _) => OutcomeKind::Fallback,
            (false, "offline") => OutcomeKind::Offline,
            (false, _) => OutcomeKind::Model,
        };
        Outcome {
            kind,
            tokens: self.tokens(),
            cost_micro: self.cost_micro(l),
            new_conversation,
            degraded: self.degraded,
            filtered: self.filtered,
            limit: None,
            model_error: self.model_error,
        }
    }
}
