//! Quota and spend counters: one transaction of conditional updates admits a request or
//! refuses it without touching any counter, so limits hold exactly under any concurrency;
//! settlement and give-back adjust the same items. The golfer's hour counts and day spend
//! share one item (`quota_{user}_{day}`), so a request writes two counter items, not four;
//! the global budget is leased in slices (`store/budget.rs`), never written per request.

use aws_sdk_dynamodb::types::{ReturnConsumedCapacity as Rcc, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::idempotency::{Claim, Previous};
use super::transact::{built, update, Unsure, Written};
use super::{keys, n, number, s, Store, StoreError};
use crate::limits::{Counter, IpHash, QuotaCheck, UsageSnapshot};
use crate::models::UserId;

pub const COUNT: &str = "request_count";
pub const SPEND: &str = "spend_micro";
pub const TOKENS: &str = "tokens";

/// The counter items one request touches; fixed at reservation so release and settlement
/// hit the same hour and day even across a boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterKeys {
    /// The golfer's quota item of the day (`quota_{user}_{day}`).
    pub user_quota: String,
    /// The attribute of the hour's request count on it (`hour_HH`).
    pub hour_attr: String,
    pub ip_hour: String,
}

/// The counters' answer to an admission.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmitDecision {
    Admitted,
    /// The claim failed: an earlier request holds this id.
    Duplicate(Previous),
    /// `current` is the refusing counter's value when it refused.
    Refused {
        counter: Counter,
        current: i64,
    },
}

/// The attribute of the golfer's quota item naming the admission that last counted on it.
const ADMITTED_BY: &str = "admitted_by";

/// The golfer's quota item as a read beside the admission found it (the context's
/// BatchGetItem, strongly consistent): before or after this request's own admission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaRead {
    pub used: UsageSnapshot,
    /// The mark of the admission that last counted on the item.
    pub admitted_by: Option<String>,
}

impl QuotaRead {
    /// The item (none: nothing used yet) at the hour `k` names.
    pub fn of(item: Option<&super::Item>, k: &CounterKeys) -> Self {
        let admitted_by = item.and_then(|i| i.get(ADMITTED_BY)).and_then(|v| v.as_s().ok()).cloned();
        Self { used: UsageSnapshot { user_hour_count: number(item, &k.hour_attr), user_day_spend_micro: number(item, SPEND) }, admitted_by }
    }

    /// What the golfer has used with the admission marked `mark` counted in: as read when the
    /// read saw it, else the read plus its request and its worst case. (When another admission
    /// of the golfer's landed after this one and before the read, this one counts twice: the
    /// quota shown is then one request short, never more generous. The limits themselves are
    /// the admission's conditions, exact whatever is shown.)
    pub fn with_admission(&self, mark: &str, reserved_micro: i64) -> UsageSnapshot {
        if self.admitted_by.as_deref() == Some(mark) {
            return self.used;
        }
        UsageSnapshot { user_hour_count: self.used.user_hour_count + 1, user_day_spend_micro: self.used.user_day_spend_micro + reserved_micro }
    }
}

/// An admission that failed; `unsure` is set when it may nevertheless have been applied.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AdmitError {
    pub error: StoreError,
    pub unsure: Option<Unsure>,
}

/// A reservation to give back whole: its worst-case spend, its request slots and its claim.
/// Applying it again is harmless: it carries one client request token for all its sends.
#[derive(Debug, Clone)]
pub struct GiveBack {
    pub keys: CounterKeys,
    pub reserved_micro: i64,
    pub claim_key: Option<String>,
    token: String,
}

impl GiveBack {
    pub fn new(keys: CounterKeys, reserved_micro: i64, claim_key: Option<String>) -> Self {
        Self { keys, reserved_micro, claim_key, token: super::transact::token() }
    }
}

/// The attribute holding the request count of `at`'s hour on a golfer quota item.
pub fn hour_attr(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("hour_{}", crate::clock::hour_of_day(at))
}

impl CounterKeys {
    /// The items counting `user`'s and `ip`'s messages at `at`.
    pub fn of(user: &UserId, ip: &IpHash, at: chrono::DateTime<chrono::Utc>) -> Self {
        Self { user_quota: keys::user_quota(user, at), hour_attr: hour_attr(at), ip_hour: keys::ip_hour_quota(ip, at) }
    }
}

impl Store {
    /// Admits a request against the golfer's hour and day and the IP's hour at once, or
    /// refuses it touching none. `claim` (the claim on the clientMessageId) joins the same
    /// transaction and is checked first. When no answer arrives the error carries an
    /// [`Unsure`] to resolve. The golfer's item is marked with `mark` (this request's own), so a
    /// read beside the admission tells whether it saw it ([`QuotaRead::with_admission`]).
    pub async fn admit(&self, a: &QuotaCheck, claim: Option<&Claim>, mark: &str) -> Result<AdmitDecision, AdmitError> {
        if a.user_day_limit_micro < a.cost_micro {
            return Ok(AdmitDecision::Refused { counter: Counter::UserDay, current: 0 });
        }
        let definite = |error| AdmitError { error, unsure: None };
        let claimed = usize::from(claim.is_some());
        let keys = CounterKeys::of(&a.user, &a.ip, a.at);
        let mut items: Vec<TransactWriteItem> = claim.map(|c| self.claim_item(c)).transpose().map_err(definite)?.into_iter().collect();
        items.extend(self.admission_items(a, &keys, mark).map_err(definite)?);

        let written = self.transact_resolvable("TransactWriteItems admit", items).await;
        match written.map_err(|(error, unsure)| AdmitError { error, unsure })? {
            Written::Applied => Ok(AdmitDecision::Admitted),
            Written::ConditionFailed { index, item } if index < claimed => Ok(AdmitDecision::Duplicate(Previous::from_item(item))),
            Written::ConditionFailed { index, item } if index == claimed => {
                // The golfer's item: the hour's count or the day's spend refused.
                let count = number(item.as_ref(), &keys.hour_attr);
                Ok(match count >= a.hour_limit {
                    true => AdmitDecision::Refused { counter: Counter::UserHour, current: count },
                    false => AdmitDecision::Refused { counter: Counter::UserDay, current: number(item.as_ref(), SPEND) },
                })
            }
            Written::ConditionFailed { item, .. } => Ok(AdmitDecision::Refused { counter: Counter::IpHour, current: number(item.as_ref(), COUNT) }),
        }
    }

