//! `coach-api migrate` (Store::create_tables) on a DynamoDB that already holds many tables, as
//! the shared DynamoDB Local of the test command does: run again, it finds its tables and
//! creates nothing.

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use coach_api::config::Config;
use coach_api::store::Store;

use crate::helpers::dynamodb_endpoint;

fn store_config(coaching: String, analyses: String) -> Config {
    Config { table_coaching: coaching, table_analyses: analyses, dynamodb_endpoint: Some(dynamodb_endpoint()), ..Config::default() }
}

/// ListTables answers 100 names a page, in name order: with 100 tables before them, the
/// migrated tables stand on the second page.
#[tokio::test]
async fn migrating_again_finds_tables_that_stand_past_the_first_page_of_names() {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let store = Store::connect(&store_config(format!("zz-migrate-coaching-{}", &suffix[..12]), format!("zz-migrate-analyses-{}", &suffix[..12]))).await;
    let client = store.client();
    let existing: Vec<String> = client.list_tables().into_paginator().items().send().collect::<Result<_, _>>().await.unwrap();
    let before = existing.iter().filter(|t| t.as_str() < store.table()).count();
    for i in before..100 {
        let key = |kind| KeySchemaElement::builder().attribute_name("pk").key_type(kind).build().unwrap();
        let attr = AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().unwrap();
        client
            .create_table()
            .table_name(format!("aa-page-filler-{}-{i:03}", &suffix[..8]))
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr)
            .key_schema(key(KeyType::Hash))
            .send()
            .await
            .unwrap();
    }
    let first_page = client.list_tables().send().await.unwrap().table_names.unwrap_or_default();
    assert_eq!(first_page.len(), 100, "ListTables pages at 100 names");

    let created = store.create_tables().await.unwrap();
    assert_eq!(created, [store.table(), store.analyses_table()], "the first migrate creates both tables");
    assert!(!client.list_tables().send().await.unwrap().table_names.unwrap_or_default().iter().any(|t| t == store.table()), "the table is past the first page");
    let again = store.create_tables().await.unwrap_or_else(|e| panic!("migrating again failed: {e}"));
    assert!(again.is_empty(), "migrating again created {again:?}");
}
