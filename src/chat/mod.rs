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
//!
//! A streamed answer ([`AppState::admit`], then [`AppState::answer_admitted`] with an
//! [`EventSender`]) takes the same steps; step 3 also shows the reply as it is written.

pub mod reply;
pub mod reservation;
pub mod stream;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::clock;
use crate::conversation::{self, Turn};
use crate::limits::{self, Refusal};
use crate::llm::{CoachAnswer, CoachRequest};
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{
    AppContext, ChatMessage, CoachingChatRequest, CoachingChatResponse, CoachingChatResponseStorage as Storage, ConversationId, GolferProfilePlan, Role, StoredResponse, SwingId,
    TurnItem, Usage, UserId,
};
use crate::prompts::{pack, HistoryTurn, PackError, Packed, PromptError, PromptMessage, PromptRole, PromptVars, LIMIT, SHORTER};
use crate::safety;
use crate::state::AppState;
use crate::store::conversations::{CoachingContext, PreparedTurn, TurnWrite, TurnWriteError};
use crate::store::counters::{AdmitDecision, AdmitError, Counter, UsageSnapshot};
use crate::store::idempotency::{Claim, Previous};
use crate::store::keys::{self, IpHash};
use crate::store::{deadline, stats, StoreError};
pub use reply::SafeReply;
pub use reservation::Reservation;
pub use stream::EventSender;

/// A turn whose write failed after the model answered is sent again in the background, for
/// as long as its client request token keeps the retries idempotent (DynamoDB: ten minutes).
const TURN_RETRY_FOR: Duration = Duration::from_secs(540);
const TURN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).with_floor(Duration::from_millis(100));

/// Who is asking, from where and by when, as the API layer established it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub ip: IpHash,
    /// By this instant the answer must be ready to store (the model's last moment); storing
    /// it has `deadline_margin` more. Derived from Lambda's remaining time.
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
    #[error("the clientMessageId was used for a different message")]
    IdReused,
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
    Replay(Box<CoachingChatResponse>),
}

/// An answered request with what it contributes to metrics and logs.
#[derive(Debug)]
pub struct Answered {
    pub answer: Answer,
    pub outcome: Outcome,
}

/// What step 1 found: a request to answer, or the stored answer to an identical one.
pub enum Admission {
    Fresh(Box<Fresh>),
    Replay(Box<Answered>),
}

/// An admitted request: what it holds, what was read for it, and the key and hash its turn
/// is stored under.
pub struct Fresh {
    reservation: Reservation,
    context: Result<CoachingContext, StoreError>,
    turn_key: String,
    request_hash: String,
    now: DateTime<Utc>,
}

impl AppState {
    pub async fn answer(&self, caller: &Caller, input: &ChatInput) -> Result<Answered, ChatError> {
        match self.admit(caller, input).await? {
            Admission::Replay(answered) => Ok(*answered),
            Admission::Fresh(fresh) => self.answer_admitted(caller, input, *fresh, None).await,
        }
    }

    /// Step 1, bounded by the admission wait.
    pub async fn admit(&self, caller: &Caller, input: &ChatInput) -> Result<Admission, ChatError> {
        let now = self.clock.now();
        ensure_own_conversation(caller, &input.request)?;
        let admit_by = caller.deadline.min(Instant::now() + self.config.admission_wait);
        deadline::scope(admit_by, self.admit_and_load_context(caller, &input.request, now)).await
    }

    /// Steps 2 to 5 for an admitted request, its reservation settled or given back. With
    /// `events`, the reply is shown as it is written.
    pub async fn answer_admitted(&self, caller: &Caller, input: &ChatInput, fresh: Fresh, events: Option<&EventSender>) -> Result<Answered, ChatError> {
        let Fresh { reservation, context, turn_key, request_hash, now } = fresh;
        let answered = self.answer_fresh(caller, input, now, &reservation, context, (turn_key, request_hash), events).await;
        match answered {
            Ok((answered, settled)) => {
                if let Some((day, amount)) = settled {
                    self.budget.refund(&day, amount).await;
                }
                Ok(answered)
            }
            Err(e) => {
                reservation.release(&self.store, &self.budget).await;
                Err(e)
            }
        }
    }

