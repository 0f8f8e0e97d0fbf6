//! Conversations, which are turns: the coaching context's read wave (the golfer's newest
//! turns beside the profile and the swings) and the turn's one write.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, ReturnConsumedCapacity as Rcc, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::counters::{CounterKeys, QuotaRead};
use super::idempotency::{IN_PROGRESS, STATUS};
use super::transact::{Failed, Written};
use super::{from_item, keys, s, to_item, Item, Store, StoreError};
use crate::backoff::Backoff;
use crate::clock::{day_start, next_day, timestamp};
use crate::conversation::RecentTurn;
use crate::models::{Conversation, ConversationId, GolferMemory, GolferProfile, SwingAnalysis, SwingId, TurnItem, UserId};

/// Keys a batch read left unprocessed (throttling) are asked again after this.
const UNPROCESSED_BACKOFF: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(320)).with_floor(Duration::from_millis(10));

/// The golfer's newest turns read before answering: enough for the prompt's history (it
/// keeps the newest that fit), the summary of older ones, and the current themes.
pub const RECENT_TURNS: i32 = 20;
pub const RECENT_SWINGS: i32 = 3;

/// Everything the coach knows about the golfer before answering, read in one concurrent wave.
#[derive(Debug, Clone, Default)]
pub struct CoachingContext {
    /// The golfer's newest turns, newest first, of any day.
    pub recent: Vec<RecentTurn>,
    pub swings: Vec<SwingAnalysis>,
    /// The swing the app has on screen, present only when it is the caller's.
    pub swing_on_screen: Option<SwingAnalysis>,
    pub profile: Option<GolferProfile>,
    /// What the coach remembers about the golfer (none yet: memory on, nothing known), read
    /// strongly consistent: a turn's write is conditional on its version.
    pub memory: Option<GolferMemory>,
    /// The golfer's quota item, read strongly consistent beside the admission.
    pub quota: QuotaRead,
}

impl CoachingContext {
    /// The golfer's newest turn: the current themes.
    pub fn newest(&self) -> Option<&RecentTurn> {
        self.recent.first()
    }

    /// The golfer's newest turns, oldest first, whatever their UTC day: the prompt's history.
    pub fn oldest_first(&self) -> impl Iterator<Item = &RecentTurn> {
        self.recent.iter().rev()
    }
}

/// What the context's BatchGetItem found.
#[derive(Default)]
struct Keyed {
    profile: Option<GolferProfile>,
    memory: Option<GolferMemory>,
    swing_on_screen: Option<SwingAnalysis>,
    quota: QuotaRead,
}

/// A turn to write: the turn item (it replaces the claim on its key, or is new), and its
/// settlement on the golfer's counters.
#[derive(Debug, Clone, Copy)]
pub struct TurnWrite<'a> {
    /// The turn's key (`msg_{user}_{id}`).
    pub key: &'a str,
    pub turn: &'a TurnItem,
    /// The claim this request holds on its clientMessageId: the turn replaces it when stored
    /// under its key; a turn stored under another key (a fallback) deletes it.
    pub claim: Option<&'a str>,
    pub keys: &'a CounterKeys,
    /// Actual cost minus the reserved worst case (negative: a refund).
    pub spend_delta_micro: i64,
    /// The model was not reached: the request slots are given back too.
    pub release_slots: bool,
    /// What the coach remembers after this turn, when the reply changed it.
    pub memory: Option<super::memory::MemoryWrite<'a>>,
}

/// A turn's transaction, built once so every send of it is the same (one client request
/// token: DynamoDB applies it at most once however often it is sent within ten minutes).
#[derive(Debug, Clone)]
pub struct PreparedTurn {
    items: Vec<TransactWriteItem>,
    token: String,
    /// The position of the erase-marker check in `items`.
    erase_check: usize,
    /// What settles the request when its turn may not be written: the settlement and the
    /// claim's deletion, without the turn.
    discard: Vec<TransactWriteItem>,
    /// The position of the memory write in `items`, when the turn changes the memory.
    memory_write: Option<usize>,
    /// The same turn without its memory change, under its own token: sent when the memory
    /// changed since it was read (the golfer deleted a fact, or another of their messages
    /// changed it first), so a stale change never overwrites a newer one.
    without_memory: Option<Box<PreparedTurn>>,
}

/// Why a turn's write failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnWriteError {
    /// The turn may never be written: the golfer deleted their data after asking, or the
    /// claim on its id is no longer this request's. Nothing was written.
    #[error("the turn may not be written: {0}")]
    Unwritable(Unwritable),
    /// No write, or no definite answer (`maybe_applied`): sending it again is safe.
    #[error("{error}")]
    Failed { error: StoreError, maybe_applied: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// The golfer's erase marker is newer than the question.
    Erased,
    /// The claim on the clientMessageId expired and was taken by another request.
    ClaimLost,
    /// The golfer's memory changed since the turn read it (the turn is then written without
    /// its memory change).
    MemoryChanged,
}

