//! The app's read paths that span a golfer's turns, and the golfer's deletion.

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnConsumedCapacity as Rcc, ReturnValue, WriteRequest};

use super::{keys, s, Store, StoreError};
use crate::backoff::Backoff;
use crate::models::{TurnItem, UserId};

/// Deletions a batch write left unprocessed (throttling) are sent again after this.
const UNPROCESSED_BACKOFF: Backoff = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(800)).with_floor(std::time::Duration::from_millis(25));

pub const ERASED_AT: &str = "erased_at_ms";
/// How long after its deletion a golfer's turns are looked for again: the list comes from
/// user-index, which may not yet show a turn written a moment before.
const SECOND_SWEEP_AFTER: std::time::Duration = std::time::Duration::from_millis(1500);

/// What a deletion removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Days with at least one turn.
    pub conversations: u64,
    pub profile: bool,
    /// Turns (each is also the stored answer to its clientMessageId).
    pub turns: u64,
}

impl Store {
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

    /// Deletes the golfer's turns (their conversations and stored answers) and profile, for
    /// good: first an erase marker, so no message in flight writes a turn back (each turn's
    /// transaction checks it); then every turn asked before the marker that user-index
    /// lists; then, after user-index has caught up, whatever it shows again. A turn asked
    /// after the marker belongs to the golfer's new history and is never swept. Idempotent:
    /// running it again deletes what is left. Counters expire on their own (they hold counts,
    /// not content); a message in flight deletes its own claim when its turn is refused.
    pub async fn erase_golfer(&self, user: &UserId, now_ms: i64) -> Result<Deleted, StoreError> {
        let marker = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(keys::PK, s(keys::erased(user)))
            .item(ERASED_AT, super::n(now_ms))
            .item(keys::TTL_ATTRIBUTE, super::n(now_ms / 1000 + keys::CLAIM_TTL_SECS))
            .send();
        self.send("PutItem erase marker", marker).await?;

        let until = crate::clock::timestamp(chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default());
        let profile_key = keys::profile(user);
        let profile = self.send("DeleteItem profile", self.client.delete_item().table_name(&self.table).key(keys::PK, s(&profile_key)).return_values(ReturnValue::AllOld).send());
        let (first, profile) = tokio::join!(self.delete_turns(user, &until), profile);
        let mut deleted = first?;
        let profile = profile?;
        tokio::time::sleep(SECOND_SWEEP_AFTER).await;
        let second = self.delete_turns(user, &until).await?;
        deleted.extend(second);
        let conversations: std::collections::HashSet<&str> = deleted.iter().map(|(_, c)| c.as_str()).collect();
        Ok(Deleted {
            conversations: conversations.len() as u64,
            profile: profile.attributes.is_some_and(|a| !a.is_empty()),
            turns: deleted.len() as u64,
        })
    }

    /// Deletes every turn asked at or before `until` that user-index lists now; returns them
    /// (key, conversation).
    async fn delete_turns(&self, user: &UserId, until: &str) -> Result<Vec<(String, String)>, StoreError> {
        let turns = self.turn_keys(user, until).await?;
        for chunk in turns.chunks(25) {
            self.delete_batch(chunk.iter().map(|(k, _)| k.as_str())).await?;
        }
        Ok(turns)
    }

    /// Deletes up to 25 items, sending again what DynamoDB left unprocessed.
    async fn delete_batch<'a>(&self, keys_: impl Iterator<Item = &'a str>) -> Result<(), StoreError> {
        let op = "BatchWriteItem delete";
        let mut requests: Vec<WriteRequest> = keys_
            .filter_map(|k| DeleteRequest::builder().key(keys::PK, s(k)).build().ok())
            .map(|d| WriteRequest::builder().delete_request(d).build())
            .collect();
        for attempt in 0..8 {
            let send = self.client.batch_write_item().request_items(&self.table, requests.clone()).return_consumed_capacity(Rcc::Total).send();
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
