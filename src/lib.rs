//! Golf-coaching chat backend: `POST /api/chat/coaching` on API Gateway + Lambda, or locally.

pub mod account;
pub mod api;
pub mod aws;
pub mod backoff;
pub mod budget;
pub mod chat;
pub mod clock;
pub mod config;
pub mod conversation;
pub mod limits;
pub mod llm;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod prompts;
pub mod safety;
pub mod schemas;
pub mod secrets;
pub mod seed;
pub mod state;
pub mod stats;
pub mod store;
pub mod tokens;
