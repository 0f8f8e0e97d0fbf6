//! The app's read paths that span a golfer's turns, and the golfer's deletion.

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, Put, ReturnConsumedCapacity as Rcc, ReturnValue, TransactWriteItem, WriteRequest};

use super::counters::CounterKeys;
use super::transact::{built, update, Written};
use crate::models::FeedbackReceipt;

use super::{keys, s, Store, StoreError};
use crate::backoff::{Backoff, Tried};
use crate::models::{TurnItem, UserId};

/// Deletions a batch write left unprocessed (throttling) are sent again after this.
const UNPROCESSED_BACKOFF: Backoff = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(800)).with_floor(std::time::Duration::from_millis(25));

pub const ERASED_AT: &str = "erased_at_ms";
/// How long after its deletion a golfer's turns are looked for again (in the background, not
/// in the request): the list comes from user-index, which may not yet show a turn written a
/// moment before. Retried until it succeeds, for at most `SECOND_SWEEP_WITHIN`.
const SECOND_SWEEP: Backoff = Backoff::new(std::time::Duration::from_millis(1500), std::time::Duration::from_secs(10)).with_floor(std::time::Duration::from_millis(1500));
const SECOND_SWEEP_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// How a rating's write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rated {
    Stored,
    /// The golfer's ratings of this hour reached the cap: nothing was written.
    OverHourlyCap,
}

/// The attribute counting a golfer's ratings of `at`'s hour on their quota item.
fn ratings_attr(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("ratings_{}", crate::clock::hour_of_day(at))
}

/// What a deletion removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Days with at least one turn.
    pub conversations: u64,
    pub profile: bool,
    /// Turns (each is also the stored answer to its clientMessageId).
    pub turns: u64,
    /// Facts the coach remembered.
    pub facts: u64,
}

impl Store {
    /// The answered turn under `key` (a claim still being answered is none).
    pub async fn completed_turn(&self, key: &str) -> Result<Option<TurnItem>, StoreError> {
        let get = || self.client.get_item().table_name(&self.table).key(keys::PK, s(key)).consistent_read(true).return_consumed_capacity(Rcc::Total).send();
        let Some(item) = self.send("GetItem turn", get).await?.item else { return Ok(None) };
        if item.get(super::idempotency::STATUS).and_then(|v| v.as_s().ok()).map(String::as_str) != Some(super::idempotency::COMPLETED) {
            return Ok(None);
        }
        super::turn(item).map(Some)
    }

    /// Writes a rating under `key` (replacing an earlier one) and counts it on the golfer's
    /// quota item of `at`'s hour, in one transaction, unless the hour's ratings reached the cap.
    pub async fn rate(&self, key: &str, receipt: &FeedbackReceipt, quota: CounterKeys, at: chrono::DateTime<chrono::Utc>) -> Result<Rated, StoreError> {
        let mut item = super::to_item(receipt)?;
        item.insert(keys::PK.into(), s(key));
        item.insert("rated_at".into(), s(crate::clock::timestamp(at)));
        let put = Put::builder().table_name(&self.table).set_item(Some(item)).build()?;
        let count = update(&quota.user_quota, "ADD #r :one SET #ttl = if_not_exists(#ttl, :ttl)")
            .condition_expression("attribute_not_exists(#r) OR #r < :cap")
            .expression_attribute_names("#r", ratings_attr(at))
            .expression_attribute_names("#ttl", keys::TTL_ATTRIBUTE)
            .expression_attribute_values(":one", super::n(1))
            .expression_attribute_values(":cap", super::n(crate::limits::RATINGS_PER_HOUR))
            .expression_attribute_values(":ttl", super::n(at.timestamp() + keys::DAY_TTL_SECS));
        let items = [TransactWriteItem::builder().put(put).build(), built(count, &self.table)?];
        match self.transact("TransactWriteItems rating", &items, Some(&super::transact::token())).await.map_err(|f| f.error)? {
            Written::Applied => Ok(Rated::Stored),
            Written::ConditionFailed { .. } => Ok(Rated::OverHourlyCap),
        }
    }

    /// The golfer's newest turn: the current themes (one Query on user-index).
    pub async fn latest_turn(&self, user: &UserId) -> Result<Option<TurnItem>, StoreError> {
        Ok(self.recent_turns(user, 1).await?.into_iter().next())
    }

