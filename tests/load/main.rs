//! Load and fault tests at the shipped defaults, in a binary of their own: `scripts/test` runs
//! it after the main suite, so a burst of a hundred golfers is measured against DynamoDB
//! Local, not against the rest of the suite sharing it. Same helpers as `tests/api`.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "a test crate: a panic is how a test fails, and load tests print their figures")]

/// The service runs in this process: with the allocator `coach-api` ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../api/dynamo_proxy.rs"]
#[allow(dead_code, reason = "shared by tests/api and tests/load; each uses part of it")]
mod dynamo_proxy;
#[path = "../api/helpers.rs"]
#[allow(dead_code, reason = "shared with tests/api; this binary uses part of it")]
mod helpers;
#[path = "../api/logs.rs"]
mod logs;

mod budget;
mod bursts;
mod faults;
mod limits;
