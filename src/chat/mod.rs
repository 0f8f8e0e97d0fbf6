//! The coaching request flow (design.md, "The request path"), after the API layer has
//! checked size, media type, schema and identity. [`AppState::answer`] reads as the path does:
//!
//! 1. **admit and load context**: one DynamoDB wave, the admission transaction (quotas,
//!    worst-case spend, idempotency claim) beside the coaching-context reads;
//! 2. **compose the prompt**: render the templates and pack them into the token budget;
//! 3. **ask the coach**: the model (the usage counters are read meanwhile), then output
//!    safety, or the fallback when the coach cannot answer;
//! 4. **record the turn**: one DynamoDB wave, the turn, its settlement and the stored answer;
//! 5. **respond**.
//!
//! Every exit after admission that stores no turn gives the [`Reservation`] back, in one place.

pub mod reply;
pub mod reservation;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::clock;
use crate::conversation::{self, Turn};
use crate::limits::{self, Refusal};
use crate::llm::{CoachReply, CoachRequest, LlmError};
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{
    AppContext, ChatMessage, CoachingChatRequest, CoachingChatResponse, ConversationId, ConversationItem, GolferProfilePlan, Role,
    SwingId, Usage, UserId,
};
use crate::prompts::{pack, HistoryTurn, PackError, Packed, PromptError, PromptRole, PromptVars, LIMIT};
use crate::state::AppState;
use crate::store::conversations::{CoachingContext, TurnWrite};
use crate::store::counters::{AdmitDecision, AdmitError, Counter, CounterKeys, UsageSnapshot};
use crate::store::idempotency::{Claim, Previous, StoredAnswer};
use crate::store::keys::{self, IpHash};
use crate::store::{stats, StoreError};
pub use reply::SafeReply;
pub use reservation::Reservation;

/// Concurrent turns on one conversation: spread the re-reads and re-writes out.
const TURN_BACKOFF: Backoff = Backoff::new(std::time::Duration::from_millis(10), std::time::Duration::from_millis(160)).with_floor(std::time::Duration::from_millis(1));
const TURN_ATTEMPTS: u32 = 30;

/// Who is asking, from where and by when, as the API layer established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub ip: IpHash,
    /// After this instant nothing may still be waiting (derived from Lambda's remaining time).
    pub deadline: Instant,
    pub request_id: String,
}

/// A request that passed the schema, with the golfer's message after input sanitizing.
#[derive(Debug, Clone)]
pub struct ChatInput {
    pub request: CoachingChatRequest,
    pub message: String,
}

/// Why a request was not answered with a coaching reply.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("conversation belongs to someone else")]
    ForeignConversation,
    #[error("swing not found for this golfer")]
    SwingNotFound,
    #[error("the same clientMessageId is being answered")]
    InProgress,
    #[error("limit {} reached", .refusal.counter.label())]
    Limited { refusal: Box<Refusal>, message: String },
    #[error(transparent)]
    TooLong(PackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
}

/// The body of an answered request: a fresh answer, or the stored answer to an identical one.
#[derive(Debug)]
pub enum Answer {
    Fresh(Box<CoachingChatResponse>),
    Replay(String),
}

/// An answered request with what it contributes to metrics and logs.
#[derive(Debug)]
pub struct Answered {
    pub answer: Answer,
    pub outcome: Outcome,
}

/// What step 1 found.
enum Admitted {
    Fresh { reservation: Reservation, context: Box<Result<CoachingContext, StoreError>> },
    Replay(String),
}

/// What step 4 wrote.
struct Committed {
    body: CoachingChatResponse,
    new_conversation: bool,
}

impl AppState {
    pub async fn answer(&self, caller: &Caller, input: &ChatInput) -> Result<Answered, ChatError> {
        let now = self.clock.now();
        ensure_own_conversation(caller, &input.request)?;
        let (reservation, context) = match self.admit_and_load_context(caller, &input.request, now).await? {
            Admitted::Replay(body) => return Ok(Answered { answer: Answer::Replay(body), outcome: Outcome::of(OutcomeKind::Replay) }),
            Admitted::Fresh { reservation, context } => (reservation, context),
        };
        let answered = self.answer_admitted(caller, input, now, &reservation, *context).await;
        if answered.is_err() {
            reservation.release(&self.store).await;
        }
        answered
    }

