//! Claims on clientMessageIds, after Powertools for AWS Lambda's idempotency utility: a
//! conditional put claims `msg_{user}_{clientMessageId}` as in-progress (it joins the
//! admission transaction); the turn's transaction replaces the claim with the turn, which is
//! the stored answer; a failure before anything was stored deletes the claim so the app can
//! retry.

use aws_sdk_dynamodb::types::{Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::{keys, n, s, Item, Store, StoreError};
use crate::models::TurnItem;

pub const STATUS: &str = "status";
pub const LOCKED_UNTIL: &str = "locked_until";
pub const REQUEST_HASH: &str = "request_hash";
pub const IN_PROGRESS: &str = "in_progress";
pub const COMPLETED: &str = "completed";

/// A claim on a clientMessageId for one request: `key` held until `locked_until` (epoch s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub now: i64,
    pub locked_until: i64,
    /// The request the id was claimed for (a retry must be the same request).
    pub request_hash: String,
}

/// What an earlier request with the same id left behind.
#[derive(Debug, Clone, PartialEq)]
pub enum Previous {
    /// Still being answered (within its lock), for the request with this hash.
    InProgress(Option<String>),
    /// Answered: the stored turn.
    Completed(Box<TurnItem>),
}

impl Previous {
    pub(crate) fn from_item(item: Option<Item>) -> Self {
        let Some(item) = item else { return Self::InProgress(None) };
        if item.get(STATUS).and_then(|v| v.as_s().ok()).map(String::as_str) != Some(COMPLETED) {
            return Self::InProgress(item.get(REQUEST_HASH).and_then(|v| v.as_s().ok()).cloned());
        }
        // A completed turn that does not read as one is answered as in progress (409), never replayed wrong.
        match super::turn(item) {
            Ok(turn) => Self::Completed(Box::new(turn)),
            Err(e) => {
                tracing::error!(error = %e, "a stored turn does not match its schema");
                Self::InProgress(None)
            }
        }
    }
}

impl Store {
    /// Claims the key unless a live record exists: absent, expired, or an in-progress lock that ran out.
    pub(crate) fn claim_item(&self, c: &Claim) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(&c.key))
            .item(STATUS, s(IN_PROGRESS))
            .item(LOCKED_UNTIL, n(c.locked_until))
            .item(REQUEST_HASH, s(&c.request_hash))
            .item(keys::TTL_ATTRIBUTE, n(c.now + keys::CLAIM_TTL_SECS))
            .condition_expression("attribute_not_exists(#pk) OR (#st = :inprog AND #lock <= :now)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#st", STATUS)
            .expression_attribute_names("#lock", LOCKED_UNTIL)
            .expression_attribute_values(":now", n(c.now))
            .expression_attribute_values(":inprog", s(IN_PROGRESS))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Deletes the claim (nothing was stored for this id).
    pub(crate) fn claim_release_item(&self, key: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder().table_name(&self.table).key(keys::PK, s(key)).build()?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}
