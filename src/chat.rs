//! The coaching request flow (design.md, "The request path"), after the API layer has
//! checked size, media type, schema and identity:
//!
//! 1. one DynamoDB wave: the admission transaction (quotas, worst-case spend, idempotency
//!    claim) together with the context reads;
//! 2. render and pack the prompt; call the coach (the usage counters are read meanwhile,
//!    off the critical path); on failure render the fallback;
//! 3. one DynamoDB wave: the turn, the spend settlement (or the release of the slot and the
//!    whole reservation) and the stored response, in one transaction.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::Config;
use crate::context::{pack, HistoryTurn, PackError, PromptRole, PromptVars, ReplyVars};
use crate::conversation::{self, Turn};
use crate::limits::{self, Refusal};
use crate::llm::{Coach, CoachReply, CoachRequest, LlmError};
use crate::metrics::RequestMetrics;
use crate::models::{
    AppContext, ChatMessage, CoachingChatRequest, CoachingChatResponse, ConversationId, ConversationItem, Role,
    SwingId, Usage, UserId,
};
use crate::prompts::{PromptError, Prompts, FALLBACK, FILTERED, LIMIT};
use crate::safety;
use crate::store::counters::{AdmitError, AdmitOutcome, Counter, CounterKeys, UsageSnapshot, Unsure};
use crate::store::idempotency::Previous;
use crate::store::keys::{self, IpHash};
use crate::store::{stats, Store, StoreError};

/// Everything a request needs, shared by all requests of a process.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub prompts: Arc<Prompts>,
    pub coach: Arc<dyn Coach>,
    /// Key for hashing identifiers in logs.
    pub log_key: Arc<str>,
    pub metrics: crate::metrics::Sink,
    pub clock: crate::clock::Clock,
}

/// Who is asking, as established by the API layer.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    pub ip: IpHash,
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
    #[error("limit {} reached", .refusal.label())]
    Limited { refusal: Box<Refusal>, message: String },
    #[error(transparent)]
    TooLong(PackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
}

/// A finished request: a fresh answer, or the stored answer to an earlier identical one.
#[derive(Debug)]
pub enum Answer {
    Fresh(Box<CoachingChatResponse>),
    Replay(String),
}

/// What the API layer logs and measures about a request.
#[derive(Debug, Default)]
pub struct Outcome {
    pub metrics: RequestMetrics,
    pub limit: Option<&'static str>,
    pub model_error: Option<&'static str>,
}

fn new_message(role: Role, content: String, at: DateTime<Utc>, swing: Option<String>, tokens: u64) -> ChatMessage {
    ChatMessage {
        content,
        degraded: None,
        message_id: uuid::Uuid::new_v4().to_string(),
        role,
        swing_reference: swing,
        timestamp: limits::timestamp(at),
        tokens_used: tokens,
    }
}

fn history(conv: Option<&ConversationItem>) -> Vec<HistoryTurn> {
    conv.map(|c| {
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
    })
    .unwrap_or_default()
}

/// The reply text and its theme proposals after output safety.
struct Reply {
    text: String,
    payload: Option<crate::models::CoachReplyPayload>,
    prompt_tokens: u64,
    completion_tokens: u64,
    source: String,
    degraded: bool,
    filtered: bool,
}