    async fn answer_admitted(
        &self,
        caller: &Caller,
        input: &ChatInput,
        now: DateTime<Utc>,
        reservation: &Reservation,
        context: Result<CoachingContext, StoreError>,
    ) -> Result<Answered, ChatError> {
        let context = context?;
        if input.request.swing_id.is_some() && context.swing_on_screen.is_none() {
            return Err(ChatError::SwingNotFound);
        }
        let vars = self.prompt_vars(input, &context, now);
        let packed = self.compose_prompt(&vars)?;
        let (reply, usage) = self.ask_coach(&packed, &vars, caller.deadline, &reservation.keys).await;
        let reply = SafeReply::from_coach(&self.prompts, reply, &vars)?;
        let own_swings = own_swings(&context);
        let turn = new_turn(input, now, self.clock.now(), &reply, &own_swings, &vars);
        let response = self.response(caller, now, &vars, &turn, &reply, usage, reservation)?;
        let committed = self.record_turn(caller, context, &turn, reservation, &reply, response).await?;
        let outcome = reply.outcome(&self.config.limits, committed.new_conversation);
        Ok(Answered { answer: Answer::Fresh(Box::new(committed.body)), outcome })
    }

    /// Step 1: the admission transaction and the context reads, in one wave.
    async fn admit_and_load_context(&self, caller: &Caller, request: &CoachingChatRequest, now: DateTime<Utc>) -> Result<Admitted, ChatError> {
        let lock_secs = i64::try_from(caller.deadline.saturating_duration_since(Instant::now()).as_secs()).unwrap_or(0) + 5;
        let claim = request.client_message_id.as_ref().map(|id| Claim {
            key: keys::idempotency(&caller.user, id),
            now: now.timestamp(),
            locked_until: now.timestamp() + lock_secs,
        });
        let admission = limits::admission(&self.config.limits, &caller.user, &caller.ip, now);
        // Boxed: the SDK's futures are large, and unboxed they would size this request's
        // future for its whole life, while a request spends most of its time past this wave.
        let wave = Instant::now();
        let (decision, context) = tokio::join!(
            Box::pin(self.store.admit(&admission, claim.as_ref())),
            Box::pin(self.store.load_context(&caller.user, now, request.swing_id.as_ref()))
        );
        stats::store_wave(wave.elapsed());
        let reservation = Reservation { keys: admission.keys, reserved_micro: admission.cost_micro, claim_key: claim.map(|c| c.key), unsure: None };
        match decision {
            Ok(AdmitDecision::Admitted) => Ok(Admitted::Fresh { reservation, context: Box::new(context) }),
            Ok(AdmitDecision::Duplicate(Previous::Completed(body))) => Ok(Admitted::Replay(body)),
            Ok(AdmitDecision::Duplicate(Previous::InProgress)) => Err(ChatError::InProgress),
            Ok(AdmitDecision::Refused { counter, current }) => {
                let premium = context.ok().and_then(|c| c.profile).is_some_and(|p| p.plan == Some(GolferProfilePlan::Premium));
                let refusal = Refusal::new(&self.config.limits, counter, current, now);
                let message = self.limit_message(&refusal, premium)?;
                Err(ChatError::Limited { refusal: Box::new(refusal), message })
            }
            Err(AdmitError { error, unsure }) => {
                // No answer is not a refusal: the admission may stand. Resolve it and give
                // back whatever it took, so a 503 charges nothing.
                if unsure.is_some() {
                    Reservation { unsure, ..reservation }.release(&self.store).await;
                }
                Err(error.into())
            }
        }
    }

    fn limit_message(&self, refusal: &Refusal, premium: bool) -> Result<String, PromptError> {
        let l = &self.config.limits;
        let (reset_phrase, limit_value) = match refusal.counter {
            Counter::UserHour => (format!("at {} UTC", clock::clock_time(refusal.resets_at)), u64::from(l.requests_per_hour)),
            Counter::IpHour => (format!("at {} UTC", clock::clock_time(refusal.resets_at)), u64::from(l.ip_requests_per_hour)),
            Counter::UserDay => ("tomorrow".to_string(), l.spend_per_user_day_micro),
            Counter::GlobalDay => ("tomorrow".to_string(), l.spend_total_day_micro),
        };
        let vars = serde_json::json!({
            "limit": refusal.counter.label(),
            "limit_value": limit_value,
            "reset_phrase": reset_phrase,
            "premium": premium,
        });
        self.prompts.render(LIMIT, &vars)
    }

