//! The app's read paths and the golfer's deletion, each in as few DynamoDB calls as the
//! table design allows.

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnConsumedCapacity as Rcc, ReturnValue, WriteRequest};

use super::{from_item, keys, s, sdk_error, Item, Store, StoreError};
use crate::backoff::Backoff;

/// Deletions a batch write left unprocessed (throttling) are sent again after this.
const UNPROCESSED_BACKOFF: Backoff = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(800)).with_floor(std::time::Duration::from_millis(25));
use crate::models::{ConversationItem, UserId};

/// What a deletion removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub conversations: u64,
    pub profile: bool,
    pub idempotency_records: u64,
}

impl Store {
    /// The golfer's most recent conversation (one Query on user-index).
    pub async fn latest_conversation(&self, user: &UserId) -> Result<Option<ConversationItem>, StoreError> {
        super::stats::call();
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::USER_INDEX)
            .key_condition_expression("#u = :u")
            .expression_attribute_names("#u", keys::USER_INDEX_PK)
            .expression_attribute_values(":u", s(user.as_str()))
            .scan_index_forward(false)
            .limit(1)
            .return_consumed_capacity(Rcc::Total)
            .send()
            .await
            .map_err(|e| sdk_error("Query user-index latest", e))?;
        super::stats::consumed(out.consumed_capacity());
        out.items
            .and_then(|v| v.into_iter().next())
            .map(|item| from_item("latest conversation", item))
            .transpose()
    }

    /// Every conversation key of the golfer with its clientMessageIds (pages of user-index).
    async fn conversation_keys(&self, user: &UserId) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut out = vec![];
        let mut start: Option<Item> = None;
        loop {
            super::stats::call();
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(keys::USER_INDEX)
                .key_condition_expression("#u = :u")
                .expression_attribute_names("#u", keys::USER_INDEX_PK)
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#ids", "client_message_ids")
                .expression_attribute_values(":u", s(user.as_str()))
                .projection_expression("#pk, #ids")
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(Rcc::Total)
                .send()
                .await
                .map_err(|e| sdk_error("Query user-index all", e))?;
            super::stats::consumed(page.consumed_capacity());
            for item in page.items.unwrap_or_default() {
                let Some(AttributeValue::S(key)) = item.get(keys::PK) else { continue };
                let ids = match item.get("client_message_ids") {
                    Some(AttributeValue::L(l)) => l.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
                    _ => vec![],
                };
                out.push((key.clone(), ids));
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// Deletes the golfer's conversations, profile and idempotency records. Counters are left
    /// to expire (they hold counts, not content).
    pub async fn delete_golfer(&self, user: &UserId) -> Result<Deleted, StoreError> {
        let profile_key = keys::profile(user);
        let profile = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(keys::PK, s(&profile_key))
            .return_values(ReturnValue::AllOld)
            .send();
        let (conversations, profile) = tokio::join!(self.conversation_keys(user), profile);
        let conversations = conversations?;
        let profile = profile.map_err(|e| sdk_error("DeleteItem profile", e))?;

        let mut doomed: Vec<String> = conversations.iter().map(|(k, _)| k.clone()).collect();
        let mut idempotency_records = 0;
        for (_, ids) in &conversations {
            for id in ids {
                doomed.push(keys::idempotency_raw(user, id));
                idempotency_records += 1;
            }
        }
        for chunk in doomed.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .filter_map(|k| DeleteRequest::builder().key(keys::PK, s(k)).build().ok())
                .map(|d| WriteRequest::builder().delete_request(d).build())
                .collect();
            for attempt in 0..8 {
                super::stats::call();
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests.clone())
                    .return_consumed_capacity(Rcc::Total)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchWriteItem delete", e))?;
                super::stats::consumed_write(out.consumed_capacity());
                requests = out.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                UNPROCESSED_BACKOFF.wait(attempt).await;
            }
            if !requests.is_empty() {
                return Err(StoreError::Unavailable("BatchWriteItem kept leaving items unprocessed".into()));
            }
        }
        Ok(Deleted {
            conversations: conversations.len() as u64,
            profile: profile.attributes.is_some_and(|a| !a.is_empty()),
            idempotency_records,
        })
    }
}