impl AppState {
    pub async fn handle(
        &self,
        caller: &Caller,
        request: &CoachingChatRequest,
        message: String,
        request_id: &str,
        deadline: Instant,
        outcome: &mut Outcome,
    ) -> Result<Answer, ChatError> {
        let cfg = &self.config;
        let now = self.clock.now();
        let user = &caller.user;

        // A conversation id names its owner: another golfer's is refused before any read.
        if let Some(id) = &request.conversation_id {
            if keys::conversation_owner(id) != Some(user.as_str()) {
                return Err(ChatError::ForeignConversation);
            }
        }

        let idem_key = request.client_message_id.as_ref().map(|id| keys::idempotency(user, id));
        let claim = match &idem_key {
            Some(k) => {
                let lock = (deadline.saturating_duration_since(Instant::now()).as_secs() + 5) as i64;
                Some(self.store.idempotency_claim(k, now.timestamp(), now.timestamp() + lock)?)
            }
            None => None,
        };
        let admission = limits::admission(&cfg.limits, user, &caller.ip, now);

        // Wave 1: admission and context reads together. Boxed: the SDK's futures are large,
        // and unboxed they would size this request's future for its whole life (~25 KB of
        // the 30 KB), while a request spends most of its time past this wave.
        let wave = Instant::now();
        let (admitted, context) = tokio::join!(
            Box::pin(self.store.admit(&admission, claim)),
            Box::pin(self.store.load_context(user, now, request.swing_id.as_ref()))
        );
        stats::store_wave(wave.elapsed());
        let keys = admission.keys.clone();
        let reserved = admission.cost_micro;
        let admitted = match admitted {
            Ok(a) => a,
            Err(AdmitError { error, unsure }) => {
                // No answer is not a refusal: the admission may stand. Resolve it and give
                // back whatever it took, so a 503 charges nothing.
                if let Some(unsure) = unsure {
                    self.release(&keys, reserved, idem_key.as_deref(), Some(unsure)).await;
                }
                return Err(error.into());
            }
        };
        match admitted {
            AdmitOutcome::Admitted => {}
            AdmitOutcome::Duplicate(previous) => {
                return match Previous::from_item(previous.as_ref()) {
                    Previous::Completed(body) => Ok(Answer::Replay(body)),
                    Previous::InProgress => Err(ChatError::InProgress),
                };
            }
            AdmitOutcome::Refused { counter, current } => {
                let refusal = Refusal::new(&cfg.limits, counter, current, now);
                let premium = context
                    .as_ref()
                    .ok()
                    .and_then(|c| c.profile.as_ref())
                    .is_some_and(|p| p.plan == Some(crate::models::GolferProfilePlan::Premium));
                outcome.limit = Some(refusal.label());
                let message = self.limit_message(&refusal, counter, premium)?;
                return Err(ChatError::Limited { refusal: Box::new(refusal), message });
            }
        }
        let release_all = || self.release(&keys, reserved, idem_key.as_deref(), None);

        let context = match context {
            Ok(c) => c,
            Err(e) => {
                release_all().await;
                return Err(e.into());
            }
        };
        if request.swing_id.is_some() && context.swing_on_screen.is_none() {
            release_all().await;
            return Err(ChatError::SwingNotFound);
        }

        let conv_id = keys::conversation(user, now);
        let vars = PromptVars {
            today: now.format("%Y-%m-%d").to_string(),
            reply_word_limit: 150,
            message: message.clone(),
            profile: context.profile.clone(),
            app: request.context.clone().unwrap_or(AppContext { club: None, handicap: None, locale: None, screen: None }),
            themes: context
                .today
                .as_ref()
                .map(|c| c.coaching_themes.clone())
                .or_else(|| context.previous_themes.clone())
                .unwrap_or_else(conversation::default_themes),
            summary: context.today.as_ref().and_then(|c| c.summary.clone()),
            swing_on_screen: context.swing_on_screen.clone(),
            swings: context.swings.clone(),
            history: history(context.today.as_ref()),
            detail: crate::context::Detail::Full,
        };
        let budget = limits::prompt_budget(&cfg.limits).saturating_sub(crate::llm::response_format_tokens());
        let packed = match pack(&self.prompts, &vars, budget) {
            Ok(p) => p,
            Err(e) => {
                release_all().await;
                return Err(match e {
                    PackError::Prompt(p) => ChatError::Prompt(p),
                    too_long => ChatError::TooLong(too_long),
                });
            }
        };

        // The model, with the usage counters read meanwhile (they already hold this request).
        let model_started = Instant::now();
        let (reply, usage) = tokio::join!(
            self.coach.reply(CoachRequest {
                messages: &packed.messages,
                max_tokens: cfg.limits.max_reply_tokens,
                deadline,
                vars: &vars,
            }),
            self.store.usage(&keys)
        );
        stats::model_wait(model_started.elapsed());
        let usage = usage.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "usage read failed; quota shown as before this request");
            UsageSnapshot::default()
        });
        let reply = self.safe_reply(reply, &vars, outcome)?;
        let model_reached = !reply.degraded;
        let actual = if reply.source == "offline" || !model_reached {
            0
        } else {
            limits::cost(&cfg.limits, reply.prompt_tokens, reply.completion_tokens)
        };

        let own_swings: Vec<SwingId> = context
            .swings
            .iter()
            .chain(context.swing_on_screen.iter())
            .map(|s| s.analysis_id.clone())
            .collect();
        let reply_swing = reply
            .payload
            .as_ref()
            .and_then(|p| p.swing_reference.clone())
            .filter(|id| own_swings.iter().any(|s| s.as_str() == id));
        let user_message = new_message(
            Role::User,
            message,
            now,
            request.swing_id.as_ref().map(|s| s.as_str().to_string()),
            reply.prompt_tokens,
        );
        let mut assistant = new_message(Role::Assistant, reply.text.clone(), self.clock.now(), reply_swing, reply.completion_tokens);
        if reply.degraded {
            assistant.degraded = Some(true);
        }

        // Remaining quota: the counters read above include this request's reservation.
        let mut used = usage;
        used.user_day_spend_micro = used.user_day_spend_micro - reserved + actual;
        if !model_reached {
            used.user_hour_count -= 1;
        }
        let tokens = reply.prompt_tokens + reply.completion_tokens;
        let response = CoachingChatResponse {
            request_id: request_id.to_string(),
            message: assistant.clone(),
            conversation_id: ConversationId::try_from(conv_id.clone())
                .map_err(|e| StoreError::Rejected(format!("conversation id: {e}")))?,
            coaching_themes: vars.themes.clone(),
            usage: Usage {
                prompt_tokens: reply.prompt_tokens,
                completion_tokens: reply.completion_tokens,
                total_tokens: tokens,
                token_limit: u64::from(cfg.limits.token_limit_per_request),
                cost_micro_usd: u64::try_from(actual).unwrap_or(0),
            },
            quota: limits::quota(&cfg.limits, used, now),
            source: reply.source.clone(),
            degraded: reply.degraded,
        };

        // Wave 2: the turn, settlement and the stored response in one transaction.
        let turn = Turn {
            user_message,
            reply: assistant,
            tokens,
            proposal: reply.payload.as_ref(),
            own_swings: &own_swings,
            latest_score: vars.swings.first().map(|s| s.overall_score),
            client_message_id: request.client_message_id.as_ref().map(|c| c.as_str()),
        };
        let committed = self
            .commit_turn(&conv_id, user, context.today, context.previous_themes, &turn, &keys, reserved, actual, model_reached, idem_key.as_deref(), response)
            .await;
        let response = match committed {
            Ok(r) => r,
            Err(e) => {
                release_all().await;
                return Err(e.into());
            }
        };
        outcome.metrics.tokens = tokens;
        outcome.metrics.cost_micro = actual;
        outcome.metrics.new_conversation = response.new_conversation;
        outcome.metrics.degraded = reply.degraded;
        outcome.metrics.filtered = reply.filtered;
        outcome.metrics.outcome = if reply.degraded {
            "fallback"
        } else if reply.source == "offline" {
            "offline"
        } else {
            "model"
        };
        Ok(Answer::Fresh(Box::new(response.body)))
    }

    fn limit_message(&self, refusal: &Refusal, counter: Counter, premium: bool) -> Result<String, PromptError> {
        let reset_phrase = match counter {
            Counter::UserHour | Counter::IpHour => format!("at {} UTC", refusal.resets_at.format("%H:%M")),
            Counter::UserDay | Counter::GlobalDay => "tomorrow".to_string(),
        };
        let limit_value = match counter {
            Counter::UserHour => u64::from(self.config.limits.requests_per_hour),
            Counter::IpHour => u64::from(self.config.limits.ip_requests_per_hour),
            Counter::UserDay => self.config.limits.spend_per_user_day_micro,
            Counter::GlobalDay => self.config.limits.spend_total_day_micro,
        };
        self.prompts.render(
            LIMIT,
            &serde_json::json!({
                "limit": refusal.label(),
                "limit_value": limit_value,
                "reset_phrase": reset_phrase,
                "premium": premium,
            }),
        )
    }

    /// Applies output safety to a model reply, or renders the fallback when there is none.
    fn safe_reply(&self, reply: Result<CoachReply, LlmError>, vars: &PromptVars, outcome: &mut Outcome) -> Result<Reply, PromptError> {
        match reply {
            Ok(r) => {
                let clean = safety::clean_output(&r.payload.reply);
                let (text, filtered) = if clean.blocked || clean.text.trim().is_empty() {
                    (self.prompts.render(FILTERED, &ReplyVars::from(vars))?, true)
                } else {
                    (clean.text, false)
                };
                Ok(Reply {
                    text,
                    payload: Some(r.payload),
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.completion_tokens,
                    source: r.source,
                    degraded: false,
                    filtered,
                })
            }
            Err(e) => {
                outcome.model_error = Some(e.label());
                Ok(Reply {
                    text: self.prompts.render(FALLBACK, &ReplyVars::from(vars))?,
                    payload: None,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                    source: "fallback".into(),
                    degraded: true,
                    filtered: false,
                })
            }
        }
    }

    /// Writes the turn under optimistic locking, re-reading the conversation when another
    /// message got there first. Settlement and the idempotency record ride along, so a
    /// retry of the transaction can never charge twice.
    #[expect(clippy::too_many_arguments, reason = "one call site; the pieces are distinct facts of the turn")]
    async fn commit_turn(
        &self,
        conv_id: &str,
        user: &UserId,
        mut current: Option<ConversationItem>,
        previous_themes: Option<crate::models::CoachingThemes>,
        turn: &Turn<'_>,
        keys: &CounterKeys,
        reserved: i64,
        actual: i64,
        model_reached: bool,
        idem_key: Option<&str>,
        mut response: CoachingChatResponse,
    ) -> Result<Committed, StoreError> {
        const ATTEMPTS: u32 = 30;
        let now = self.clock.now();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Concurrent turns on one conversation: spread the retries out.
                let ceiling = 10u64 << attempt.min(4);
                let ms = rand::Rng::random_range(&mut rand::rng(), 1..=ceiling);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            let new_conversation = current.is_none();
            let expected = current.as_ref().map(|c| c.version.unwrap_or(0));
            let base = match current.take() {
                Some(c) => c,
                None => conversation::start(
                    ConversationId::try_from(conv_id.to_string()).map_err(|e| StoreError::Rejected(e.to_string()))?,
                    user.clone(),
                    previous_themes.clone(),
                    now,
                ),
            };
            let next = conversation::apply(base, turn, now, self.config.max_recent_messages);
            response.coaching_themes = next.coaching_themes.clone();
            let mut extra = self.store.spend_adjustment(keys, actual - reserved, i64::try_from(turn.tokens).unwrap_or(0))?;
            if !model_reached {
                extra.extend(self.store.slot_release(keys)?);
            }
            if let Some(k) = idem_key {
                let body = serde_json::to_string(&response).map_err(|e| StoreError::Rejected(e.to_string()))?;
                extra.push(self.store.idempotency_complete(k, now.timestamp(), &body)?);
            }
            let wave = Instant::now();
            let committed = self.store.commit_conversation(&next, expected, extra).await;
            stats::store_wave(wave.elapsed());
            if committed? {
                return Ok(Committed { body: response, new_conversation });
            }
            let wave = Instant::now();
            current = self.store.conversation(conv_id).await?;
            stats::store_wave(wave.elapsed());
        }
        Err(StoreError::Contention)
    }

    /// Gives back the whole reservation and the idempotency claim: nothing was stored.
    /// With `unsure`, the admission itself got no answer: it is resolved first, and only an
    /// admission that stands is given back. When the table cannot take this now, it is
    /// retried in the background (within `RELEASE_RETRY_FOR`), so an outage leaves no
    /// reservation behind.
    async fn release(&self, keys: &CounterKeys, reserved: i64, idem_key: Option<&str>, unsure: Option<Unsure>) {
        let wave = Instant::now();
        self.release_now(keys, reserved, idem_key, unsure).await;
        stats::store_wave(wave.elapsed());
    }

    async fn release_now(&self, keys: &CounterKeys, reserved: i64, idem_key: Option<&str>, unsure: Option<Unsure>) {
        let items = (|| -> Result<_, StoreError> {
            let mut items = self.store.spend_adjustment(keys, -reserved, 0)?;
            items.extend(self.store.slot_release(keys)?);
            if let Some(k) = idem_key {
                items.push(self.store.idempotency_release(k)?);
            }
            Ok(items)
        })();
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "could not build a release");
                return;
            }
        };
        let release = Release { unsure, items, token: uuid::Uuid::new_v4().to_string() };
        if release.apply(&self.store).await.is_ok() {
            return;
        }
        tracing::warn!("release deferred: storage unavailable; retrying in the background");
        let store = self.store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut wait = std::time::Duration::from_millis(250);
            while started.elapsed() < RELEASE_RETRY_FOR {
                tokio::time::sleep(wait).await;
                if release.apply(&store).await.is_ok() {
                    tracing::info!("deferred release applied");
                    return;
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            // Counters stay charged (never under-charged); they expire with their hour and day.
            tracing::error!("deferred release gave up");
        });
    }
}

/// A release ready to send; applying it again is harmless (both transactions carry tokens).
struct Release {
    unsure: Option<Unsure>,
    items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    token: String,
}

impl Release {
    async fn apply(&self, store: &Store) -> Result<(), StoreError> {
        if let Some(unsure) = &self.unsure {
            if !store.resolve(unsure).await? {
                return Ok(()); // never applied: nothing to give back
            }
        }
        store.transact_idempotent("TransactWriteItems release", self.items.clone(), Some(&self.token)).await.map(|_| ())
    }
}

/// How long a release that failed is retried in the background.
pub const RELEASE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(180);

struct Committed {
    body: CoachingChatResponse,
    new_conversation: bool,
}