impl std::fmt::Display for Unwritable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Erased => "the golfer deleted their data after asking",
            Self::ClaimLost => "the claim on its id was taken",
            Self::MemoryChanged => "the golfer's memory changed since it was read",
        })
    }
}

impl Store {
    /// The coaching context of `user`'s message, with the quota item at `quota` (read beside
    /// the admission, in the same wave).
    pub async fn load_context(&self, user: &UserId, swing_on_screen: Option<&SwingId>, quota: &CounterKeys) -> Result<CoachingContext, StoreError> {
        let (keyed, recent, swings) = tokio::try_join!(self.keyed_context(user, swing_on_screen, quota), self.recent_for_context(user), self.recent_swings(user, RECENT_SWINGS),)?;
        let Keyed { profile, memory, swing_on_screen, quota } = keyed;
        Ok(CoachingContext { recent, swings, swing_on_screen, profile, memory, quota })
    }

    /// The profile, the golfer's memory, the golfer's quota item and, when the app names one,
    /// the swing on screen, only if it is the caller's: one BatchGetItem across both tables.
    async fn keyed_context(&self, user: &UserId, swing: Option<&SwingId>, quota: &CounterKeys) -> Result<Keyed, StoreError> {
        let (profile_key, memory_key) = (keys::profile(user), keys::memory(user));
        let key = |attr: &str, value: &str| HashMap::from([(attr.to_string(), s(value))]);
        let mut coaching =
            KeysAndAttributes::builder().keys(key(keys::PK, &profile_key)).keys(key(keys::PK, &memory_key)).keys(key(keys::PK, &quota.user_quota)).consistent_read(true);
        let mut request = HashMap::new();
        if let Some(id) = swing {
            let swing_key = key(keys::ANALYSES_PK, id.as_str());
            if self.analyses_table == self.table {
                coaching = coaching.keys(swing_key);
            } else {
                request.insert(self.analyses_table.clone(), KeysAndAttributes::builder().keys(swing_key).build()?);
            }
        }
        request.insert(self.table.clone(), coaching.build()?);

        let mut found: Vec<Item> = vec![];
        let op = "BatchGetItem context";
        for attempt in 0u32.. {
            let send = || self.client.batch_get_item().set_request_items(Some(request)).return_consumed_capacity(Rcc::Total).send();
            let out = self.send(op, send).await?;
            found.extend(out.responses.unwrap_or_default().into_values().flatten());
            // Keys DynamoDB did not get to (throttling): ask again for those, with backoff.
            match out.unprocessed_keys.filter(|u| !u.is_empty()) {
                None => break,
                Some(_) if attempt >= 4 => return Err(StoreError::Unavailable(format!("{op}: keys left unprocessed"))),
                Some(left) => {
                    request = left;
                    UNPROCESSED_BACKOFF.wait(attempt).await;
                }
            }
        }

        let mut keyed = Keyed::default();
        for mut item in found {
            let pk = item.get(keys::PK).and_then(|v| v.as_s().ok()).cloned();
            match pk.as_deref() {
                Some(k) if k == quota.user_quota => keyed.quota = QuotaRead::of(Some(&item), quota),
                Some(k) if k == profile_key => {
                    item.remove(keys::PK);
                    keyed.profile = Some(from_item("profile", item)?);
                }
                Some(k) if k == memory_key => keyed.memory = Some(super::memory::from_memory_item(item)?),
                _ => keyed.swing_on_screen = super::analyses::own_swing(user, item)?,
            }
        }
        Ok(keyed)
    }

