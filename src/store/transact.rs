//! TransactWriteItems, once for the whole store: sending with the request's I/O statistics,
//! retrying cancellations for conflicts, reading cancellation reasons, idempotency tokens,
//! and resolving a transaction whose answer was lost.

use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity as Rcc, TransactWriteItem, Update};

use super::{keys, s, sdk_error, Item, Store, StoreError};
use crate::backoff::Backoff;

/// Conflicting transactions on one item: spread the retries (5 ms up to 320 ms).
const CONFLICT_BACKOFF: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(320)).with_floor(Duration::from_millis(5));
const MAX_RETRIES: u32 = 12;

/// How a transaction ended when it was answered.
#[derive(Debug)]
pub(crate) enum Written {
    Applied,
    /// The item at `index` failed its condition; nothing was written.
    ConditionFailed {
        index: usize,
        item: Option<Item>,
    },
}

/// A transaction that failed; `maybe_applied` when no definite answer came (a timeout, a lost
/// connection, a server error), so it may nevertheless stand.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: StoreError,
    pub maybe_applied: bool,
}

/// A transaction sent without a definite answer: it may have been applied. Re-sent with the
/// same client request token within DynamoDB's ten-minute window it is applied at most once,
/// and the answer tells which.
#[derive(Debug, Clone)]
pub struct Unsure {
    items: Vec<TransactWriteItem>,
    token: String,
}

/// A fresh client request token.
pub(crate) fn token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An Update of the coaching table's item `key` with `expr`, to finish with names and values.
pub(crate) fn update(key: &str, expr: &str) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    Update::builder().key(keys::PK, s(key)).update_expression(expr)
}

pub(crate) fn built(u: aws_sdk_dynamodb::types::builders::UpdateBuilder, table: &str) -> Result<TransactWriteItem, StoreError> {
    let u = u.table_name(table).build()?;
    Ok(TransactWriteItem::builder().update(u).build())
}

impl Store {
    /// One TransactWriteItems call. `None` when the request's deadline came first (the
    /// transaction may still apply).
    async fn send_transaction(&self, op: &'static str, items: Vec<TransactWriteItem>, token: Option<&str>) -> Option<Result<(), SdkError<TransactWriteItemsError>>> {
        let send =
            || self.client.transact_write_items().set_transact_items(Some(items)).set_client_request_token(token.map(str::to_string)).return_consumed_capacity(Rcc::Total).send();
        match self.send_raw(op, send).await {
            Ok(Ok(_)) => Some(Ok(())),
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => None,
        }
    }

    /// Runs a transaction, retrying cancellations for conflicts and throttling. With a `token`
    /// DynamoDB applies it at most once for ten minutes however often it is sent, and every
    /// failure but a failed condition or a refused request is `maybe_applied`: the SDK's own
    /// retries hide their attempts, and an earlier one may have applied before a later one was
    /// throttled. Resolving such a transaction is always safe (see [`Store::resolve`]).
    pub(crate) async fn transact(&self, op: &'static str, items: &[TransactWriteItem], token: Option<&str>) -> Result<Written, Failed> {
        if items.is_empty() {
            return Ok(Written::Applied);
        }
        let mut last = StoreError::Contention;
        for attempt in 0..=MAX_RETRIES {
            if attempt > 0 {
                CONFLICT_BACKOFF.wait(attempt - 1).await;
            }
            let err = match self.send_transaction(op, items.to_vec(), token).await {
                Some(Ok(())) => return Ok(Written::Applied),
                Some(Err(e)) => e,
                None => return Err(Failed { error: super::deadline::missed(op), maybe_applied: true }),
            };
            if let Some(reasons) = cancellation_reasons(&err) {
                if let Some(index) = reasons.iter().position(|(code, _)| code == "ConditionalCheckFailed") {
                    let item = reasons.into_iter().nth(index).and_then(|(_, item)| item);
                    return Ok(Written::ConditionFailed { index, item });
                }
                last = sdk_error(op, err);
                if reasons.iter().any(|(code, _)| code == "TransactionConflict" || code == "ThrottlingError") {
                    continue;
                }
                return Err(Failed { error: last, maybe_applied: token.is_some() });
            }
            let refused = matches!(&err, SdkError::ServiceError(se) if se.raw().status().is_client_error() && !is_throttling(se.err().meta().code()));
            return Err(Failed { error: sdk_error(op, err), maybe_applied: !refused });
        }
        Err(Failed { error: last, maybe_applied: token.is_some() })
    }

    /// Runs a transaction under a fresh token; on no definite answer, hands back an [`Unsure`]
    /// to resolve later instead of guessing.
    pub(crate) async fn transact_resolvable(&self, op: &'static str, items: Vec<TransactWriteItem>) -> Result<Written, (StoreError, Option<Unsure>)> {
        let token = token();
        match self.transact(op, &items, Some(&token)).await {
            Ok(w) => Ok(w),
            Err(Failed { error, maybe_applied: true }) => Err((error, Some(Unsure { items, token }))),
            Err(Failed { error, maybe_applied: false }) => Err((error, None)),
        }
    }

    /// Re-sends an [`Unsure`] transaction with its token: `true` when it is (now, or was
    /// already) applied, `false` when its conditions refuse it, so it never was.
    pub async fn resolve(&self, unsure: &Unsure) -> Result<bool, StoreError> {
        match self.transact("TransactWriteItems resolve", &unsure.items, Some(&unsure.token)).await {
            Ok(Written::Applied) => Ok(true),
            Ok(Written::ConditionFailed { .. }) => Ok(false),
            Err(f) => Err(f.error),
        }
    }
}

/// DynamoDB's capacity refusals: nothing was done, the request may be sent again.
fn is_throttling(code: Option<&str>) -> bool {
    matches!(code, Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded"))
}

/// The per-item cancellation codes of a cancelled transaction, with the old item when the
/// request asked for it.
fn cancellation_reasons(e: &SdkError<TransactWriteItemsError>) -> Option<Vec<(String, Option<Item>)>> {
    let SdkError::ServiceError(se) = e else { return None };
    let TransactWriteItemsError::TransactionCanceledException(tc) = se.err() else { return None };
    Some(tc.cancellation_reasons().iter().map(|r| (r.code().unwrap_or("None").to_string(), r.item().cloned())).collect())
}
