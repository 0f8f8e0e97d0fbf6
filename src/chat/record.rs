//! Step 4, the turn: the exchange recorded as one turn item (the themes after it, the day's
//! referenced swings, the response to replay), written once with the reservation's
//! settlement in one transaction. From here the golfer is answered whatever the store does:
//! a turn that cannot be stored in time is stored in the background (`pending`), one that may
//! never be (the golfer deleted their data after asking) is `discarded`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::reservation::Settlement;
use super::{Answered, Caller, ChatError, ChatInput, Composed, Replied, Reply};
use crate::backoff::{Backoff, Tried};
use crate::clock;
use crate::conversation::{self, Turn};
use crate::limits;
use crate::memory;
use crate::metrics::Outcome;
use crate::models::{ChatMessage, CoachingChatResponse, CoachingChatResponseStorage as Storage, GolferMemory, Role, StoredResponse, SwingId, TurnItem, Usage};
use crate::state::AppState;
use crate::store::conversations::{PreparedTurn, TurnWriteError};
use crate::store::memory::MemoryWrite;
use crate::store::{deadline, keys, Store, StoreError};

/// A turn whose write failed after the model answered is sent again in the background, for
/// as long as its client request token keeps the retries idempotent (DynamoDB: ten minutes).
const TURN_RETRY_FOR: Duration = Duration::from_secs(540);
const TURN_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).with_floor(Duration::from_millis(100));

/// Step 4: the turn, its settlement, the response.
pub async fn record(state: &AppState, caller: &Caller, input: &ChatInput, replied: Result<Replied, ChatError>) -> Result<Answered, ChatError> {
    let replied = replied?;
    let item = turn_item(state, caller, input, &replied);
    let Replied { composed, reply, first_delta_at, .. } = replied;
    // A fallback is not the answer to keep for the app's id: it is stored under one of ours,
    // and the claim is given up, so the app's retry with the same id is answered anew.
    let key = if reply.degraded() { keys::turn(&caller.user, &keys::server_message_id()) } else { composed.turn_key.clone() };
    let settlement = Settlement { cost_micro: reply.cost_micro(), release_slots: reply.gives_slot_back() };
    let remembered = remembered(state, caller, &composed, &reply, &key);
    let settled = composed.reservation.settle(settlement).await;
    let mut write = settled.turn_write(&key, &item);
    write.memory = remembered.as_ref().map(|memory| MemoryWrite { memory, read_version: composed.memory.as_ref().map(|m| m.version) });
    let storage = match state.store.prepare_turn(write) {
        Ok(prepared) => store_turn(&state.store, prepared, caller.deadline + state.config.deadline_margin).await,
        Err(e) => {
            tracing::error!(error = %e, "a turn could not be built for the store");
            Storage::Discarded
        }
    };
    let new_conversation = composed.newest.as_ref().is_none_or(|t| t.conversation != item.conversation);
    let outcome = Outcome {
        first_delta_at,
        prompt_version: item.response.prompt_version.clone(),
        variant: item.response.variant.clone(),
        model: Some(reply.source.clone()),
        ..reply.outcome(new_conversation, state.coach.breaker_open())
    };
    Ok(Answered { response: Box::new(response(&item, storage)), replay: false, outcome })
}

/// What the coach remembers after this reply: the model's memory operations applied to the
/// memory read at admission; `None` when nothing changes (the reply is not the model's, memory
/// is off, or no operation was acceptable).
fn remembered(state: &AppState, caller: &Caller, composed: &Composed, reply: &Reply, key: &str) -> Option<GolferMemory> {
    let ops = &reply.payload.as_ref()?.memory;
    let source = memory::Source { client_message_id: keys::client_message_id(&caller.user, key)?, at: state.clock.now(), hash_key: state.log_key() };
    let (changed, applied) = memory::apply(composed.memory.as_ref(), ops, source);
    if applied.refused > 0 {
        tracing::info!(refused = applied.refused, "memory operations refused");
    }
    changed
}

/// The turn item of this exchange.
fn turn_item(state: &AppState, caller: &Caller, input: &ChatInput, replied: &Replied) -> TurnItem {
    let Replied { composed, reply, .. } = replied;
    let turn = new_turn(input, composed, state.clock.now(), reply);
    let stored = stored_response(state, caller, replied);
    let place = conversation::Placement { user: caller.user.clone(), conversation: composed.conversation.clone(), now: composed.now };
    conversation::next_turn(place, composed.newest.as_ref(), &turn, stored, composed.request_hash.clone())
}

