//! The golfer's memory item (`memory_{user}`, `schema/memory.json`): read with the profile,
//! written inside a turn's transaction when the reply changed it, and by the golfer's own
//! routes (deleting a fact, the switch). Every write is conditional on the version it read,
//! so a change made from a stale read never overwrites a newer one.

use aws_sdk_dynamodb::types::{Put, ReturnConsumedCapacity as Rcc, ReturnValue, TransactWriteItem};

use super::{from_item, keys, n, s, to_item, Item, Store, StoreError};
use crate::models::{GolferMemory, UserId};
use aws_sdk_dynamodb::error::SdkError;

const VERSION: &str = "version";

/// A memory to write, and the version it was made from (`None`: there was no item).
#[derive(Debug, Clone, Copy)]
pub struct MemoryWrite<'a> {
    pub memory: &'a GolferMemory,
    pub read_version: Option<u64>,
}

/// A stored memory item as its type (its key is the store's).
pub(crate) fn from_memory_item(mut item: Item) -> Result<GolferMemory, StoreError> {
    item.remove(keys::PK);
    from_item("memory", item)
}

impl Store {
    /// The golfer's memory, read strongly consistent (a write is conditional on its version).
    pub async fn memory(&self, user: &UserId) -> Result<Option<GolferMemory>, StoreError> {
        let get = || self.client.get_item().table_name(&self.table).key(keys::PK, s(keys::memory(user))).consistent_read(true).return_consumed_capacity(Rcc::Total).send();
        self.send("GetItem memory", get).await?.item.map(from_memory_item).transpose()
    }

    /// Writes the golfer's memory unless it changed since `read_version`: `false` when it did
    /// (nothing was written).
    pub async fn put_memory(&self, user: &UserId, w: MemoryWrite<'_>) -> Result<bool, StoreError> {
        let op = "PutItem memory";
        let p = self.memory_put_of(user, w)?;
        let put = self
            .client
            .put_item()
            .table_name(p.table_name)
            .set_item(Some(p.item))
            .set_condition_expression(p.condition_expression)
            .set_expression_attribute_names(p.expression_attribute_names)
            .set_expression_attribute_values(p.expression_attribute_values)
            .return_consumed_capacity(Rcc::Total);
        match self.send_raw(op, || put.send()).await? {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => Ok(false),
            Err(e) => Err(super::sdk_error(op, e)),
        }
    }

    /// The memory's Put in a turn's transaction, conditional on the version it was made from.
    pub(crate) fn memory_put(&self, user: &UserId, w: MemoryWrite<'_>) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder().put(self.memory_put_of(user, w)?).build())
    }

    fn memory_put_of(&self, user: &UserId, w: MemoryWrite<'_>) -> Result<Put, StoreError> {
        let mut item = to_item(w.memory)?;
        item.insert(keys::PK.into(), s(keys::memory(user)));
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match w.read_version {
            Some(v) => put.condition_expression("#v = :read").expression_attribute_names("#v", VERSION).expression_attribute_values(":read", n(v)),
            None => put.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", keys::PK),
        };
        Ok(put.build()?)
    }

    /// Deletes the golfer's memory; returns how many facts it held.
    pub(crate) async fn delete_memory(&self, user: &UserId) -> Result<u64, StoreError> {
        let delete = || {
            self.client.delete_item().table_name(&self.table).key(keys::PK, s(keys::memory(user))).return_values(ReturnValue::AllOld).return_consumed_capacity(Rcc::Total).send()
        };
        let old = self.send("DeleteItem memory", delete).await?.attributes.filter(|a| !a.is_empty());
        Ok(old.map(from_memory_item).transpose()?.map_or(0, |m| m.facts.len() as u64))
    }
}