    /// What the templates receive for this message.
    fn prompt_vars(&self, input: &ChatInput, context: &CoachingContext, now: DateTime<Utc>) -> PromptVars {
        let themes = context.today.as_ref().map(|c| c.coaching_themes.clone()).or_else(|| context.previous_themes.clone());
        PromptVars {
            today: clock::date(now),
            reply_word_limit: self.config.reply_word_limit,
            message: input.message.clone(),
            profile: context.profile.clone(),
            app: input.request.context.clone().unwrap_or(AppContext { club: None, handicap: None, locale: None, screen: None }),
            themes: themes.unwrap_or_else(conversation::default_themes),
            summary: context.today.as_ref().and_then(|c| c.summary.clone()),
            swing_on_screen: context.swing_on_screen.clone(),
            swings: context.swings.clone(),
            history: history(context.today.as_ref()),
            detail: crate::prompts::Detail::Full,
        }
    }

    /// Step 2: the prompt within the budget left by the reply and the structured-output schema.
    fn compose_prompt(&self, vars: &PromptVars) -> Result<Packed, ChatError> {
        let budget = limits::prompt_budget(&self.config.limits).saturating_sub(crate::llm::response_format_tokens());
        pack(&self.prompts, vars, budget).map_err(|e| match e {
            PackError::Prompt(p) => ChatError::Prompt(p),
            too_long => ChatError::TooLong(too_long),
        })
    }

    /// Step 3: the coach, with the usage counters read meanwhile (they already hold this request).
    async fn ask_coach(&self, packed: &Packed, vars: &PromptVars, deadline: Instant, keys: &CounterKeys) -> (Result<CoachReply, LlmError>, UsageSnapshot) {
        let started = Instant::now();
        let request = CoachRequest { messages: &packed.messages, max_tokens: self.config.limits.max_reply_tokens, deadline, vars };
        let (reply, usage) = tokio::join!(self.coach.reply(request), self.store.usage(keys));
        stats::model_wait(started.elapsed());
        let usage = usage.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "usage read failed; quota shown as before this request");
            UsageSnapshot::default()
        });
        (reply, usage)
    }

    /// The response body; its themes are set when the turn is recorded.
    #[expect(clippy::too_many_arguments, reason = "the facts of one answer, each from its own step")]
    fn response(
        &self,
        caller: &Caller,
        now: DateTime<Utc>,
        vars: &PromptVars,
        turn: &Turn<'_>,
        reply: &SafeReply,
        usage: UsageSnapshot,
        reservation: &Reservation,
    ) -> Result<CoachingChatResponse, ChatError> {
        let l = &self.config.limits;
        // Remaining quota: the counters read beside the model include this request's reservation.
        let mut used = usage;
        used.user_day_spend_micro = used.user_day_spend_micro - reservation.reserved_micro + reply.cost_micro(l);
        if !reply.model_reached() {
            used.user_hour_count -= 1;
        }
        let conversation_id = ConversationId::try_from(keys::conversation(&caller.user, now))
            .map_err(|e| StoreError::Rejected(format!("conversation id: {e}")))?;
        Ok(CoachingChatResponse {
            request_id: caller.request_id.clone(),
            message: turn.reply.clone(),
            conversation_id,
            coaching_themes: vars.themes.clone(),
            usage: Usage {
                prompt_tokens: reply.prompt_tokens,
                completion_tokens: reply.completion_tokens,
                total_tokens: reply.tokens(),
                token_limit: u64::from(l.token_limit_per_request),
                cost_micro_usd: u64::try_from(reply.cost_micro(l)).unwrap_or(0),
            },
            quota: limits::quota(l, used, now),
            source: reply.source.clone(),
            degraded: reply.degraded,
        })
    }

    /// Step 4: writes the turn under optimistic locking, re-reading the conversation when
    /// another message got there first. Settlement and the stored answer ride along, so a
    /// retry of the transaction can never charge twice.
    async fn record_turn(
        &self,
        caller: &Caller,
        context: CoachingContext,
        turn: &Turn<'_>,
        reservation: &Reservation,
        reply: &SafeReply,
        mut response: CoachingChatResponse,
    ) -> Result<Committed, StoreError> {
        let now = self.clock.now();
        let conv_id = response.conversation_id.clone();
        let spend_delta_micro = reply.cost_micro(&self.config.limits) - reservation.reserved_micro;
        let mut current = context.today;
        for attempt in 0..TURN_ATTEMPTS {
            if attempt > 0 {
                TURN_BACKOFF.wait(attempt).await;
            }
            let new_conversation = current.is_none();
            let expected_version = current.as_ref().map(|c| c.version.unwrap_or(0));
            let base = current
                .take()
                .unwrap_or_else(|| conversation::start(conv_id.clone(), caller.user.clone(), context.previous_themes.clone(), now));
            let next = conversation::apply(base, turn, now, self.config.max_recent_messages);
            response.coaching_themes = next.coaching_themes.clone();
            let body = serde_json::to_string(&response).map_err(|e| StoreError::Rejected(e.to_string()))?;
            let write = TurnWrite {
                conversation: &next,
                expected_version,
                keys: &reservation.keys,
                spend_delta_micro,
                tokens: i64::try_from(turn.tokens).unwrap_or(0),
                release_slots: !reply.model_reached(),
                stored_answer: reservation.claim_key.as_deref().map(|key| StoredAnswer { key, now: now.timestamp(), body: &body }),
            };
            let wave = Instant::now();
            let committed = self.store.commit_turn(write).await;
            stats::store_wave(wave.elapsed());
            if committed? {
                return Ok(Committed { body: response, new_conversation });
            }
            let wave = Instant::now();
            current = self.store.conversation(conv_id.as_str()).await?;
            stats::store_wave(wave.elapsed());
        }
        Err(StoreError::Contention)
    }
}

