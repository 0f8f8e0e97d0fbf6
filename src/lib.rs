//! Golf-coaching chat backend: `POST /api/chat/coaching` on API Gateway + Lambda, or locally.

pub mod config;
pub mod context;
pub mod models;
pub mod prompts;
pub mod store;
pub mod tokens;
