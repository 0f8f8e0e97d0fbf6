//! What one request spent on I/O, kept in a task-local while the request runs: DynamoDB
//! calls and consumed capacity (the store records them), sequential DynamoDB waves, and the
//! wall time spent waiting on DynamoDB and the model. Reported on the request's EMF line
//! (benchmarks read it).

use std::cell::RefCell;
use std::time::Duration;

use futures::FutureExt;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IoStats {
    pub dynamo_calls: u32,
    /// Sequential DynamoDB round trips on the request's critical path.
    pub dynamo_waves: u32,
    pub read_units: f64,
    pub write_units: f64,
    pub store_wait: Duration,
    pub model_wait: Duration,
}

impl IoStats {
    /// Both together: a streamed answer's I/O before its headers and after.
    pub fn plus(&self, o: &IoStats) -> IoStats {
        IoStats {
            dynamo_calls: self.dynamo_calls + o.dynamo_calls,
            dynamo_waves: self.dynamo_waves + o.dynamo_waves,
            read_units: self.read_units + o.read_units,
            write_units: self.write_units + o.write_units,
            store_wait: self.store_wait + o.store_wait,
            model_wait: self.model_wait + o.model_wait,
        }
    }
}

tokio::task_local! {
    static STATS: RefCell<IoStats>;
}

/// Runs `f` with fresh statistics and returns them with its output. A combinator, not an
/// `async` wrapper: each `async` layer that awaits a future it was given holds it twice, and
/// the request's future (tens of KB, alive for the whole request) tripled that way.
pub fn scope<F: std::future::Future>(f: F) -> impl std::future::Future<Output = (F::Output, IoStats)> {
    // The closure runs inside the task-local's scope: TaskLocalFuture polls `f` within it.
    STATS.scope(RefCell::new(IoStats::default()), f.map(|out| (out, STATS.try_with(|s| *s.borrow()).unwrap_or_default())))
}

fn update(f: impl FnOnce(&mut IoStats)) {
    let _ = STATS.try_with(|s| f(&mut s.borrow_mut()));
}

/// One DynamoDB request is about to be sent.
pub fn call() {
    update(|s| s.dynamo_calls += 1);
}

/// Read capacity units a successful call consumed.
pub fn read_units(units: f64) {
    update(|s| s.read_units += units);
}

/// Write capacity units a successful call (a transaction, a batch write) consumed.
pub fn write_units(units: f64) {
    update(|s| s.write_units += units);
}

/// A sequential wave of DynamoDB calls took `d` of wall time.
pub fn store_wave(d: Duration) {
    update(|s| {
        s.dynamo_waves += 1;
        s.store_wait += d;
    });
}

/// The model (with whatever ran beside it) took `d` of wall time.
pub fn model_wait(d: Duration) {
    update(|s| s.model_wait += d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_adds_almost_nothing_to_the_future_it_wraps() {
        let buffer = [7u8; 16 * 1024];
        let big = async move {
            tokio::task::yield_now().await;
            call();
            usize::from(buffer[100])
        };
        let inner = std::mem::size_of_val(&big);
        let scoped = scope(big);
        // An `async fn` wrapper held the future twice over (and the request's future, tens
        // of KB, lived for the whole request): the wrapper may add bookkeeping, no copy.
        assert!(std::mem::size_of_val(&scoped) < inner + 512, "{} vs {inner}", std::mem::size_of_val(&scoped));
        let (out, stats) = scoped.await;
        assert_eq!(out, 7);
        assert_eq!(stats.dynamo_calls, 1, "the wrapped future's I/O is counted in the scope");
    }
}
