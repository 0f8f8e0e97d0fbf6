//! The one deadline every DynamoDB wait derives from. The chat flow runs each wave inside
//! [`scope`] with the instant its phase must be done by (admission, then the turn's write,
//! both from the request's deadline); every store call waits at most until then. There is no
//! fixed per-attempt timeout: a slow store makes a request wait less, never retry more.
//! Outside a request (the CLI, background work) a call waits at most [`OUTSIDE_A_REQUEST`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::StoreError;

pub const OUTSIDE_A_REQUEST: Duration = Duration::from_secs(10);

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with every store call in it bounded by `by`.
pub fn scope<F: Future>(by: Instant, f: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(by, f)
}

/// The instant the current scope's store calls must be done by.
fn current() -> Instant {
    DEADLINE.try_with(|d| *d).unwrap_or_else(|_| Instant::now() + OUTSIDE_A_REQUEST)
}

/// `f`'s output, or `None` when the deadline came first (the call is dropped).
pub(crate) async fn within<F: Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout_at(current(), f).await.ok()
}

/// The error of a call the deadline cut short.
pub(crate) fn missed(op: &str) -> StoreError {
    StoreError::Unavailable(format!("{op}: no answer before the request's deadline"))
}
