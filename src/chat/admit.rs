//! Step 1, admission: one DynamoDB wave holds the admission transaction (the golfer's hour
//! and day, the IP's hour, the claim on the clientMessageId), the coaching-context reads and
//! this process's share of the global budget, all bounded by the admission wait. A message
//! is admitted with its [`Reservation`], refused in the coach's voice, or answered with the
//! stored answer to an identical message.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::reservation::Counters;
use super::{Answered, Caller, ChatError, ChatInput, Reservation};
use crate::clock;
use crate::limits::{self, Counter, QuotaCheck, Refusal, UsageSnapshot};
use crate::llm::table::ModelSpec;
use crate::metrics::{Outcome, OutcomeKind};
use crate::models::{CoachingChatRequest, CoachingChatResponseStorage as Storage, GolferProfile, GolferProfilePlan, SwingId};
use crate::prompts::experiment::PromptSet;
use crate::prompts::{PromptError, LIMIT};
use crate::state::AppState;
use crate::store::conversations::CoachingContext;
use crate::store::counters::{AdmitDecision, AdmitError, CounterKeys};
use crate::store::idempotency::{Claim, Previous};
use crate::store::{deadline, keys, StoreError};

/// An admitted message: what admission took for it, what was read for it, and the key and
/// hash its turn is stored under.
pub struct Admitted {
    pub reservation: Reservation,
    pub context: Result<CoachingContext, StoreError>,
    /// What the golfer has used this hour and day, this message's reservation included.
    pub usage: UsageSnapshot,
    pub turn_key: String,
    pub request_hash: String,
    /// When the golfer asked.
    pub now: DateTime<Utc>,
    /// The templates (and model row) the message is answered with: the base, or a variant.
    pub set: PromptSet,
    /// The model row that answers it, decided here (`AppState::model_row`).
    pub row: ModelSpec,
}

/// What admission decided.
pub enum Admission {
    Admitted(Box<Admitted>),
    Replay(Box<Answered>),
}

/// What the wave's three parts answered.
struct Wave {
    decision: Result<AdmitDecision, AdmitError>,
    context: Result<CoachingContext, StoreError>,
    global: Result<bool, StoreError>,
    /// The golfer's and the IP's counters the admission wrote and the context read.
    counters: CounterKeys,
}

/// Step 1, bounded by the admission wait.
pub async fn admit(state: &AppState, caller: &Caller, input: &ChatInput) -> Result<Admission, ChatError> {
    let now = state.clock.now();
    ensure_own_conversation(caller, &input.request)?;
    let admit_by = caller.deadline.min(Instant::now() + state.config.admission_wait);
    deadline::scope(admit_by, admit_and_load_context(state, caller, &input.request, now)).await
}

async fn admit_and_load_context(state: &AppState, caller: &Caller, request: &CoachingChatRequest, now: DateTime<Utc>) -> Result<Admission, ChatError> {
    let turn_key = keys::turn(&caller.user, request.client_message_id.as_ref().map_or(keys::server_message_id(), |id| id.to_string()).as_str());
    let request_hash = request_hash(request);
    let claim = request.client_message_id.as_ref().map(|_| claim(caller, &turn_key, &request_hash, now));
    // The worst case at the prices of the model it calls (the variant's row, or the model in
    // service: its replacement from its shutdown on).
    let set = state.prompt_set(&caller.user);
    let row = state.model_row(&set, now);
    let check = limits::quota_check(&state.limits_for(&row), &caller.user, &caller.ip, now);
    // This admission's mark on the golfer's quota item: the context read beside it tells by it
    // whether it already counts this message.
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let Wave { mut decision, context, global, counters } = run_wave(state, &check, claim.as_ref(), request.swing_id.as_ref(), &mark).await;
    let usage = context.as_ref().map(|c| c.quota.with_admission(&mark, check.cost_micro)).unwrap_or_default();
    let mut reservation = Reservation::new(&state.store, &state.budget, counters, check.cost_micro);
    if matches!(global, Ok(true)) {
        reservation = reservation.with_global(clock::day_key(now), check.cost_micro);
    }
    // What the admission took, or (no answer) may have taken: the reservation gives it back
    // unless the message is answered.
    let unsure = match &mut decision {
        Err(AdmitError { unsure, .. }) => unsure.take(),
        _ => None,
    };
    if matches!(decision, Ok(AdmitDecision::Admitted)) || unsure.is_some() {
        reservation = reservation.with_counters(Counters { claim_key: claim.map(|c| c.key), unsure });
    }
    let admitted = Admitted { reservation, context, usage, turn_key, request_hash, now, set, row };
    decide(state, decision, global, admitted).await
}