    fn admission_items(&self, a: &QuotaCheck, k: &CounterKeys, mark: &str) -> Result<Vec<TransactWriteItem>, StoreError> {
        let day_expires_at = a.at.timestamp() + keys::DAY_TTL_SECS;
        let ip_expires_at = a.at.timestamp() + keys::IP_QUOTA_TTL_SECS;
        let golfer = built(
            update(&k.user_quota, "ADD #h :one, #s :cost SET #ttl = if_not_exists(#ttl, :ttl), #m = :mark")
                .condition_expression("(attribute_not_exists(#h) OR #h < :hl) AND (attribute_not_exists(#s) OR #s <= :room)")
                .expression_attribute_names("#h", &k.hour_attr)
                .expression_attribute_names("#s", SPEND)
                .expression_attribute_names("#ttl", keys::TTL_ATTRIBUTE)
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":hl", n(a.hour_limit))
                .expression_attribute_values(":cost", n(a.cost_micro))
                .expression_attribute_values(":room", n(a.user_day_limit_micro - a.cost_micro))
                .expression_attribute_values(":ttl", n(day_expires_at))
                .expression_attribute_names("#m", ADMITTED_BY)
                .expression_attribute_values(":mark", s(mark))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
            &self.table,
        )?;
        let ip = built(
            update(&k.ip_hour, "ADD #c :one SET #ttl = if_not_exists(#ttl, :ttl)")
                .condition_expression("attribute_not_exists(#c) OR #c < :limit")
                .expression_attribute_names("#c", COUNT)
                .expression_attribute_names("#ttl", keys::TTL_ATTRIBUTE)
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":limit", n(a.ip_hour_limit))
                .expression_attribute_values(":ttl", n(ip_expires_at))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
            &self.table,
        )?;
        Ok(vec![golfer, ip])
    }

    /// Gives a reservation back (see [`GiveBack`]).
    pub async fn give_back(&self, g: &GiveBack) -> Result<(), StoreError> {
        let mut items = self.settlement(&g.keys, -g.reserved_micro, 0, true)?;
        if let Some(k) = &g.claim_key {
            items.push(self.claim_release_item(k)?);
        }
        self.transact("TransactWriteItems release", &items, Some(&g.token)).await.map(|_| ()).map_err(|f| f.error)
    }

    /// What the golfer has used this hour and day (the usage route).
    pub async fn usage(&self, k: &CounterKeys) -> Result<UsageSnapshot, StoreError> {
        let get = || self.client.get_item().table_name(&self.table).key(keys::PK, s(&k.user_quota)).consistent_read(true).return_consumed_capacity(Rcc::Total).send();
        let out = self.send("GetItem usage", get).await?;
        Ok(QuotaRead::of(out.item.as_ref(), k).used)
    }

    /// Items that settle a request on the golfer's day: `delta_micro` on the spend (negative
    /// refunds) and the tokens used; with `release_slots`, the hour's request and the IP's
    /// are given back too.
    pub(crate) fn settlement(&self, k: &CounterKeys, delta_micro: i64, tokens: i64, release_slots: bool) -> Result<Vec<TransactWriteItem>, StoreError> {
        let golfer = match release_slots {
            true => update(&k.user_quota, "ADD #s :d, #t :tok, #h :minus").expression_attribute_names("#h", &k.hour_attr).expression_attribute_values(":minus", n(-1)),
            false => update(&k.user_quota, "ADD #s :d, #t :tok"),
        };
        let golfer = golfer
            .expression_attribute_names("#s", SPEND)
            .expression_attribute_names("#t", TOKENS)
            .expression_attribute_values(":d", n(delta_micro))
            .expression_attribute_values(":tok", n(tokens));
        let mut items = vec![built(golfer, &self.table)?];
        if release_slots {
            items.push(built(update(&k.ip_hour, "ADD #c :minus").expression_attribute_names("#c", COUNT).expression_attribute_values(":minus", n(-1)), &self.table)?);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_beside_the_admission_counts_the_message_once() {
        let read = |mark: Option<&str>| QuotaRead { used: UsageSnapshot { user_hour_count: 3, user_day_spend_micro: 40_000 }, admitted_by: mark.map(str::to_string) };
        // The read saw this admission: as read.
        assert_eq!(read(Some("mine")).with_admission("mine", 9_000), UsageSnapshot { user_hour_count: 3, user_day_spend_micro: 40_000 });
        // It came before it (another admission's mark, or none yet): the message is added.
        assert_eq!(read(Some("other")).with_admission("mine", 9_000), UsageSnapshot { user_hour_count: 4, user_day_spend_micro: 49_000 });
        assert_eq!(QuotaRead::default().with_admission("mine", 9_000), UsageSnapshot { user_hour_count: 1, user_day_spend_micro: 9_000 });
    }
}