    /// A Query of user-index for the golfer's items: add the key condition (it names the
    /// golfer `#u = :u`), the order and the limit.
    pub(crate) fn user_index(&self, user: &UserId) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(keys::USER_INDEX)
            .expression_attribute_names("#u", keys::USER_INDEX_PK)
            .expression_attribute_values(":u", s(user.as_str()))
            .return_consumed_capacity(Rcc::Total)
    }

    /// Every item of a query, page after page (`query` builds a page from its start key).
    pub(crate) async fn all_pages(
        &self,
        op: &'static str,
        query: impl Fn(Option<Item>) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = vec![];
        let mut start: Option<Item> = None;
        loop {
            let page = self.send(op, || query(start.take()).send()).await?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// The golfer's newest `limit` turns, newest first (user-index; eventually consistent).
    pub async fn recent_turns(&self, user: &UserId, limit: i32) -> Result<Vec<TurnItem>, StoreError> {
        let out = self.send("Query user-index recent turns", || self.newest_turns(user, limit).send()).await?;
        turns(out.items.unwrap_or_default())
    }

    /// The Query of the golfer's newest `limit` turns, newest first.
    fn newest_turns(&self, user: &UserId, limit: i32) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.user_index(user).key_condition_expression("#u = :u").scan_index_forward(false).limit(limit)
    }

    /// The golfer's newest [`RECENT_TURNS`] turns, newest first, as the coach reads them: only
    /// the attributes of a [`RecentTurn`] (a third less to send, parse and hold per turn).
    async fn recent_for_context(&self, user: &UserId) -> Result<Vec<RecentTurn>, StoreError> {
        let mut query = self.newest_turns(user, RECENT_TURNS);
        let mut projection = format!("#{}", keys::PK);
        query = query.expression_attribute_names(format!("#{}", keys::PK), keys::PK);
        for (i, attribute) in crate::conversation::RECENT_TURN_ATTRIBUTES.iter().enumerate() {
            projection.push_str(&format!(", #p{i}"));
            query = query.expression_attribute_names(format!("#p{i}"), *attribute);
        }
        let out = self.send("Query user-index recent turns", || query.projection_expression(projection).send()).await?;
        turns(out.items.unwrap_or_default())
    }

    /// The golfer's turns of `at`'s day, oldest first (user-index, every page).
    pub async fn day_turns(&self, user: &UserId, at: DateTime<Utc>) -> Result<Vec<TurnItem>, StoreError> {
        let (from, to) = (day_start(at), timestamp(next_day(at) - chrono::Duration::milliseconds(1)));
        let items = self
            .all_pages("Query user-index day", |start| {
                self.user_index(user)
                    .key_condition_expression("#u = :u AND #t BETWEEN :from AND :to")
                    .expression_attribute_names("#t", keys::USER_INDEX_SK)
                    .expression_attribute_values(":from", s(from.clone()))
                    .expression_attribute_values(":to", s(to.clone()))
                    .set_exclusive_start_key(start)
            })
            .await?;
        turns(items)
    }

    /// A day's conversation assembled from its turns; `id` is `conv_{user}_{yyyymmdd}`.
    pub async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let rejected = || StoreError::Invalid(format!("{id} is not a conversation id"));
        let id = ConversationId::try_from(id.to_string()).map_err(|_| rejected())?;
        let (user, day) = keys::conversation_parts(&id).ok_or_else(rejected)?;
        let user = UserId::try_from(user.to_string()).map_err(|_| rejected())?;
        let turns = self.day_turns(&user, day).await?;
        Ok(crate::conversation::assemble(id, user, &turns, self.recent_messages))
    }

    pub async fn profile(&self, user: &UserId) -> Result<Option<GolferProfile>, StoreError> {
        let key = keys::profile(user);
        let send = || self.client.get_item().table_name(&self.table).key(keys::PK, s(&key)).return_consumed_capacity(Rcc::Total).send();
        let out = self.send("GetItem profile", send).await?;
        let Some(mut item) = out.item else { return Ok(None) };
        item.remove(keys::PK);
        from_item("profile", item).map(Some)
    }

    pub async fn put_profile(&self, profile: &GolferProfile) -> Result<(), StoreError> {
        let mut item = to_item(profile)?;
        item.insert(keys::PK.into(), s(keys::profile(&profile.user_id)));
        let send = || self.client.put_item().table_name(&self.table).set_item(Some(item)).send();
        self.send("PutItem profile", send).await?;
        Ok(())
    }

    /// The turn's transaction: the turn (replacing this request's claim, or new) and its
    /// settlement, under one client request token.
    pub fn prepare_turn(&self, w: TurnWrite<'_>) -> Result<PreparedTurn, StoreError> {
        let replaces_claim = w.claim == Some(w.key);
        let mut items = vec![self.turn_put(w.key, w.turn, replaces_claim)?];
        if let Some(claim) = w.claim.filter(|_| !replaces_claim) {
            items.push(self.claim_release_item(claim)?);
        }
        let settlement = self.settlement(w.keys, w.spend_delta_micro, i64::try_from(w.turn.tokens).unwrap_or(i64::MAX), w.release_slots)?;
        items.extend(settlement.iter().cloned());
        // Not written if the golfer deleted their data since asking (a message in flight
        // during DELETE /me must not write it back).
        let asked_ms = crate::clock::parse_timestamp(&w.turn.last_updated).ok_or_else(|| StoreError::Invalid("a turn's time out of its format".into()))?.timestamp_millis();
        let erase_check = items.len();
        items.push(self.not_erased_since(&w.turn.user_id, asked_ms)?);
        let mut discard: Vec<TransactWriteItem> = w.claim.map(|c| self.claim_release_item(c)).transpose()?.into_iter().collect();
        discard.extend(settlement);
        let (memory_write, without_memory) = match w.memory {
            Some(m) => {
                items.push(self.memory_put(&w.turn.user_id, m)?);
                (Some(items.len() - 1), Some(Box::new(self.prepare_turn(TurnWrite { memory: None, ..w })?)))
            }
            None => (None, None),
        };
        Ok(PreparedTurn { items, token: super::transact::token(), erase_check, discard, memory_write, without_memory })
    }

    /// Sends a prepared turn (again, if need be: it is applied once). When the golfer's
    /// memory changed since it was read, the turn is written without its memory change.
    pub async fn write_turn(&self, t: &PreparedTurn) -> Result<(), TurnWriteError> {
        match self.write_prepared(t).await {
            Err(TurnWriteError::Unwritable(Unwritable::MemoryChanged)) => match &t.without_memory {
                Some(plain) => self.write_prepared(plain).await,
                None => Err(TurnWriteError::Unwritable(Unwritable::ClaimLost)),
            },
            other => other,
        }
    }

    async fn write_prepared(&self, t: &PreparedTurn) -> Result<(), TurnWriteError> {
        match self.transact("TransactWriteItems turn", &t.items, Some(&t.token)).await {
            Ok(Written::Applied) => Ok(()),
            // Nothing was written, and nothing will be.
            Ok(Written::ConditionFailed { index, .. }) if index == t.erase_check => Err(TurnWriteError::Unwritable(Unwritable::Erased)),
            Ok(Written::ConditionFailed { index, .. }) if Some(index) == t.memory_write => Err(TurnWriteError::Unwritable(Unwritable::MemoryChanged)),
            Ok(Written::ConditionFailed { .. }) => Err(TurnWriteError::Unwritable(Unwritable::ClaimLost)),
            Err(Failed { error, maybe_applied }) => Err(TurnWriteError::Failed { error, maybe_applied }),
        }
    }

    /// Settles a request whose turn may not be written: its spend as billed, and its claim
    /// deleted (the golfer who deleted their data keeps nothing of it, not even the claim).
    pub async fn discard_turn(&self, t: &PreparedTurn) -> Result<(), StoreError> {
        let token = super::transact::token();
        self.transact("TransactWriteItems discard", &t.discard, Some(&token)).await.map(|_| ()).map_err(|f| f.error)
    }

    /// Writes a turn whose key must be new (demo data).
    pub async fn create_turn(&self, key: &str, turn: &TurnItem) -> Result<bool, StoreError> {
        let put = self.turn_put(key, turn, false)?;
        match self.transact("TransactWriteItems turn", &[put], None).await.map_err(|f| f.error)? {
            Written::Applied => Ok(true),
            Written::ConditionFailed { .. } => Ok(false),
        }
    }

    /// A check that the golfer has not deleted their data since `asked_ms`.
    fn not_erased_since(&self, user: &UserId, asked_ms: i64) -> Result<TransactWriteItem, StoreError> {
        let check = aws_sdk_dynamodb::types::ConditionCheck::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::erased(user)))
            .condition_expression("attribute_not_exists(#at) OR #at < :asked")
            .expression_attribute_names("#at", super::golfer::ERASED_AT)
            .expression_attribute_values(":asked", super::n(asked_ms))
            .build()?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    fn turn_put(&self, key: &str, turn: &TurnItem, claimed: bool) -> Result<TransactWriteItem, StoreError> {
        let mut item = to_item(turn)?;
        item.insert(keys::PK.into(), s(key));
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match claimed {
            true => put.condition_expression("#st = :inprog").expression_attribute_names("#st", STATUS).expression_attribute_values(":inprog", s(IN_PROGRESS)),
            false => put.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", keys::PK),
        };
        let put = put.build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// Turn items from user-index (it holds nothing else; an item of another shape is skipped,
/// so an index shared with older items still reads).
/// `T` is a whole turn ([`TurnItem`]) or what a projection read of one ([`RecentTurn`]).
fn turns<T: serde::de::DeserializeOwned>(items: Vec<Item>) -> Result<Vec<T>, StoreError> {
    items.into_iter().filter(|i| i.get(keys::PK).and_then(|v| v.as_s().ok()).is_some_and(|k| k.starts_with(keys::TURN_PREFIX))).map(super::turn).collect()
}
