//! Table creation for `coach-api migrate` and the tests, from the key constants in `keys`.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::{keys, sdk_error, Store, StoreError};

fn attr(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| StoreError::Rejected(e.to_string()))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| StoreError::Rejected(e.to_string()))
}

fn gsi(name: &str, pk: &str, sk: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(pk, KeyType::Hash)?)
        .key_schema(key(sk, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(|e| StoreError::Rejected(e.to_string()))
}

impl Store {
    /// Creates both tables if they do not exist; returns the names it created.
    pub async fn create_tables(&self) -> Result<Vec<String>, StoreError> {
        let mut created = vec![];
        let existing = self
            .client
            .list_tables()
            .send()
            .await
            .map_err(|e| sdk_error("ListTables", e))?
            .table_names
            .unwrap_or_default();

        if !existing.contains(&self.table) {
            self.client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attr(keys::PK)?)
                .attribute_definitions(attr(keys::USER_INDEX_PK)?)
                .attribute_definitions(attr(keys::USER_INDEX_SK)?)
                .key_schema(key(keys::PK, KeyType::Hash)?)
                .global_secondary_indexes(gsi(keys::USER_INDEX, keys::USER_INDEX_PK, keys::USER_INDEX_SK)?)
                .send()
                .await
                .map_err(|e| sdk_error("CreateTable", e))?;
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(keys::TTL_ATTRIBUTE)
                        .enabled(true)
                        .build()
                        .map_err(|e| StoreError::Rejected(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| sdk_error("UpdateTimeToLive", e))?;
            created.push(self.table.clone());
        }

        if !existing.contains(&self.analyses_table) {
            self.client
                .create_table()
                .table_name(&self.analyses_table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attr(keys::ANALYSES_PK)?)
                .attribute_definitions(attr(keys::ANALYSES_USER_INDEX_PK)?)
                .attribute_definitions(attr(keys::ANALYSES_USER_INDEX_SK)?)
                .key_schema(key(keys::ANALYSES_PK, KeyType::Hash)?)
                .global_secondary_indexes(gsi(
                    keys::ANALYSES_USER_INDEX,
                    keys::ANALYSES_USER_INDEX_PK,
                    keys::ANALYSES_USER_INDEX_SK,
                )?)
                .send()
                .await
                .map_err(|e| sdk_error("CreateTable", e))?;
            created.push(self.analyses_table.clone());
        }
        Ok(created)
    }
}
