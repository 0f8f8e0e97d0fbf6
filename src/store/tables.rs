//! Table creation for `coach-api migrate` and the tests, from the key constants in `keys`.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

use super::{keys, sdk_error, Store, StoreError};

fn attr(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build().map_err(StoreError::from)
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(StoreError::from)
}

fn gsi(name: &str, pk: &str, sk: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(pk, KeyType::Hash)?)
        .key_schema(key(sk, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(StoreError::from)
}

impl Store {
    /// Creates both tables if they do not exist; returns the names it created.
    pub async fn create_tables(&self) -> Result<Vec<String>, StoreError> {
        let mut created = vec![];
        if !self.table_exists(&self.table).await? {
            self.create_coaching_table().await?;
            created.push(self.table.clone());
        }
        if !self.table_exists(&self.analyses_table).await? {
            let index = gsi(keys::ANALYSES_USER_INDEX, keys::ANALYSES_USER_INDEX_PK, keys::ANALYSES_USER_INDEX_SK)?;
            self.create_table(&self.analyses_table, [keys::ANALYSES_PK, keys::ANALYSES_USER_INDEX_PK, keys::ANALYSES_USER_INDEX_SK], index).await?;
            created.push(self.analyses_table.clone());
        }
        Ok(created)
    }

    /// Asked by name: ListTables answers a page of 100 names at a time, and a table past the
    /// first page looked missing (migrate then failed on CreateTable's ResourceInUseException).
    async fn table_exists(&self, name: &str) -> Result<bool, StoreError> {
        match self.send_raw("DescribeTable", || self.client.describe_table().table_name(name).send()).await? {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_not_found_exception()) => Ok(false),
            Err(e) => Err(sdk_error("DescribeTable", e)),
        }
    }

    /// The single table, its user index and its TTL attribute.
    async fn create_coaching_table(&self) -> Result<(), StoreError> {
        let index = gsi(keys::USER_INDEX, keys::USER_INDEX_PK, keys::USER_INDEX_SK)?;
        self.create_table(&self.table, [keys::PK, keys::USER_INDEX_PK, keys::USER_INDEX_SK], index).await?;
        let ttl = TimeToLiveSpecification::builder().attribute_name(keys::TTL_ATTRIBUTE).enabled(true).build()?;
        self.send("UpdateTimeToLive", || self.client.update_time_to_live().table_name(&self.table).time_to_live_specification(ttl).send()).await?;
        Ok(())
    }

    /// An on-demand table keyed by `attrs[0]`, with one index over `attrs[1]` and `attrs[2]`.
    async fn create_table(&self, name: &str, attrs: [&str; 3], index: GlobalSecondaryIndex) -> Result<(), StoreError> {
        let create = self
            .client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(attrs[0])?)
            .attribute_definitions(attr(attrs[1])?)
            .attribute_definitions(attr(attrs[2])?)
            .key_schema(key(attrs[0], KeyType::Hash)?)
            .global_secondary_indexes(index);
        self.send("CreateTable", || create.send()).await?;
        Ok(())
    }
}