    /// Steps 2 to 5; also returns what of the global reservation the actual cost gives back.
    #[expect(clippy::too_many_arguments, reason = "the admitted request's parts, taken apart once by answer_admitted")]
    async fn answer_fresh(
        &self,
        caller: &Caller,
        input: &ChatInput,
        now: DateTime<Utc>,
        reservation: &Reservation,
        context: Result<CoachingContext, StoreError>,
        (turn_key, request_hash): (String, String),
        events: Option<&EventSender>,
    ) -> Result<(Answered, Option<(String, i64)>), ChatError> {
        let context = context?;
        if input.request.swing_id.is_some() && context.swing_on_screen.is_none() {
            return Err(ChatError::SwingNotFound);
        }
        let conversation = conversation_id(&caller.user, now)?;
        let vars = self.prompt_vars(input, &caller.user, &context, &conversation, now);
        // Past the prompt only the newest turn and the golfer's swing ids are needed: the rest
        // of what was read is let go before the request waits on the model and the store.
        let own_swings = own_swings(&context);
        let newest = context.recent.into_iter().next();
        let packed = self.compose_prompt(&vars)?;
        if let Some(events) = events {
            events.start();
        }
        let (answer, usage, shown) = deadline::scope(caller.deadline, self.ask_coach(caller, &packed, &vars, reservation, events)).await?;
        let reply = SafeReply::from_coach(&self.prompts, answer, &vars, &self.config.limits, &self.config.model.model)?;
        if let Some(events) = events {
            // What is stored is what the golfer is finally shown.
            stream::finish(&shown.text, &reply.text, events);
        }
        let turn = new_turn(input, now, self.clock.now(), &reply, &own_swings, &vars);
        let stored = self.stored_response(caller, now, &reply, usage, reservation);
        // A fallback is not the answer to keep for the app's id: it is stored under one of ours,
        // and the claim is given up, so the app's retry with the same id is answered anew.
        let turn_key = if reply.degraded { keys::turn(&caller.user, &keys::server_message_id()) } else { turn_key };
        let item = conversation::record(turn_key, caller.user.clone(), conversation, now, newest.as_ref(), &turn, stored, request_hash);
        // From here the golfer is answered whatever the store does.
        let cost = reply.cost_micro;
        let settled = reservation.global.as_ref().map(|(day, reserved)| (day.clone(), reserved - cost));
        let write = TurnWrite {
            turn: &item,
            claim: reservation.claim_key.as_deref(),
            keys: &reservation.keys,
            spend_delta_micro: cost - reservation.reserved_micro,
            release_slots: reply.gives_slot_back(),
            asked_ms: now.timestamp_millis(),
        };
        let storage = match self.store.prepare_turn(write) {
            Ok(prepared) => self.record_turn(prepared, caller.deadline + self.config.deadline_margin).await,
            Err(e) => {
                tracing::error!(error = %e, "a turn could not be built for the store");
                Storage::Discarded
            }
        };
        let new_conversation = newest.as_ref().is_none_or(|t| t.conversation != item.conversation);
        let outcome = Outcome { first_delta_at: shown.first_at, ..reply.outcome(new_conversation, self.coach.breaker_open()) };
        Ok((Answered { answer: Answer::Fresh(Box::new(response(&item, storage))), outcome }, settled))
    }

    /// Step 1: the admission transaction, the context reads and the global budget, in one wave.
    async fn admit_and_load_context(&self, caller: &Caller, request: &CoachingChatRequest, now: DateTime<Utc>) -> Result<Admission, ChatError> {
        let lock_secs = i64::try_from(caller.deadline.saturating_duration_since(Instant::now()).as_secs()).unwrap_or(0) + 5;
        let turn_key = match &request.client_message_id {
            Some(id) => keys::turn(&caller.user, id.as_str()),
            None => keys::turn(&caller.user, &keys::server_message_id()),
        };
        let hash = request_hash(request);
        let claim = request.client_message_id.as_ref().map(|_| Claim {
            key: turn_key.clone(),
            now: now.timestamp(),
            locked_until: now.timestamp() + lock_secs,
            request_hash: hash.clone(),
        });
        let admission = limits::admission(&self.config.limits, &caller.user, &caller.ip, now);
        // Boxed: the SDK's futures are large, and unboxed they would size this request's
        // future for its whole life, while a request spends most of its time past this wave.
        let wave = Instant::now();
        let (decision, context, global) = tokio::join!(
            Box::pin(self.store.admit(&admission, claim.as_ref())),
            Box::pin(self.store.load_context(&caller.user, request.swing_id.as_ref())),
            Box::pin(self.budget.reserve(&self.store, now, admission.cost_micro)),
        );
        stats::store_wave(wave.elapsed());
        let day = clock::day_key(now);
        let global = global.map(|ok| ok.then_some((day, admission.cost_micro)));
        let reservation = Reservation {
            keys: admission.keys,
            reserved_micro: admission.cost_micro,
            global: global.as_ref().ok().cloned().flatten(),
            claim_key: claim.map(|c| c.key),
            unsure: None,
        };
        match (decision, global) {
            (Ok(AdmitDecision::Admitted), Ok(Some(_))) => Ok(Admission::Fresh(Box::new(Fresh { reservation, context, turn_key, request_hash: hash, now }))),
            (Ok(AdmitDecision::Admitted), global) => {
                reservation.release(&self.store, &self.budget).await;
                let profile = context.ok().and_then(|c| c.profile);
                Err(match global {
                    Err(e) => ChatError::Store(e),
                    Ok(_) => self.refused(Counter::GlobalDay, 0, now, profile)?,
                })
            }
            (decision, _) => {
                if let Some((day, amount)) = &reservation.global {
                    self.budget.refund(day, *amount).await;
                }
                match decision {
                    Ok(AdmitDecision::Duplicate(Previous::Completed(turn))) if turn.request_hash == hash => {
                        Ok(Admission::Replay(Box::new(Answered { answer: Answer::Replay(Box::new(response(&turn, Storage::Stored))), outcome: Outcome::of(OutcomeKind::Replay) })))
                    }
                    Ok(AdmitDecision::Duplicate(Previous::InProgress(h))) if h.as_deref().is_none_or(|h| h == hash) => Err(ChatError::InProgress),
                    Ok(AdmitDecision::Duplicate(_)) => Err(ChatError::IdReused),
                    Ok(AdmitDecision::Refused { counter, current }) => Err(self.refused(counter, current, now, context.ok().and_then(|c| c.profile))?),
                    Ok(AdmitDecision::Admitted) => Err(ChatError::Store(StoreError::Rejected("admitted twice".into()))),
                    Err(AdmitError { error, unsure }) => {
                        // No answer is not a refusal: the admission may stand. Resolve it and
                        // give back whatever it took, so a 503 charges nothing.
                        if unsure.is_some() {
                            Reservation { global: None, unsure, ..reservation }.release(&self.store, &self.budget).await;
                        }
                        Err(error.into())
                    }
                }
            }
        }
    }

