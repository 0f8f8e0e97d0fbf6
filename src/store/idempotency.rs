//! Idempotency records (`idem_{user}_{clientMessageId}`), after Powertools for AWS Lambda's
//! idempotency utility: a conditional put claims the id as in-progress (it joins the
//! admission transaction), the turn's transaction stores the response, and a failure before
//! anything was stored deletes the claim so the app can retry.

use aws_sdk_dynamodb::types::{Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::{keys, n, s, Item, Store, StoreError};

pub const STATUS: &str = "status";
pub const LOCKED_UNTIL: &str = "locked_until";
pub const RESPONSE: &str = "response";
pub const IN_PROGRESS: &str = "in_progress";
pub const COMPLETED: &str = "completed";

/// A claim on a clientMessageId for one request: `key` held until `locked_until` (epoch s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: String,
    pub now: i64,
    pub locked_until: i64,
}

/// The answer stored under a claim when its turn is written.
#[derive(Debug, Clone, Copy)]
pub struct StoredAnswer<'a> {
    pub key: &'a str,
    pub now: i64,
    pub body: &'a str,
}

/// What an earlier request with the same id left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// Still being answered (within its lock).
    InProgress,
    /// Answered: the stored response body.
    Completed(String),
}

impl Previous {
    pub(crate) fn from_item(item: Option<&Item>) -> Self {
        let status = item.and_then(|i| i.get(STATUS)).and_then(|v| v.as_s().ok());
        let response = item.and_then(|i| i.get(RESPONSE)).and_then(|v| v.as_s().ok());
        match (status.map(String::as_str), response) {
            (Some(COMPLETED), Some(body)) => Self::Completed(body.clone()),
            _ => Self::InProgress,
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
            .item(keys::TTL_ATTRIBUTE, n(c.now + keys::IDEMPOTENCY_TTL_SECS))
            .condition_expression("attribute_not_exists(#pk) OR #exp <= :now OR (#st = :inprog AND #lock <= :now)")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#exp", keys::TTL_ATTRIBUTE)
            .expression_attribute_names("#st", STATUS)
            .expression_attribute_names("#lock", LOCKED_UNTIL)
            .expression_attribute_values(":now", n(c.now))
            .expression_attribute_values(":inprog", s(IN_PROGRESS))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Stores the answer for 24 hours from `now`.
    pub(crate) fn stored_answer_item(&self, a: StoredAnswer<'_>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item(keys::PK, s(a.key))
            .item(STATUS, s(COMPLETED))
            .item(RESPONSE, s(a.body))
            .item(keys::TTL_ATTRIBUTE, n(a.now + keys::IDEMPOTENCY_TTL_SECS))
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Deletes the claim (nothing was stored for this id).
    pub(crate) fn claim_release_item(&self, key: &str) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(keys::PK, s(key))
            .build()
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }
}
