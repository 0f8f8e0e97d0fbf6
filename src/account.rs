//! The golfer's own data as the app reads it: a day's conversation, the current themes, what
//! is left of the quota, and erasing all of it. The read routes call these, never the store.

use chrono::{DateTime, Utc};

use crate::chat::Caller;
use crate::conversation::default_themes;
use crate::limits;
use crate::models::{ConversationItem, DeletionReport, ThemesView, UsageView};
use crate::state::AppState;
use crate::store::counters::CounterKeys;
use crate::store::{keys, StoreError};

/// Why a read of the golfer's data was not answered.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("nothing there")]
    NotFound,
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

impl AppState {
    /// The golfer's conversation of `day`'s UTC day, assembled from its turns.
    pub async fn conversation_of(&self, caller: &Caller, day: DateTime<Utc>) -> Result<ConversationItem, AccountError> {
        self.store.conversation(&keys::conversation(&caller.user, day)).await?.ok_or(AccountError::NotFound)
    }

    /// The golfer's current coaching themes: the newest turn's, or the defaults.
    pub async fn themes_of(&self, caller: &Caller) -> Result<ThemesView, AccountError> {
        let view = match self.store.latest_turn(&caller.user).await? {
            Some(t) => ThemesView {
                request_id: caller.request_id.clone(),
                coaching_themes: t.coaching_themes,
                referenced_swings: t.referenced_swings,
                last_updated: Some(t.last_updated),
            },
            None => ThemesView { request_id: caller.request_id.clone(), coaching_themes: default_themes(), referenced_swings: vec![], last_updated: None },
        };
        Ok(view)
    }

    /// What is left of the golfer's hour and day.
    pub async fn usage_of(&self, caller: &Caller) -> Result<UsageView, AccountError> {
        let now = self.clock.now();
        let used = self.store.usage(&CounterKeys::of(&caller.user, &caller.ip, now)).await?;
        Ok(UsageView { request_id: caller.request_id.clone(), quota: limits::quota(&self.config.limits, used, now) })
    }

    /// Erases the golfer's conversations, profile and stored answers.
    pub async fn erase(&self, caller: &Caller) -> Result<DeletionReport, AccountError> {
        let d = self.store.erase_golfer(&caller.user, self.clock.now().timestamp_millis()).await?;
        Ok(DeletionReport { request_id: caller.request_id.clone(), conversations_deleted: d.conversations, profile_deleted: d.profile, turns_deleted: d.turns })
    }
}