    /// The refusal of `counter`, in the coach's voice.
    fn refused(&self, counter: Counter, current: i64, now: DateTime<Utc>, profile: Option<crate::models::GolferProfile>) -> Result<ChatError, PromptError> {
        let premium = profile.is_some_and(|p| p.plan == Some(GolferProfilePlan::Premium));
        let refusal = Refusal::new(&self.config.limits, counter, current, now);
        let message = self.limit_message(&refusal, premium)?;
        Ok(ChatError::Limited { refusal: Box::new(refusal), message })
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

    /// What the templates receive for this message: the golfer's newest turns as history,
    /// whatever their UTC day (older ones folded into the summary), the themes after the
    /// newest turn.
    fn prompt_vars(&self, input: &ChatInput, user: &UserId, context: &CoachingContext, conversation: &ConversationId, now: DateTime<Utc>) -> PromptVars {
        let today = conversation::assemble(conversation.clone(), user.clone(), &context.oldest_first(), self.config.max_recent_messages);
        PromptVars {
            today: clock::date(now),
            reply_word_limit: self.config.reply_word_limit,
            message: input.message.clone(),
            profile: context.profile.clone(),
            app: input.request.context.clone().unwrap_or(AppContext { club: None, handicap: None, locale: None, screen: None }),
            themes: conversation::themes_before(context.newest(), now),
            summary: today.as_ref().and_then(|c| c.summary.clone()),
            swing_on_screen: context.swing_on_screen.clone(),
            swings: context.swings.clone(),
            history: today.map(|c| history(&c.recent_messages)).unwrap_or_default(),
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

    /// Step 3: the coach, with the usage counters read meanwhile (they already hold this
    /// request). The coach may bill up to the reservation; the golfer's keyed hash goes with
    /// each call as OpenAI's `safety_identifier`.
    /// With `events`, the reply is shown while it is written; the text shown is returned.
    async fn ask_coach(
        &self,
        caller: &Caller,
        packed: &Packed,
        vars: &PromptVars,
        reservation: &Reservation,
        events: Option<&EventSender>,
    ) -> Result<(CoachAnswer, UsageSnapshot, stream::Shown), ChatError> {
        let shorter = PromptMessage { role: PromptRole::System, content: self.prompts.render(SHORTER, vars)? };
        let safety_identifier = safety::log_hash(self.log_key(), caller.user.as_str());
        let request = CoachRequest {
            messages: &packed.messages,
            max_tokens: self.config.limits.max_reply_tokens,
            deadline: caller.deadline,
            vars,
            shorter: &shorter,
            safety_identifier: &safety_identifier,
            budget_micro: reservation.reserved_micro,
            limits: &self.config.limits,
            stream: None,
        };
        let started = Instant::now();
        let (texts, received) = tokio::sync::mpsc::unbounded_channel();
        let coach = async move {
            // The sender lives as long as the coach works: the screen ends when it is dropped.
            let texts = texts;
            let stream = events.map(|_| &texts);
            self.coach.reply(CoachRequest { stream, ..request }).await
        };
        let screen = async {
            match events {
                Some(events) => stream::present(received, events, &self.prompts, vars).await,
                None => stream::Shown::default(),
            }
        };
        let (answer, usage, shown) = tokio::join!(coach, self.store.usage(&reservation.keys), screen);
        stats::model_wait(started.elapsed());
        let usage = usage.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "usage read failed; quota shown as before this request");
            UsageSnapshot::default()
        });
        Ok((answer, usage, shown))
    }