/// The response's fields that the turn does not hold already. The remaining quota comes from
/// the counters read beside the admission, with this message's reservation counted in.
fn stored_response(state: &AppState, caller: &Caller, replied: &Replied) -> StoredResponse {
    let Replied { composed, reply, .. } = replied;
    let l = &state.config.limits;
    let mut used = composed.usage;
    used.user_day_spend_micro = used.user_day_spend_micro - composed.reservation.reserved_micro() + reply.cost_micro();
    if reply.gives_slot_back() {
        used.user_hour_count -= 1;
    }
    StoredResponse {
        request_id: caller.request_id.clone(),
        usage: Usage {
            prompt_tokens: reply.prompt_tokens(),
            completion_tokens: reply.completion_tokens(),
            total_tokens: reply.tokens(),
            token_limit: u64::from(l.token_limit_per_request),
            cost_micro_usd: u64::try_from(reply.cost_micro()).unwrap_or(0),
        },
        quota: limits::quota(l, used, composed.now),
        source: reply.source.clone(),
        degraded: reply.degraded(),
        prompt_version: Some(prompt_version(state, composed, reply)),
        variant: Some(composed.set.variant.clone()),
    }
}

/// The version of the prompt set that wrote the reply: its templates and the model row that
/// answered (the one in service, or the variant's, when the offline coach or the fallback did).
fn prompt_version(state: &AppState, composed: &Composed, reply: &Reply) -> String {
    let asked = state.models.named(&reply.source).map_or_else(|| composed.row.asked(), |r| r.asked());
    crate::prompts::prompt_version(composed.set.prompts.hash(), &asked)
}

/// Writes the turn (its settlement and the stored answer ride along) by `by`. When it could
/// not be stored in time the golfer is answered anyway (`Pending`), and the same transaction
/// is sent again in the background (it applies once). A turn that may never be written (the
/// golfer deleted their data after asking) is `Discarded`: its spend is settled and its claim
/// deleted without it.
async fn store_turn(store: &Store, prepared: PreparedTurn, by: Instant) -> Storage {
    let started = Instant::now();
    let written = deadline::scope(by, store.write_turn(&prepared)).await;
    crate::stats::store_wave(started.elapsed());
    let error = match written {
        Ok(()) => return Storage::Stored,
        Err(TurnWriteError::Unwritable(why)) => {
            tracing::info!(reason = %why, "turn discarded");
            if let Err(e) = deadline::scope(by, store.discard_turn(&prepared)).await {
                tracing::warn!(error = %e, "a discarded turn's settlement failed; its reservation stays charged and its claim expires");
            }
            return Storage::Discarded;
        }
        Err(TurnWriteError::Failed { error, maybe_applied }) => {
            tracing::warn!(error = %error, maybe_applied, "turn not stored in time; storing it in the background");
            error
        }
    };
    if matches!(error, StoreError::Rejected(_) | StoreError::Invalid(_)) {
        return Storage::Discarded;
    }
    let (store, prepared) = (store.clone(), std::sync::Arc::new(prepared));
    TURN_BACKOFF.in_background("deferred turn", TURN_RETRY_FOR, move || {
        let (store, prepared) = (store.clone(), prepared.clone());
        async move {
            match store.write_turn(&prepared).await {
                Ok(()) => Tried::Done,
                Err(TurnWriteError::Unwritable(_)) => {
                    let _ = store.discard_turn(&prepared).await;
                    Tried::Done
                }
                Err(TurnWriteError::Failed { error: StoreError::Rejected(_) | StoreError::Invalid(_), .. }) => Tried::Stop,
                Err(_) => Tried::Again,
            }
        }
    });
    Storage::Pending
}

/// The response to a turn, just answered or replayed.
pub fn response(turn: &TurnItem, storage: Storage) -> CoachingChatResponse {
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
        prompt_version: r.prompt_version.clone().unwrap_or_else(|| "unknown".to_string()),
        variant: r.variant.clone().unwrap_or_else(|| crate::prompts::experiment::BASE.to_string()),
    }
}

/// The exchange to record: the golfer's message and the reply, with the reply's swing
/// reference kept only when it is one of the caller's own.
fn new_turn<'a>(input: &'a ChatInput, composed: &'a Composed, answered_at: DateTime<Utc>, reply: &'a Reply) -> Turn<'a> {
    let own: &[SwingId] = &composed.own_swings;
    let reply_swing = reply.payload.as_ref().and_then(|p| p.swing_reference.clone()).filter(|id| own.iter().any(|s| s.as_str() == id));
    let user_swing = input.request.swing_id.as_ref().map(|s| s.as_str().to_string());
    let mut assistant = new_message(Role::Assistant, reply.text.clone(), answered_at, reply_swing, reply.completion_tokens());
    if reply.degraded() {
        assistant.degraded = Some(true);
    }
    Turn {
        user_message: new_message(Role::User, input.message.clone(), composed.now, user_swing, reply.prompt_tokens()),
        reply: assistant,
        tokens: reply.tokens(),
        proposal: reply.payload.as_ref(),
        own_swings: own,
        latest_score: composed.vars.swings.first().map(|s| s.overall_score),
    }
}

fn new_message(role: Role, content: String, at: DateTime<Utc>, swing: Option<String>, tokens: u64) -> ChatMessage {
    ChatMessage { content, degraded: None, message_id: uuid::Uuid::new_v4().to_string(), role, swing_reference: swing, timestamp: clock::timestamp(at), tokens_used: tokens }
}
