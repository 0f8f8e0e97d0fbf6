//! The integration suite: one binary, each module a concern. Every test runs against
//! DynamoDB Local (started by scripts/test) and a mock model on loopback.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "a test crate: a panic is how a test fails, and load tests print their figures")]

/// The service runs in this process: with the allocator `coach-api` ships with (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod chat;
#[allow(dead_code, reason = "shared by tests/api and tests/load; each uses part of it")]
mod dynamo_proxy;
mod feedback;
mod generated;
#[allow(dead_code, reason = "shared by tests/api and tests/load; each uses part of it")]
mod helpers;
mod iam;
mod lambda;
mod limits;
mod logs;
mod memory;
mod models;
mod money;
mod reads;
mod resilience;
mod secrets;
mod security;
mod stream;
#[allow(dead_code, reason = "each test uses part of it")]
mod stream_model;
mod tables;
mod validation;
