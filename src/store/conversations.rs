//! Conversations and profiles: the coaching context's read wave and the turn's one write.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, ReturnConsumedCapacity as Rcc, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::counters::CounterKeys;
use super::idempotency::StoredAnswer;
use super::transact::Written;
use super::{from_item, keys, n, s, sdk_error, to_item, Item, Store, StoreError};
use crate::backoff::Backoff;
use crate::models::{CoachingThemes, ConversationItem, GolferProfile, SwingAnalysis, SwingId, UserId};

/// Keys a batch read left unprocessed (throttling) are asked again after this.
const UNPROCESSED_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(320)).with_floor(Duration::from_millis(10));

/// Everything the coach knows about the golfer before answering, read in one concurrent wave.
#[derive(Debug, Clone, Default)]
pub struct CoachingContext {
    pub today: Option<ConversationItem>,
    /// Themes of the latest conversation before today, carried into a new day.
    pub previous_themes: Option<CoachingThemes>,
    pub swings: Vec<SwingAnalysis>,
    /// The swing the app has on screen, present only when it is the caller's.
    pub swing_on_screen: Option<SwingAnalysis>,
    pub profile: Option<GolferProfile>,
}

pub const RECENT_SWINGS: i32 = 3;

/// A turn to write: the conversation's new state (guarded by the version it was built on),
/// its settlement on the counters, and the answer stored for its clientMessageId.
#[derive(Debug, Clone, Copy)]
pub struct TurnWrite<'a> {
    pub conversation: &'a ConversationItem,
    /// `None`: the conversation must not exist yet.
    pub expected_version: Option<u64>,
    pub keys: &'a CounterKeys,
    /// Actual cost minus the reserved worst case (negative: a refund).
    pub spend_delta_micro: i64,
    pub tokens: i64,
    /// The model was not reached: the request slots are given back too.
    pub release_slots: bool,
    pub stored_answer: Option<StoredAnswer<'a>>,
}

impl Store {
    pub async fn load_context(
        &self,
        user: &UserId,
        now: DateTime<Utc>,
        swing_on_screen: Option<&SwingId>,
    ) -> Result<CoachingContext, StoreError> {
        let conv_key = keys::conversation(user, now);
        let (keyed, previous_themes, swings) = tokio::try_join!(
            self.keyed_context(user, &conv_key, swing_on_screen),
            self.previous_themes(user, now),
            self.recent_swings(user, RECENT_SWINGS),
        )?;
        let (today, profile, swing_on_screen) = keyed;
        Ok(CoachingContext { today, previous_themes, swings, swing_on_screen, profile })
    }

    /// Today's conversation and the profile (read consistently) and, when the app names one,
    /// the swing on screen, only if it is the caller's: one BatchGetItem across both tables.
    async fn keyed_context(
        &self,
        user: &UserId,
        conv_key: &str,
        swing: Option<&SwingId>,
    ) -> Result<(Option<ConversationItem>, Option<GolferProfile>, Option<SwingAnalysis>), StoreError> {
        let profile_key = keys::profile(user);
        let key = |attr: &str, value: &str| HashMap::from([(attr.to_string(), s(value))]);
        let rejected = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Rejected(e.to_string());
        let mut coaching = KeysAndAttributes::builder()
            .consistent_read(true)
            .keys(key(keys::PK, conv_key))
            .keys(key(keys::PK, &profile_key));
        let mut request = HashMap::new();
        if let Some(id) = swing {
            let swing_key = key(keys::ANALYSES_PK, id.as_str());
            if self.analyses_table == self.table {
                coaching = coaching.keys(swing_key);
            } else {
                request.insert(self.analyses_table.clone(), KeysAndAttributes::builder().keys(swing_key).build().map_err(rejected)?);
            }
        }
        request.insert(self.table.clone(), coaching.build().map_err(rejected)?);

        let mut found: Vec<Item> = vec![];
        for attempt in 0u32.. {
            super::stats::call();
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(request))
                .return_consumed_capacity(Rcc::Total)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem context", e))?;
            super::stats::consumed(out.consumed_capacity());
            found.extend(out.responses.unwrap_or_default().into_values().flatten());
            // Keys DynamoDB did not get to (throttling): ask again for those, with backoff.
            match out.unprocessed_keys.filter(|u| !u.is_empty()) {
                None => break,
                Some(_) if attempt >= 4 => return Err(StoreError::Unavailable("BatchGetItem context: keys left unprocessed".into())),
                Some(left) => {
                    request = left;
                    UNPROCESSED_BACKOFF.wait(attempt).await;
                }
            }
        }

