//! The golfer's own data as the app reads it: a day's conversation, the current themes, what
//! is left of the quota, and erasing all of it. The read routes call these, never the store.

use chrono::{DateTime, Utc};

use crate::chat::Caller;
use crate::conversation::default_themes;
use crate::limits;
use crate::memory;
use crate::models::{
    Conversation, DeletionReport, FeedbackReceipt, FeedbackReceiptRating, FeedbackRequest, FeedbackRequestRating, GolferMemory, MemoryView, ThemesView, UsageView,
};
use crate::state::AppState;
use crate::store::counters::CounterKeys;
use crate::store::golfer::Rated;
use crate::store::memory::MemoryWrite;
use crate::store::{deadline, keys, StoreError};

/// Why a read of the golfer's data was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("nothing there")]
    NotFound,
    #[error("no such fact")]
    NoSuchFact,
    #[error("too many ratings this hour")]
    TooManyRatings { retry_after_secs: u64 },
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// Every store call of a golfer's read or change waits at most until the request's deadline,
/// as the chat's do.
async fn by_deadline<T>(caller: &Caller, work: impl std::future::Future<Output = T>) -> T {
    deadline::scope(caller.deadline, work).await
}

/// The golfer's conversation of `day`'s UTC day, assembled from its turns.
pub async fn conversation_of(state: &AppState, caller: &Caller, day: DateTime<Utc>) -> Result<Conversation, AccountError> {
    by_deadline(caller, state.store.conversation(&keys::conversation(&caller.user, day))).await?.ok_or(AccountError::NotFound)
}

/// The golfer's current coaching themes: the newest turn's, or the defaults.
pub async fn themes_of(state: &AppState, caller: &Caller) -> Result<ThemesView, AccountError> {
    let view = match by_deadline(caller, state.store.latest_turn(&caller.user)).await? {
        Some(t) => {
            ThemesView { request_id: caller.request_id.clone(), coaching_themes: t.coaching_themes, referenced_swings: t.referenced_swings, last_updated: Some(t.last_updated) }
        }
        None => ThemesView { request_id: caller.request_id.clone(), coaching_themes: default_themes(), referenced_swings: vec![], last_updated: None },
    };
    Ok(view)
}

/// What is left of the golfer's hour and day.
pub async fn usage_of(state: &AppState, caller: &Caller) -> Result<UsageView, AccountError> {
    let now = state.clock.now();
    let used = by_deadline(caller, state.store.usage(&CounterKeys::of(&caller.user, &caller.ip, now))).await?;
    Ok(UsageView { request_id: caller.request_id.clone(), quota: limits::quota(&state.config.limits, used, now) })
}

/// The golfer's rating of one of their answers (the turn under their own key: another
/// golfer's and an unknown id are both not found). Rating again replaces the rating.
pub async fn rate(state: &AppState, caller: &Caller, r: &FeedbackRequest) -> Result<FeedbackReceipt, AccountError> {
    let id = r.client_message_id.as_str();
    let turn = by_deadline(caller, state.store.completed_turn(&keys::turn(&caller.user, id))).await?.ok_or(AccountError::NotFound)?;
    let receipt = FeedbackReceipt {
        request_id: caller.request_id.clone(),
        client_message_id: id.to_string(),
        rating: match r.rating {
            FeedbackRequestRating::Up => FeedbackReceiptRating::Up,
            FeedbackRequestRating::Down => FeedbackReceiptRating::Down,
        },
        reason: r.reason.map(|reason| reason.to_string().parse()).transpose().map_err(|_| StoreError::Invalid("a rating's reason".into()))?,
        prompt_version: turn.response.prompt_version.unwrap_or_else(|| "unknown".into()),
        variant: turn.response.variant.unwrap_or_else(|| crate::prompts::experiment::BASE.into()),
        model: turn.response.source,
    };
    let now = state.clock.now();
    match by_deadline(caller, state.store.rate(&keys::rating(&caller.user, id), &receipt, CounterKeys::of(&caller.user, &caller.ip, now), now)).await? {
        Rated::Stored => Ok(receipt),
        Rated::OverHourlyCap => Err(AccountError::TooManyRatings { retry_after_secs: u64::try_from((crate::clock::next_hour(now) - now).num_seconds().max(1)).unwrap_or(1) }),
    }
}

/// What the coach remembers about the golfer, in the order the prompt uses it.
pub async fn memory_of(state: &AppState, caller: &Caller) -> Result<MemoryView, AccountError> {
    let memory = by_deadline(caller, state.store.memory(&caller.user)).await?.unwrap_or_else(memory::empty);
    Ok(memory_view(caller, &memory))
}

/// The golfer deletes one fact: it is neither used nor remembered again.
pub async fn forget_fact(state: &AppState, caller: &Caller, id: &str) -> Result<MemoryView, AccountError> {
    change_memory(state, caller, |m| m.and_then(|m| memory::delete(m, id, state.log_key())).ok_or(AccountError::NoSuchFact)).await
}

/// The golfer's memory switch.
pub async fn set_memory(state: &AppState, caller: &Caller, enabled: bool) -> Result<MemoryView, AccountError> {
    change_memory(state, caller, |m| Ok(memory::set_enabled(m, enabled))).await
}

/// Reads the golfer's memory, changes it and writes it if it did not change meanwhile
/// (a turn's write may land in between); a few tries, then the store is busy.
async fn change_memory(state: &AppState, caller: &Caller, change: impl Fn(Option<&GolferMemory>) -> Result<GolferMemory, AccountError>) -> Result<MemoryView, AccountError> {
    let tries = async {
        for _ in 0..4 {
            let current = state.store.memory(&caller.user).await?;
            let next = change(current.as_ref())?;
            let write = MemoryWrite { memory: &next, read_version: current.as_ref().map(|m| m.version) };
            if state.store.put_memory(&caller.user, write).await? {
                return Ok(memory_view(caller, &next));
            }
        }
        Err(AccountError::Unavailable(StoreError::Contention))
    };
    by_deadline(caller, tries).await
}

/// Erases the golfer's conversations, profile, stored answers and memory.
pub async fn erase(state: &AppState, caller: &Caller) -> Result<DeletionReport, AccountError> {
    let d = by_deadline(caller, state.store.erase_golfer(&caller.user, state.clock.now().timestamp_millis())).await?;
    Ok(DeletionReport { request_id: caller.request_id.clone(), conversations_deleted: d.conversations, profile_deleted: d.profile, turns_deleted: d.turns, facts_deleted: d.facts })
}

fn memory_view(caller: &Caller, m: &GolferMemory) -> MemoryView {
    MemoryView {
        request_id: caller.request_id.clone(),
        enabled: m.enabled,
        limit: std::num::NonZeroU64::new(memory::MAX_FACTS as u64).unwrap_or(std::num::NonZeroU64::MIN),
        facts: memory::ordered(&m.facts),
    }
}