    /// Every turn key of the golfer asked at or before `until` (a timestamp), with its
    /// conversation (pages of user-index).
    async fn turn_keys(&self, user: &UserId, until: &str) -> Result<Vec<(String, String)>, StoreError> {
        let items = self
            .all_pages("Query user-index all", |start| {
                self.user_index(user)
                    .key_condition_expression("#u = :u AND #t <= :until")
                    .expression_attribute_names("#t", keys::USER_INDEX_SK)
                    .expression_attribute_values(":until", s(until))
                    .expression_attribute_names("#pk", keys::PK)
                    .expression_attribute_names("#c", "conversation")
                    .projection_expression("#pk, #c")
                    .set_exclusive_start_key(start)
            })
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let AttributeValue::S(key) = item.get(keys::PK)? else { return None };
                let conversation = item.get("conversation").and_then(|c| c.as_s().ok()).cloned().unwrap_or_default();
                Some((key.clone(), conversation))
            })
            .collect())
    }

    /// Deletes the golfer's turns (their conversations and stored answers), profile and memory, for
    /// good: first an erase marker, so no message in flight writes a turn back (each turn's
    /// transaction checks it); then every turn asked before the marker that user-index
    /// lists (what the report counts); then, in the background after user-index has caught
    /// up, whatever it shows again. A turn asked
    /// after the marker belongs to the golfer's new history and is never swept. Idempotent:
    /// running it again deletes what is left. Counters expire on their own (they hold counts,
    /// not content); a message in flight deletes its own claim when its turn is refused.
    pub async fn erase_golfer(&self, user: &UserId, now_ms: i64) -> Result<Deleted, StoreError> {
        let marker = || {
            self.client
                .put_item()
                .table_name(&self.table)
                .item(keys::PK, s(keys::erased(user)))
                .item(ERASED_AT, super::n(now_ms))
                .item(keys::TTL_ATTRIBUTE, super::n(now_ms / 1000 + keys::CLAIM_TTL_SECS))
                .send()
        };
        self.send("PutItem erase marker", marker).await?;

        let until = crate::clock::timestamp(chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default());
        let profile_key = keys::profile(user);
        let profile =
            self.send("DeleteItem profile", || self.client.delete_item().table_name(&self.table).key(keys::PK, s(&profile_key)).return_values(ReturnValue::AllOld).send());
        let (first, profile, facts) = tokio::join!(self.delete_turns(user, &until), profile, self.delete_memory(user));
        let deleted = first?;
        let (profile, facts) = (profile?, facts?);
        let (store, user) = (self.clone(), user.clone());
        SECOND_SWEEP.in_background("second erase sweep", SECOND_SWEEP_WITHIN, move || {
            let (store, user, until) = (store.clone(), user.clone(), until.clone());
            async move {
                match store.delete_turns(&user, &until).await {
                    Ok(_) => Tried::Done,
                    Err(_) => Tried::Again,
                }
            }
        });
        let conversations: std::collections::HashSet<&str> = deleted.iter().map(|(_, c)| c.as_str()).collect();
        Ok(Deleted { conversations: conversations.len() as u64, profile: profile.attributes.is_some_and(|a| !a.is_empty()), turns: deleted.len() as u64, facts })
    }

    /// Deletes every turn asked at or before `until` that user-index lists now; returns them
    /// (key, conversation).
    async fn delete_turns(&self, user: &UserId, until: &str) -> Result<Vec<(String, String)>, StoreError> {
        let turns = self.turn_keys(user, until).await?;
        // Each turn and its rating, if the golfer rated it.
        let ratings: Vec<String> = turns.iter().filter_map(|(k, _)| keys::client_message_id(user, k)).map(|id| keys::rating(user, id)).collect();
        let doomed: Vec<&str> = turns.iter().map(|(k, _)| k.as_str()).chain(ratings.iter().map(String::as_str)).collect();
        for chunk in doomed.chunks(25) {
            self.delete_batch(chunk.iter().copied()).await?;
        }
        Ok(turns)
    }

    /// Deletes up to 25 items, sending again what DynamoDB left unprocessed.
    async fn delete_batch<'a>(&self, keys_: impl Iterator<Item = &'a str>) -> Result<(), StoreError> {
        let op = "BatchWriteItem delete";
        let mut requests: Vec<WriteRequest> =
            keys_.filter_map(|k| DeleteRequest::builder().key(keys::PK, s(k)).build().ok()).map(|d| WriteRequest::builder().delete_request(d).build()).collect();
        for attempt in 0..8 {
            let send = || self.client.batch_write_item().request_items(&self.table, requests.clone()).return_consumed_capacity(Rcc::Total).send();
            let out = self.send(op, send).await?;
            requests = out.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            UNPROCESSED_BACKOFF.wait(attempt).await;
        }
        Err(StoreError::Unavailable(format!("{op}: items kept being left unprocessed")))
    }
}
