//! Quota and spend counters: one transaction of conditional updates admits a request or
//! refuses it without touching any counter, so limits hold exactly under any concurrency.

use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    KeysAndAttributes, ReturnConsumedCapacity as Rcc, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use rand::Rng;


use super::{keys, n, number, s, sdk_error, Item, Store, StoreError};

pub const COUNT: &str = "request_count";
pub const SPEND: &str = "spend_micro";
pub const TOKENS: &str = "tokens";

/// Which counter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    UserHour,
    IpHour,
    UserDay,
    GlobalDay,
}

/// The four counter items one request touches; fixed at reservation so release and
/// settlement hit the same hour and day even across a boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterKeys {
    pub user_hour: String,
    pub ip_hour: String,
    pub user_day: String,
    pub global_day: String,
}

#[derive(Debug, Clone)]
pub struct Admission {
    pub keys: CounterKeys,
    pub hour_limit: i64,
    pub ip_hour_limit: i64,
    pub user_day_limit_micro: i64,
    pub global_day_limit_micro: i64,
    pub cost_micro: i64,
    pub hour_expires_at: i64,
    pub day_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AdmitOutcome {
    Admitted,
    /// The idempotency claim failed: an earlier request holds this id (its record as it was).
    Duplicate(Option<Item>),
    /// `current` is the refusing counter's value when it refused.
    Refused { counter: Counter, current: i64 },
}

/// A transaction sent without a definite answer (a timeout, a lost connection, a server
/// error): it may have been applied. Re-sent with the same client request token within
/// DynamoDB's ten-minute window it is applied at most once, and the answer tells which.
#[derive(Debug, Clone)]
pub struct Unsure {
    items: Vec<TransactWriteItem>,
    token: String,
}

/// An admission that failed; `unsure` is set when it may nevertheless have been applied.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AdmitError {
    pub error: StoreError,
    pub unsure: Option<Unsure>,
}

/// What a golfer has used, read after the request's own write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    pub user_hour_count: i64,
    pub user_day_spend_micro: i64,
}

const MAX_CONFLICT_RETRIES: u32 = 12;

fn update(key: &str, expr: &str) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    Update::builder().key(keys::PK, s(key)).update_expression(expr)
}

fn built(u: aws_sdk_dynamodb::types::builders::UpdateBuilder, table: &str) -> Result<TransactWriteItem, StoreError> {
    let u = u.table_name(table).build().map_err(|e| StoreError::Rejected(e.to_string()))?;
    Ok(TransactWriteItem::builder().update(u).build())
}