        let (mut today, mut profile, mut swing_on_screen) = (None, None, None);
        for mut item in found {
            let pk = item.get(keys::PK).and_then(|v| v.as_s().ok()).cloned();
            match pk.as_deref() {
                Some(k) if k == conv_key => today = Some(from_item(k, item)?),
                Some(k) if k == profile_key => {
                    item.remove(keys::PK);
                    profile = Some(from_item(&profile_key, item)?);
                }
                _ => swing_on_screen = super::analyses::own_swing(user, item)?,
            }
        }
        Ok((today, profile, swing_on_screen))
    }

    /// A conversation by key, read consistently.
    pub async fn conversation(&self, key: &str) -> Result<Option<ConversationItem>, StoreError> {
        super::stats::call();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(key))
            .consistent_read(true)
            .return_consumed_capacity(Rcc::Total)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem conversation", e))?;
        super::stats::consumed(out.consumed_capacity());
        out.item.map(|i| from_item(key, i)).transpose()
    }

    async fn previous_themes(&self, user: &UserId, now: DateTime<Utc>) -> Result<Option<CoachingThemes>, StoreError> {
        super::stats::call();
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::USER_INDEX)
            .key_condition_expression("#u = :u AND #t < :today")
            .expression_attribute_names("#u", keys::USER_INDEX_PK)
            .expression_attribute_names("#t", keys::USER_INDEX_SK)
            .expression_attribute_values(":u", s(user.as_str()))
            .expression_attribute_values(":today", s(crate::clock::day_start(now)))
            .projection_expression("coaching_themes")
            .scan_index_forward(false)
            .limit(1)
            .return_consumed_capacity(Rcc::Total)
            .send()
            .await
            .map_err(|e| sdk_error("Query user-index", e))?;
        super::stats::consumed(out.consumed_capacity());
        let Some(mut item) = out.items.and_then(|v| v.into_iter().next()) else { return Ok(None) };
        let Some(themes) = item.remove("coaching_themes") else { return Ok(None) };
        serde_dynamo::from_attribute_value(themes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt { key: "coaching_themes".into(), problem: e.to_string() })
    }

    pub async fn profile(&self, user: &UserId) -> Result<Option<GolferProfile>, StoreError> {
        let key = keys::profile(user);
        super::stats::call();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(&key))
            .return_consumed_capacity(Rcc::Total)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem profile", e))?;
        super::stats::consumed(out.consumed_capacity());
        let Some(mut item) = out.item else { return Ok(None) };
        item.remove(keys::PK);
        from_item(&key, item).map(Some)
    }

    pub async fn put_profile(&self, profile: &GolferProfile) -> Result<(), StoreError> {
        let mut item = to_item(profile)?;
        item.insert(keys::PK.into(), s(keys::profile(&profile.user_id)));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem profile", e))?;
        Ok(())
    }

    /// Writes a turn in one transaction, guarded by the conversation's version. `Ok(false)`
    /// when another writer got there first; nothing was written then.
    pub async fn commit_turn(&self, t: TurnWrite<'_>) -> Result<bool, StoreError> {
        let mut items = vec![self.conversation_put(t.conversation, t.expected_version)?];
        items.extend(self.spend_adjustment(t.keys, t.spend_delta_micro, t.tokens)?);
        if t.release_slots {
            items.extend(self.slot_release(t.keys)?);
        }
        if let Some(answer) = t.stored_answer {
            items.push(self.stored_answer_item(answer)?);
        }
        self.write_conversation("TransactWriteItems turn", &items).await
    }

    /// Writes a conversation that must not exist yet (demo data); `Ok(false)` when it does.
    pub async fn create_conversation(&self, conversation: &ConversationItem) -> Result<bool, StoreError> {
        let put = self.conversation_put(conversation, None)?;
        self.write_conversation("TransactWriteItems conversation", &[put]).await
    }

    async fn write_conversation(&self, op: &str, items: &[TransactWriteItem]) -> Result<bool, StoreError> {
        match self.transact(op, items, None).await.map_err(|f| f.error)? {
            Written::Applied => Ok(true),
            Written::ConditionFailed { index: 0, .. } => Ok(false),
            Written::ConditionFailed { index, .. } => Err(StoreError::Rejected(format!("{op}: item {index} failed its condition"))),
        }
    }

    /// The put of a conversation's whole state, guarded by its version.
    fn conversation_put(&self, conversation: &ConversationItem, expected_version: Option<u64>) -> Result<TransactWriteItem, StoreError> {
        let item: Item = to_item(conversation)?;
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        put = match expected_version {
            None => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", keys::PK),
            Some(v) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":v", n(v)),
        };
        let put = put.build().map_err(|e| StoreError::Rejected(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}