/// The admission transaction (marked `mark`), the context reads (the quota item among them)
/// and the global budget, at once.
async fn run_wave(state: &AppState, check: &QuotaCheck, claim: Option<&Claim>, swing: Option<&SwingId>, mark: &str) -> Wave {
    // Boxed: the SDK's futures are large, and unboxed they would size this request's
    // future for its whole life, while a request spends most of its time past this wave.
    let started = Instant::now();
    let counters = CounterKeys::of(&check.user, &check.ip, check.at);
    let (decision, context, global) = tokio::join!(
        Box::pin(state.store.admit(check, claim, mark)),
        Box::pin(state.store.load_context(&check.user, swing, &counters)),
        Box::pin(state.budget.reserve(&state.store, check.at, check.cost_micro)),
    );
    crate::stats::store_wave(started.elapsed());
    Wave { decision, context, global, counters }
}

/// Admitted, refused or a replay, from what the wave answered; whatever a message that is not
/// admitted took is given back (an unsure admission is resolved first, so a 503 charges
/// nothing).
async fn decide(state: &AppState, decision: Result<AdmitDecision, AdmitError>, global: Result<bool, StoreError>, admitted: Admitted) -> Result<Admission, ChatError> {
    if matches!((&decision, &global), (Ok(AdmitDecision::Admitted), Ok(true))) {
        return Ok(Admission::Admitted(Box::new(admitted)));
    }
    let Admitted { reservation, context, request_hash, now, .. } = admitted;
    reservation.release().await;
    let profile = || context.as_ref().ok().and_then(|c| c.profile.clone());
    let refusal = |counter, current| refused(state, counter, current, now, profile()).unwrap_or_else(|e| e);
    match decision {
        Ok(AdmitDecision::Admitted) => Err(match global {
            Err(e) => ChatError::Store(e),
            Ok(_) => refusal(Counter::GlobalDay, 0),
        }),
        Ok(AdmitDecision::Duplicate(Previous::Completed(turn))) if turn.request_hash == request_hash => {
            let response = Box::new(super::record::response(&turn, Storage::Stored));
            Ok(Admission::Replay(Box::new(Answered { response, replay: true, outcome: Outcome::of(OutcomeKind::Replay) })))
        }
        Ok(AdmitDecision::Duplicate(Previous::InProgress(h))) if h.as_ref().is_none_or(|h| *h == request_hash) => Err(ChatError::InProgress),
        Ok(AdmitDecision::Duplicate(_)) => Err(ChatError::IdReused),
        Ok(AdmitDecision::Refused { counter, current }) => Err(refusal(counter, current)),
        Err(AdmitError { error, .. }) => Err(error.into()),
    }
}

/// The claim on the message's clientMessageId, held until the request's deadline.
fn claim(caller: &Caller, key: &str, request_hash: &str, now: DateTime<Utc>) -> Claim {
    let lock_secs = i64::try_from(caller.deadline.saturating_duration_since(Instant::now()).as_secs()).unwrap_or(0) + 5;
    Claim { key: key.to_string(), now: now.timestamp(), locked_until: now.timestamp() + lock_secs, request_hash: request_hash.to_string() }
}

/// The refusal of `counter`, in the coach's voice (a template that does not render is the error).
fn refused(state: &AppState, counter: Counter, current: i64, now: DateTime<Utc>, profile: Option<GolferProfile>) -> Result<ChatError, ChatError> {
    let premium = profile.is_some_and(|p| p.plan == Some(GolferProfilePlan::Premium));
    let refusal = Refusal::new(&state.config.limits, counter, current, now);
    let message = limit_message(state, &refusal, premium)?;
    Ok(ChatError::Limited { refusal: Box::new(refusal), message })
}

fn limit_message(state: &AppState, refusal: &Refusal, premium: bool) -> Result<String, PromptError> {
    let l = &state.config.limits;
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
    state.prompts.render(LIMIT, &vars)
}

/// What makes two requests the same message: a retry with its clientMessageId must match.
fn request_hash(r: &CoachingChatRequest) -> String {
    use sha2::{Digest, Sha256};
    let same = serde_json::json!([r.message, r.swing_id, r.conversation_id, r.context]);
    hex::encode(&Sha256::digest(same.to_string().as_bytes())[..16])
}

/// A conversation id names its owner: another golfer's is refused before any read.
fn ensure_own_conversation(caller: &Caller, request: &CoachingChatRequest) -> Result<(), ChatError> {
    match &request.conversation_id {
        Some(id) if keys::conversation_owner(id) != Some(caller.user.as_str()) => Err(ChatError::ForeignConversation),
        _ => Ok(()),
    }
}