/// A conversation id names its owner: another golfer's is refused before any read.
fn ensure_own_conversation(caller: &Caller, request: &CoachingChatRequest) -> Result<(), ChatError> {
    match &request.conversation_id {
        Some(id) if keys::conversation_owner(id) != Some(caller.user.as_str()) => Err(ChatError::ForeignConversation),
        _ => Ok(()),
    }
}

/// The swings the caller owns, as the context read found them: only these may be referenced.
fn own_swings(context: &CoachingContext) -> Vec<SwingId> {
    context.swings.iter().chain(context.swing_on_screen.iter()).map(|s| s.analysis_id.clone()).collect()
}

/// The exchange to record: the golfer's message and the reply, with the reply's swing
/// reference kept only when it is one of the caller's own.
fn new_turn<'a>(
    input: &'a ChatInput,
    asked_at: DateTime<Utc>,
    answered_at: DateTime<Utc>,
    reply: &'a SafeReply,
    own_swings: &'a [SwingId],
    vars: &PromptVars,
) -> Turn<'a> {
    let reply_swing = reply
        .payload
        .as_ref()
        .and_then(|p| p.swing_reference.clone())
        .filter(|id| own_swings.iter().any(|s| s.as_str() == id));
    let user_swing = input.request.swing_id.as_ref().map(|s| s.as_str().to_string());
    let mut assistant = new_message(Role::Assistant, reply.text.clone(), answered_at, reply_swing, reply.completion_tokens);
    if reply.degraded {
        assistant.degraded = Some(true);
    }
    Turn {
        user_message: new_message(Role::User, input.message.clone(), asked_at, user_swing, reply.prompt_tokens),
        reply: assistant,
        tokens: reply.tokens(),
        proposal: reply.payload.as_ref(),
        own_swings,
        latest_score: vars.swings.first().map(|s| s.overall_score),
        client_message_id: input.request.client_message_id.as_ref().map(|c| c.as_str()),
    }
}

fn new_message(role: Role, content: String, at: DateTime<Utc>, swing: Option<String>, tokens: u64) -> ChatMessage {
    ChatMessage {
        content,
        degraded: None,
        message_id: uuid::Uuid::new_v4().to_string(),
        role,
        swing_reference: swing,
        timestamp: clock::timestamp(at),
        tokens_used: tokens,
    }
}

/// Today's earlier turns for the prompt (a fallback reply is not something the coach said).
fn history(conv: Option<&ConversationItem>) -> Vec<HistoryTurn> {
    let Some(c) = conv else { return vec![] };
    c.recent_messages
        .iter()
        .filter(|m| m.degraded != Some(true))
        .map(|m| HistoryTurn {
            role: match m.role {
                Role::User => PromptRole::User,
                Role::Assistant => PromptRole::Assistant,
            },
            content: m.content.clone(),
        })
        .collect()
}
