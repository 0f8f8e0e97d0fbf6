//! The only code that speaks DynamoDB. Items map to the generated types through serde_dynamo.

pub mod analyses;
pub mod budget;
pub mod conversations;
pub mod counters;
pub mod deadline;
pub mod golfer;
pub mod idempotency;
pub mod keys;
pub mod memory;
pub mod tables;
pub mod transact;

use std::future::Future;

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Config;

pub type Item = HashMap<String, AttributeValue>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table cannot be reached or keeps throttling; the request is answered with 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// An item does not have the shape of its schema. Which item is not said: its key holds
    /// the golfer's id, and errors are logged.
    #[error("a stored {what} does not match its schema")]
    Corrupt { what: &'static str },
    /// Another writer changed the conversation first and retries ran out.
    #[error("conversation kept changing under concurrent writes")]
    Contention,
    /// The request itself was refused by DynamoDB (a bug on our side, e.g. an invalid expression).
    #[error("storage refused the request: {0}")]
    Rejected(String),
    /// A request could not be built before it was sent (a bug on our side).
    #[error("a storage request could not be built: {0}")]
    Invalid(String),
}

/// Classifies an SDK error: service-side problems and transport failures are availability,
/// validation errors are ours.
pub(crate) fn sdk_error<E>(op: &str, e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown");
            if code == "ValidationException" || code == "ResourceNotFoundException" {
                StoreError::Rejected(format!("{op}: {code}: {}", se.err().message().unwrap_or("")))
            } else {
                StoreError::Unavailable(format!("{op}: {code}"))
            }
        }
        other => StoreError::Unavailable(format!("{op}: {}", short_sdk_kind(other))),
    }
}

fn short_sdk_kind<E>(e: &SdkError<E>) -> &'static str {
    match e {
        SdkError::ConstructionFailure(_) => "construction failure",
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(_) => "dispatch failure",
        SdkError::ResponseError(_) => "response error",
        SdkError::ServiceError(_) => "service error",
        _ => "unknown",
    }
}

pub(crate) fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Invalid(format!("serialize: {e}")))
}

/// A turn item as its type, whole ([`crate::models::TurnItem`]) or as a projection read it
/// ([`crate::conversation::RecentTurn`]). The key is left out: the store sets it when it writes
/// an item (the schema names it, as stored), so a value read back carries none.
pub(crate) fn turn<T: DeserializeOwned>(mut item: Item) -> Result<T, StoreError> {
    item.remove(keys::PK);
    from_item("turn", item)
}

impl From<aws_sdk_dynamodb::error::BuildError> for StoreError {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// What a DynamoDB answer reports of the capacity it consumed (`ReturnConsumedCapacity::Total`).
pub(crate) trait Consumed {
    fn tally(&self);
}

fn units<'a>(caps: impl IntoIterator<Item = &'a aws_sdk_dynamodb::types::ConsumedCapacity>) -> f64 {
    caps.into_iter().map(|c| c.capacity_units().unwrap_or(0.0)).sum()
}

macro_rules! consumed {
    ($record:ident: $($output:ty),*) => {
        $(impl Consumed for $output {
            fn tally(&self) {
                crate::stats::$record(units(self.consumed_capacity()));
            }
        })*
    };
}
use aws_sdk_dynamodb::operation as ops;
consumed!(read_units: ops::get_item::GetItemOutput, ops::query::QueryOutput, ops::batch_get_item::BatchGetItemOutput);
consumed!(write_units: ops::put_item::PutItemOutput, ops::delete_item::DeleteItemOutput, ops::update_item::UpdateItemOutput,
    ops::batch_write_item::BatchWriteItemOutput, ops::transact_write_items::TransactWriteItemsOutput);
// The table calls of `coach-api migrate` consume no capacity.
macro_rules! no_capacity {
    ($($output:ty),*) => {
        $(impl Consumed for $output {
            fn tally(&self) {}
        })*
    };
}
no_capacity!(ops::describe_table::DescribeTableOutput, ops::create_table::CreateTableOutput, ops::update_time_to_live::UpdateTimeToLiveOutput);