    /// The response's fields that the turn does not hold already.
    fn stored_response(&self, caller: &Caller, now: DateTime<Utc>, reply: &SafeReply, usage: UsageSnapshot, reservation: &Reservation) -> StoredResponse {
        let l = &self.config.limits;
        // Remaining quota: the counters read beside the model include this request's reservation.
        let mut used = usage;
        used.user_day_spend_micro = used.user_day_spend_micro - reservation.reserved_micro + reply.cost_micro;
        if reply.gives_slot_back() {
            used.user_hour_count -= 1;
        }
        StoredResponse {
            request_id: caller.request_id.clone(),
            usage: Usage {
                prompt_tokens: reply.prompt_tokens,
                completion_tokens: reply.completion_tokens,
                total_tokens: reply.tokens(),
                token_limit: u64::from(l.token_limit_per_request),
                cost_micro_usd: u64::try_from(reply.cost_micro).unwrap_or(0),
            },
            quota: limits::quota(l, used, now),
            source: reply.source.clone(),
            degraded: reply.degraded,
        }
    }

    /// Step 4: writes the turn (its settlement and the stored answer ride along) by `by`.
    /// When it could not be stored in time the golfer is answered anyway (`Pending`), and
    /// the same transaction is sent again in the background (it applies once). A turn that
    /// may never be written (the golfer deleted their data after asking) is `Discarded`: its
    /// spend is settled and its claim deleted without it.
    async fn record_turn(&self, prepared: PreparedTurn, by: Instant) -> Storage {
        let wave = Instant::now();
        let written = deadline::scope(by, self.store.write_turn(&prepared)).await;
        stats::store_wave(wave.elapsed());
        let (error, maybe_applied) = match written {
            Ok(()) => return Storage::Stored,
            Err(TurnWriteError::Unwritable(why)) => {
                tracing::info!(reason = %why, "turn discarded");
                if let Err(e) = deadline::scope(by, self.store.discard_turn(&prepared)).await {
                    tracing::warn!(error = %e, "a discarded turn's settlement failed; its reservation stays charged and its claim expires");
                }
                return Storage::Discarded;
            }
            Err(TurnWriteError::Failed { error, maybe_applied }) => (error, maybe_applied),
        };
        tracing::warn!(error = %error, maybe_applied, "turn not stored in time; storing it in the background");
        if matches!(error, StoreError::Rejected(_)) {
            return Storage::Discarded;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            for attempt in 0.. {
                if started.elapsed() >= TURN_RETRY_FOR {
                    break;
                }
                TURN_BACKOFF.wait(attempt).await;
                match store.write_turn(&prepared).await {
                    Ok(()) => return tracing::info!("deferred turn stored"),
                    Err(TurnWriteError::Unwritable(_)) => {
                        let _ = store.discard_turn(&prepared).await;
                        return tracing::info!("deferred turn discarded");
                    }
                    Err(TurnWriteError::Failed { error: StoreError::Rejected(_), .. }) => break,
                    Err(_) => {}
                }
            }
            // The reservation stays charged (never under-charged) and the claim expires.
            tracing::error!("deferred turn gave up");
        });
        Storage::Pending
    }
}

/// What makes two requests the same message: a retry with its clientMessageId must match.
fn request_hash(r: &CoachingChatRequest) -> String {
    use sha2::{Digest, Sha256};
    let same = serde_json::json!([r.message, r.swing_id, r.conversation_id, r.context]);
    hex::encode(&Sha256::digest(same.to_string().as_bytes())[..16])
}

/// The response to a turn, fresh or replayed.
fn response(turn: &TurnItem, storage: Storage) -> CoachingChatResponse {
    let r = &turn.response;
    CoachingChatResponse {
        request_id: r.request_id.clone(),
        message: turn.reply.clone(),
        conversation_id: turn.conversation.clone(),
        coaching_themes: turn.coaching_themes.clone(),
        usage: r.usage.clone(),
        quota: r.quota.clone(),
        source: r.source.clone(),
        degraded: r.degraded,
        stored: storage == Storage::Stored,
        storage,
    }
}

fn conversation_id(user: &UserId, now: DateTime<Utc>) -> Result<ConversationId, ChatError> {
    ConversationId::try_from(keys::conversation(user, now)).map_err(|e| ChatError::Store(StoreError::Rejected(format!("conversation id: {e}"))))
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

/// The golfer's earlier messages for the prompt (a fallback reply is not something the coach said).
fn history(messages: &[ChatMessage]) -> Vec<HistoryTurn> {
    messages
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
