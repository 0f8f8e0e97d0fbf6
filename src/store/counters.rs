//! Quota and spend counters: one transaction of conditional updates admits a request or
//! refuses it without touching any counter, so limits hold exactly under any concurrency;
//! settlement and give-back adjust the same items.

use aws_sdk_dynamodb::types::{KeysAndAttributes, ReturnConsumedCapacity as Rcc, ReturnValuesOnConditionCheckFailure, TransactWriteItem};

use super::idempotency::{Claim, Previous};
use super::transact::{built, update, Unsure, Written};
use super::{keys, n, number, s, sdk_error, Store, StoreError};

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

impl Counter {
    /// The limit's name as templates, logs and metrics know it.
    pub fn label(self) -> &'static str {
        match self {
            Self::UserHour => "user_hour",
            Self::IpHour => "ip_hour",
            Self::UserDay => "user_day",
            Self::GlobalDay => "global_day",
        }
    }
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

/// What admitting one request asks of the counters.
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

/// The counters' answer to an admission.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmitDecision {
    Admitted,
    /// The idempotency claim failed: an earlier request holds this id.
    Duplicate(Previous),
    /// `current` is the refusing counter's value when it refused.
    Refused { counter: Counter, current: i64 },
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

/// The order of the counter items in an admission, after the optional claim.
const ORDER: [(Counter, &str); 4] = [(Counter::UserHour, COUNT), (Counter::IpHour, COUNT), (Counter::UserDay, SPEND), (Counter::GlobalDay, SPEND)];

impl Store {
    /// Admits a request against all four counters at once, or refuses it touching none.
    /// `claim` (an idempotency claim) joins the same transaction and is checked first.
    /// When no answer arrives the error carries an [`Unsure`] to resolve.
    pub async fn admit(&self, a: &Admission, claim: Option<&Claim>) -> Result<AdmitDecision, AdmitError> {
        let spend_room = |limit: i64| limit - a.cost_micro;
        if spend_room(a.user_day_limit_micro) < 0 {
            return Ok(AdmitDecision::Refused { counter: Counter::UserDay, current: 0 });
        }
        if spend_room(a.global_day_limit_micro) < 0 {
            return Ok(AdmitDecision::Refused { counter: Counter::GlobalDay, current: 0 });
        }
        let definite = |error| AdmitError { error, unsure: None };
        let claimed = usize::from(claim.is_some());
        let mut items: Vec<TransactWriteItem> = claim.map(|c| self.claim_item(c)).transpose().map_err(definite)?.into_iter().collect();
        items.extend(self.admission_items(a).map_err(definite)?);

        let written = self.transact_resolvable("TransactWriteItems admit", items).await;
        match written.map_err(|(error, unsure)| AdmitError { error, unsure })? {
            Written::Applied => Ok(AdmitDecision::Admitted),
            Written::ConditionFailed { index, item } if index < claimed => Ok(AdmitDecision::Duplicate(Previous::from_item(item.as_ref()))),
            Written::ConditionFailed { index, item } => {
                let (counter, attr) = ORDER.get(index - claimed).copied().ok_or_else(|| definite(StoreError::Rejected(format!("admission item {index} failed"))))?;
                Ok(AdmitDecision::Refused { counter, current: number(item.as_ref(), attr) })
            }
        }
    }

    fn admission_items(&self, a: &Admission) -> Result<Vec<TransactWriteItem>, StoreError> {
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
                    .expression_attribute_values(":room", n(limit - a.cost_micro))
                    .expression_attribute_values(":ttl", n(a.day_expires_at))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld),
                &self.table,
            )
        };
        Ok(vec![
            count(&a.keys.user_hour, a.hour_limit)?,
            count(&a.keys.ip_hour, a.ip_hour_limit)?,
            spend(&a.keys.user_day, a.user_day_limit_micro)?,
            spend(&a.keys.global_day, a.global_day_limit_micro)?,
        ])
    }

    /// Gives a reservation back (see [`GiveBack`]).
    pub async fn give_back(&self, g: &GiveBack) -> Result<(), StoreError> {
        let mut items = self.spend_adjustment(&g.keys, -g.reserved_micro, 0)?;
        items.extend(self.slot_release(&g.keys)?);
        if let Some(k) = &g.claim_key {
            items.push(self.claim_release_item(k)?);
        }
        self.transact("TransactWriteItems release", &items, Some(&g.token)).await.map(|_| ()).map_err(|f| f.error)
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

    /// Items that change the day's spend by `delta_micro` (negative refunds) and add the
    /// tokens actually used.
    pub(crate) fn spend_adjustment(&self, k: &CounterKeys, delta_micro: i64, tokens: i64) -> Result<Vec<TransactWriteItem>, StoreError> {
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

    /// Items that give back the request slots (user-hour and ip-hour).
    pub(crate) fn slot_release(&self, k: &CounterKeys) -> Result<Vec<TransactWriteItem>, StoreError> {
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
}
