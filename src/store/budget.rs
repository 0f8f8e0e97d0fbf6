//! The global daily budget item (`spendall_{day}`): the sum of the slices processes have
//! leased from it. One conditional update per slice, never one per request.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity as Rcc, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{keys, n, number, s, sdk_error, Store, StoreError};

pub const LEASED: &str = "leased_micro";

/// A slice to lease: of the day's budget `limit_micro` on item `key`, `want` (less when less
/// is left, but never less than `at_least`).
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    pub key: String,
    pub want: i64,
    pub at_least: i64,
    pub limit_micro: i64,
    pub expires_at: i64,
}

/// A slice taken: how much, and how much of the day's budget is left for everyone after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leased {
    pub amount_micro: i64,
    pub left_micro: i64,
}

impl Store {
    /// Leases a slice of the day's budget (nothing, amount 0, when less than `at_least` is
    /// left). Never lets the leases exceed the limit.
    pub async fn lease_budget(&self, r: &LeaseRequest) -> Result<Leased, StoreError> {
        let LeaseRequest { key, at_least, limit_micro, expires_at, .. } = r.clone();
        let mut want = r.want;
        for _ in 0..4 {
            if want < at_least || want <= 0 {
                break;
            }
            let op = "UpdateItem budget lease";
            let send = || {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key(keys::PK, s(&key))
                    .update_expression("ADD #l :want SET #ttl = if_not_exists(#ttl, :ttl)")
                    .condition_expression("attribute_not_exists(#l) OR #l <= :room")
                    .expression_attribute_names("#l", LEASED)
                    .expression_attribute_names("#ttl", keys::TTL_ATTRIBUTE)
                    .expression_attribute_values(":want", n(want))
                    .expression_attribute_values(":room", n(limit_micro - want))
                    .expression_attribute_values(":ttl", n(expires_at))
                    .return_values(ReturnValue::UpdatedNew)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .return_consumed_capacity(Rcc::Total)
                    .send()
            };
            match self.send_raw(op, send).await? {
                Ok(out) => {
                    let leased = number(out.attributes.as_ref(), LEASED);
                    return Ok(Leased { amount_micro: want, left_micro: limit_micro - leased });
                }
                Err(e) => {
                    let old = match e.as_service_error() {
                        Some(UpdateItemError::ConditionalCheckFailedException(c)) => number(c.item.as_ref(), LEASED),
                        _ => return Err(sdk_error(op, e)),
                    };
                    // Less is left than asked for: take what is left, if it still serves one request.
                    want = limit_micro - old;
                }
            }
        }
        Ok(Leased { amount_micro: 0, left_micro: want.max(0) })
    }
}