/// An item as its type; `what` names the kind of item (never its key: keys hold user ids).
pub(crate) fn from_item<T: DeserializeOwned>(what: &'static str, item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|_| StoreError::Corrupt { what })
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Reads an integer attribute; absent means 0.
pub(crate) fn number(item: Option<&Item>, attr: &str) -> i64 {
    match item.and_then(|i| i.get(attr)) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

/// How long a call given up on keeps its permit while DynamoDB may still work on it
/// ([`Store::send_raw`]); past this it is dropped, so a store that never answers cannot hold
/// the permits forever.
pub const GIVEN_UP_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// The DynamoDB access of one process: the client and the table names.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) client: Client,
    pub(crate) table: String,
    pub(crate) analyses_table: String,
    /// Messages a day's conversation shows before older ones fold into its summary.
    pub(crate) recent_messages: usize,
    /// Permits for the calls in flight at once (`DYNAMODB_MAX_CALLS`): each call holds an
    /// HTTP connection, and a connection holds its buffers while it waits.
    calls: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Store {
    /// Every DynamoDB call goes through here: counted for the request's I/O statistics,
    /// bounded by the request's deadline ([`deadline`]), its consumed capacity recorded. The
    /// SDK's error is handed back for the caller to read (a cancelled transaction's reasons).
    ///
    /// `call` makes the SDK's future once a permit is held, and that future lives on the heap
    /// while the call is in flight: it is several kilobytes, and inline it would sit in the
    /// request's own future (the first wave's four calls side by side) for the request's whole
    /// life, the model's wait included, and in every request still waiting for a permit.
    ///
    /// A call the deadline gives up on is not taken back from DynamoDB: it still works on it
    /// (and may still apply a write). So the call keeps its permit until its answer comes, in a
    /// task of its own for at most [`GIVEN_UP_HOLD`]: the calls DynamoDB works on never exceed
    /// the bound, and a burst the store cannot keep up with is refused from the queue, where it
    /// costs nothing, instead of piling abandoned work on the store until nobody is served.
    pub(crate) async fn send_raw<T, E, F>(&self, op: &'static str, call: impl FnOnce() -> F) -> Result<Result<T, SdkError<E>>, StoreError>
    where
        T: Consumed + Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<T, SdkError<E>>> + Send + 'static,
    {
        crate::stats::call();
        // (The semaphore is never closed; if it were, the call would go ahead without a permit.)
        let permit = deadline::within(self.calls.clone().acquire_owned()).await.ok_or_else(|| deadline::missed(op))?;
        let mut in_flight = Box::pin(call());
        let Some(out) = deadline::within(&mut in_flight).await else {
            tokio::spawn(async move {
                let _answer = tokio::time::timeout(GIVEN_UP_HOLD, in_flight).await;
                drop(permit);
            });
            return Err(deadline::missed(op));
        };
        drop(permit);
        if let Ok(answer) = &out {
            answer.tally();
        }
        Ok(out)
    }

    /// [`Store::send_raw`] with the SDK's error classified.
    pub(crate) async fn send<T, E, F>(&self, op: &'static str, call: impl FnOnce() -> F) -> Result<T, StoreError>
    where
        T: Consumed + Send + 'static,
        E: ProvideErrorMetadata + std::fmt::Debug + Send + 'static,
        F: Future<Output = Result<T, SdkError<E>>> + Send + 'static,
    {
        self.send_raw(op, call).await?.map_err(|e| sdk_error(op, e))
    }

    pub async fn connect(config: &Config) -> Self {
        let shared = crate::aws::sdk_config(&config.aws, config.dynamodb_endpoint.as_deref()).await;
        // Every call is already bounded by its deadline (`deadline::within`); the SDK's own
        // watch on a stalled body would be a second timer on every call, polled with every read.
        let client = aws_sdk_dynamodb::config::Builder::from(&shared).stalled_stream_protection(aws_sdk_dynamodb::config::StalledStreamProtectionConfig::disabled()).build();
        Self {
            client: Client::from_conf(client),
            table: config.table_coaching.clone(),
            analyses_table: config.table_analyses.clone(),
            recent_messages: config.max_recent_messages,
            calls: std::sync::Arc::new(tokio::sync::Semaphore::new(config.dynamodb_max_calls)),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn analyses_table(&self) -> &str {
        &self.analyses_table
    }
}
