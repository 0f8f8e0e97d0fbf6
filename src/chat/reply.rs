//! The coach's reply as the golfer will see it, with what it cost: the model's (or offline
//! coach's) answer after output safety; the filtered-reply template when safety blocks it;
//! the refusal template when the model declined; the fallback in the coach's voice when the
//! coach could not answer. Every model call the coach made is kept with what it billed.

use crate::limits::{self, Billed};
use crate::llm::{Attempts, LlmError};
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::CoachReplyPayload;
use crate::prompts::{PromptError, PromptVars, Prompts, ReplyVars, FALLBACK, FILTERED, REFUSAL};
use crate::safety;

/// The reply the golfer gets: the coach's draft after output safety (or the template that
/// stands in for it), with what its model calls billed.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    /// Theme proposals; `None` when the model's answer is not what the golfer gets.
    pub payload: Option<CoachReplyPayload>,
    /// Every model call this reply took, with what it billed.
    pub billed: Vec<Billed>,
    /// The model's name, "offline" or "fallback".
    pub source: String,
    pub kind: ReplyKind,
    /// The provider said the model is gone, and its replacement answered.
    pub replaced_model: bool,
}

/// What the golfer is shown, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// The coach's draft (the model's, or the offline coach's), after output safety.
    Drafted,
    /// Output safety blocked the draft: the filtered-reply template stands in.
    Filtered,
    /// The model declined to answer: the refusal template stands in.
    Declined,
    /// The coach could not answer (why, as a label): the fallback in the coach's voice.
    Fallback(&'static str),
}

impl Reply {
    /// The golfer's reply from the coach's attempts; `model` is the name of the model in
    /// service (a draft names the model that wrote it).
    pub fn from_coach(prompts: &Prompts, attempts: Attempts, vars: &PromptVars, model: &str) -> Result<Self, PromptError> {
        let billed = attempts.billed;
        let mut reply = Self { text: String::new(), payload: None, billed, source: model.to_string(), kind: ReplyKind::Drafted, replaced_model: attempts.replaced_model };
        match attempts.draft {
            Ok(r) => {
                let clean = safety::clean_output(&r.payload.reply);
                reply.source = r.source;
                if clean.blocked || clean.text.trim().is_empty() {
                    // A blocked reply changes no theme either.
                    reply.text = prompts.render(FILTERED, &ReplyVars::from(vars))?;
                    reply.kind = ReplyKind::Filtered;
                } else {
                    reply.text = clean.text;
                    reply.payload = Some(r.payload);
                }
            }
            Err(LlmError::Declined) => {
                reply.text = prompts.render(REFUSAL, &ReplyVars::from(vars))?;
                reply.kind = ReplyKind::Declined;
            }
            Err(e) => {
                reply.text = prompts.render(FALLBACK, &ReplyVars::from(vars))?;
                reply.source = "fallback".into();
                reply.kind = ReplyKind::Fallback(e.label());
            }
        }
        Ok(reply)
    }

    /// The fallback: the coach could not answer.
    pub fn degraded(&self) -> bool {
        matches!(self.kind, ReplyKind::Fallback(_))
    }

    /// Why the model gave no usable answer, as a label (none for a drafted or filtered reply).
    pub fn model_error(&self) -> Option<&'static str> {
        match self.kind {
            ReplyKind::Declined => Some(LlmError::Declined.label()),
            ReplyKind::Fallback(why) => Some(why),
            ReplyKind::Drafted | ReplyKind::Filtered => None,
        }
    }

    /// Some call may have been billed.
    pub fn billed_anything(&self) -> bool {
        !self.billed.is_empty()
    }

    /// The request's slot of the hour is given back: the coach could not answer (the fallback)
    /// and nothing was billed. An answer, even the offline coach's, keeps its slot.
    pub fn gives_slot_back(&self) -> bool {
        self.degraded() && !self.billed_anything()
    }

    /// The billed calls' prompt tokens, summed.
    pub fn prompt_tokens(&self) -> u64 {
        self.billed.iter().map(|b| b.prompt_tokens).sum()
    }

    /// The billed calls' completion tokens, summed.
    pub fn completion_tokens(&self) -> u64 {
        self.billed.iter().map(|b| b.completion_tokens).sum()
    }

    /// What the billed calls cost at the model's prices (micro-dollars).
    pub fn cost_micro(&self) -> i64 {
        self.billed.iter().map(limits::billed_cost).sum()
    }

    pub fn tokens(&self) -> u64 {
        self.prompt_tokens() + self.completion_tokens()
    }

    /// What this reply contributes to the request's metrics and security line.
    pub fn outcome(&self, new_conversation: bool, breaker_open: bool) -> Outcome {
        let kind = match (self.kind, self.source.as_str()) {
            (ReplyKind::Fallback(_), _) => OutcomeKind::Fallback,
            (_, "offline") => OutcomeKind::Offline,
            _ => OutcomeKind::Model,
        };
        Outcome {
            kind,
            tokens: self.tokens(),
            cost_micro: self.cost_micro(),
            new_conversation,
            degraded: self.degraded(),
            filtered: self.kind == ReplyKind::Filtered,
            limit: None,
            model_error: self.model_error(),
            billed_unusable: self.billed.iter().filter(|b| !b.used).count() as u32,
            refusal: self.kind == ReplyKind::Declined,
            breaker_open,
            first_delta_at: None,
            model_replaced: self.replaced_model,
            ..Outcome::default()
        }
    }
}
