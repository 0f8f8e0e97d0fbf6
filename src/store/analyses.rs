//! Swing analyses from `golf-coach-analyses`: read-only, always scoped to the caller.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity as Rcc};

use super::{from_item, keys, s, to_item, Item, Store, StoreError};
use crate::models::{SwingAnalysis, UserId};

impl Store {
    /// The caller's most recent analyses, newest first.
    pub async fn recent_swings(&self, user: &UserId, limit: i32) -> Result<Vec<SwingAnalysis>, StoreError> {
        let send = || {
            self.client
                .query()
                .table_name(&self.analyses_table)
                .index_name(keys::ANALYSES_USER_INDEX)
                .key_condition_expression("#u = :u")
                .expression_attribute_names("#u", keys::ANALYSES_USER_INDEX_PK)
                .expression_attribute_values(":u", s(user.as_str()))
                .scan_index_forward(false)
                .limit(limit)
                .return_consumed_capacity(Rcc::Total)
                .send()
        };
        let out = self.send("Query analyses", send).await?;
        out.items.unwrap_or_default().into_iter().map(|item| from_item("swing analysis", item)).collect()
    }

    /// Writes an analysis (demo data and tests only: production analyses come from the analysis system).
    pub async fn put_swing(&self, swing: &SwingAnalysis) -> Result<(), StoreError> {
        let item = to_item(swing)?;
        let put = || self.client.put_item().table_name(&self.analyses_table).set_item(Some(item)).send();
        self.send("PutItem analysis", put).await?;
        Ok(())
    }
}

/// An analysis item as the caller may see it: another golfer's swing and a missing one are
/// both `None`, so nothing reveals whether it exists.
pub(crate) fn own_swing(user: &UserId, item: Item) -> Result<Option<SwingAnalysis>, StoreError> {
    if item.get(keys::ANALYSES_USER_INDEX_PK) != Some(&AttributeValue::S(user.to_string())) {
        return Ok(None);
    }
    from_item("swing analysis", item).map(Some)
}