impl Store {
    /// Admits a request against all four counters at once, or refuses it touching none.
    /// `claim` (an idempotency claim) joins the same transaction and is checked first.
    /// Every send carries one client request token, so when no answer arrives the
    /// transaction can be re-sent to learn whether it was applied (see [`Unsure`]).
    pub async fn admit(&self, a: &Admission, claim: Option<TransactWriteItem>) -> Result<AdmitOutcome, AdmitError> {
        let spend_room = |limit: i64| limit - a.cost_micro;
        if spend_room(a.user_day_limit_micro) < 0 {
            return Ok(AdmitOutcome::Refused { counter: Counter::UserDay, current: 0 });
        }
        if spend_room(a.global_day_limit_micro) < 0 {
            return Ok(AdmitOutcome::Refused { counter: Counter::GlobalDay, current: 0 });
        }
        let count = |key: &str, limit: i64| {
            built(
                update(key, "ADD #c :one SET #ttl = if_not_exists(#ttl, :ttl)")
                    .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                    .expression_attribute_names("#c", COUNT)
                    .expression_attribute_names("#ttl", keys::TTL_ATTRIBUTE)
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":limit", n(limit))
                    .expression_attribute_values(":ttl", n(a.hour_expires_at))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
                &self.table,
            )
        };
        let spend = |key: &str, limit: i64| {
            built(
                update(key, "ADD #s :cost SET #ttl = if_not_exists(#ttl, :ttl)")
                    .condition_expression("attribute_not_exists(#s) OR #s <= :room")
                    .expression_attribute_names("#s", SPEND)
                    .expression_attribute_names("#ttl", keys::TTL_ATTRIBUTE)
                    .expression_attribute_values(":cost", n(a.cost_micro))
                    .expression_attribute_values(":room", n(spend_room(limit)))
                    .expression_attribute_values(":ttl", n(a.day_expires_at))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
                &self.table,
            )
        };
        let claimed = usize::from(claim.is_some());
        let mut items: Vec<TransactWriteItem> = claim.into_iter().collect();
        items.extend(
            [
                count(&a.keys.user_hour, a.hour_limit),
                count(&a.keys.ip_hour, a.ip_hour_limit),
                spend(&a.keys.user_day, a.user_day_limit_micro),
                spend(&a.keys.global_day, a.global_day_limit_micro),
            ]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| AdmitError { error, unsure: None })?,
        );
        let order = [Counter::UserHour, Counter::IpHour, Counter::UserDay, Counter::GlobalDay];
        let attrs = [COUNT, COUNT, SPEND, SPEND];
        let token = uuid::Uuid::new_v4().to_string();
        let unsure = |error, items| AdmitError { error, unsure: Some(Unsure { items, token: token.clone() }) };

        for attempt in 0..=MAX_CONFLICT_RETRIES {
            let err = match self.send_transaction(items.clone(), Some(&token)).await {
                Ok(()) => return Ok(AdmitOutcome::Admitted),
                Err(e) => e,
            };
            let Some(reasons) = cancellation_reasons(&err) else {
                return Err(match sdk_error("TransactWriteItems admit", err) {
                    error @ StoreError::Unavailable(_) => unsure(error, items),
                    error => AdmitError { error, unsure: None },
                });
            };
            if let Some(i) = reasons.iter().position(|(code, _)| code == "ConditionalCheckFailed") {
                if i < claimed {
                    return Ok(AdmitOutcome::Duplicate(reasons[i].1.clone()));
                }
                let j = i - claimed;
                let current = number(reasons[i].1.as_ref(), attrs[j]);
                return Ok(AdmitOutcome::Refused { counter: order[j], current });
            }
            if !reasons.iter().any(|(code, _)| code == "TransactionConflict") {
                // Cancelled for another reason (e.g. throttling): nothing was applied.
                return Err(AdmitError { error: sdk_error("TransactWriteItems admit", err), unsure: None });
            }
            conflict_backoff(attempt).await;
        }
        Err(AdmitError { error: StoreError::Contention, unsure: None })
    }

    /// Re-sends an [`Unsure`] transaction with its token: `true` when it is (now, or was
    /// already) applied, `false` when its conditions refuse it, so it never was.
    pub async fn resolve(&self, unsure: &Unsure) -> Result<bool, StoreError> {
        let outcome = self.transact_idempotent("TransactWriteItems resolve", unsure.items.clone(), Some(&unsure.token)).await?;
        Ok(matches!(outcome, TransactOutcome::Done))
    }

    /// One TransactWriteItems call, counted for the request's I/O statistics.
    async fn send_transaction(&self, items: Vec<TransactWriteItem>, token: Option<&str>) -> Result<(), SdkError<TransactWriteItemsError>> {
        super::stats::call();
        let out = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .set_client_request_token(token.map(str::to_string))
            .return_consumed_capacity(Rcc::Total)
            .send()
            .await?;
        super::stats::consumed_write(out.consumed_capacity());
        Ok(())
    }

    /// Read after the request's own write: what the golfer has used this hour and day.
    pub async fn usage(&self, k: &CounterKeys) -> Result<UsageSnapshot, StoreError> {
        let mut keys_and_attrs = KeysAndAttributes::builder().consistent_read(true);
        for key in [&k.user_hour, &k.user_day] {
            keys_and_attrs = keys_and_attrs.keys(std::collections::HashMap::from([(keys::PK.to_string(), s(key.as_str()))]));
        }
        let req = keys_and_attrs.build().map_err(|e| StoreError::Rejected(e.to_string()))?;
        super::stats::call();
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, req)
            .return_consumed_capacity(Rcc::Total)
            .send()
            .await
            .map_err(|e| sdk_error("BatchGetItem usage", e))?;
        super::stats::consumed(out.consumed_capacity());
        let items = out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default();
        let find = |key: &str| items.iter().find(|i| i.get(keys::PK) == Some(&s(key)));
        Ok(UsageSnapshot {
            user_hour_count: number(find(&k.user_hour), COUNT),
            user_day_spend_micro: number(find(&k.user_day), SPEND),
        })
    }

    /// Transaction items that change the day's spend by `delta_micro` (negative refunds) and
    /// add the tokens actually used.
    pub fn spend_adjustment(&self, k: &CounterKeys, delta_micro: i64, tokens: i64) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut out = vec![];
        if delta_micro != 0 || tokens != 0 {
            out.push(built(
                update(&k.user_day, "ADD #s :d, #t :tok")
                    .expression_attribute_names("#s", SPEND)
                    .expression_attribute_names("#t", TOKENS)
                    .expression_attribute_values(":d", n(delta_micro))
                    .expression_attribute_values(":tok", n(tokens)),
                &self.table,
            )?);
        }
        if delta_micro != 0 {
            out.push(built(
                update(&k.global_day, "ADD #s :d")
                    .expression_attribute_names("#s", SPEND)
                    .expression_attribute_values(":d", n(delta_micro)),
                &self.table,
            )?);
        }
        Ok(out)
    }

    /// Transaction items that give back the request slots (user-hour and ip-hour).
    pub fn slot_release(&self, k: &CounterKeys) -> Result<Vec<TransactWriteItem>, StoreError> {
        [&k.user_hour, &k.ip_hour]
            .into_iter()
            .map(|key| {
                built(
                    update(key, "ADD #c :minus")
                        .expression_attribute_names("#c", COUNT)
                        .expression_attribute_values(":minus", n(-1)),
                    &self.table,
                )
            })
            .collect()
    }

    /// Runs transaction items, retrying only on transaction conflicts.
    pub async fn transact(&self, op: &str, items: Vec<TransactWriteItem>) -> Result<TransactOutcome, StoreError> {
        self.transact_idempotent(op, items, None).await
    }

    /// As `transact`; with a `token`, DynamoDB applies the transaction at most once for ten
    /// minutes however often it is sent (for retries whose first answer was lost).
    pub async fn transact_idempotent(&self, op: &str, items: Vec<TransactWriteItem>, token: Option<&str>) -> Result<TransactOutcome, StoreError> {
        if items.is_empty() {
            return Ok(TransactOutcome::Done);
        }
        for attempt in 0..=MAX_CONFLICT_RETRIES {
            let err = match self.send_transaction(items.clone(), token).await {
                Ok(()) => return Ok(TransactOutcome::Done),
                Err(e) => e,
            };
            let Some(reasons) = cancellation_reasons(&err) else {
                return Err(sdk_error(op, err));
            };
            if let Some(i) = reasons.iter().position(|(code, _)| code == "ConditionalCheckFailed") {
                return Ok(TransactOutcome::ConditionFailed { index: i, item: reasons[i].1.clone() });
            }
            if !reasons.iter().any(|(code, _)| code == "TransactionConflict") {
                return Err(sdk_error(op, err));
            }
            conflict_backoff(attempt).await;
        }
        Err(StoreError::Contention)
    }
}

#[derive(Debug)]
pub enum TransactOutcome {
    Done,
    /// The item at `index` failed its condition; nothing was written.
    ConditionFailed { index: usize, item: Option<Item> },
}

/// The per-item cancellation codes of a cancelled transaction, with the old item when the
/// request asked for it.
fn cancellation_reasons(e: &SdkError<TransactWriteItemsError>) -> Option<Vec<(String, Option<Item>)>> {
    let SdkError::ServiceError(se) = e else { return None };
    let TransactWriteItemsError::TransactionCanceledException(tc) = se.err() else { return None };
    Some(
        tc.cancellation_reasons()
            .iter()
            .map(|r| (r.code().unwrap_or("None").to_string(), r.item().cloned()))
            .collect(),
    )
}

/// Full jitter between 5 ms and a ceiling doubling from 10 ms to 320 ms.
async fn conflict_backoff(attempt: u32) {
    let ceiling = 10u64 << attempt.min(5);
    let ms = rand::rng().random_range(5..=ceiling.max(5));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
