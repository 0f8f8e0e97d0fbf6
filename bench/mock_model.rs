//! The benchmark's model: an OpenAI-compatible `POST /v1/chat/completions` on loopback that
//! answers every request after a fixed delay with the same structured coaching reply and the
//! same usage, so everything else in a measurement is the service's own doing.
//!
//! `cargo run --release --example mock-model -- PORT DELAY_MS`

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

#[path = "../tests/support/completion.rs"]
mod completion;

/// About 120 tokens of reply, as a coaching answer runs.
const REPLY: &str = "Good question. Your last swings show the path still working from out to in, \
which is what starts the slice. For the next range session, make ten slow half swings where the \
downswing starts with the lead hip turning, and let the club drop to the inside before the arms \
move. Then hit five full drivers at eighty percent and watch the start line: the ball should \
start right of target and curve back. Keep grip pressure light, about four out of ten, so the \
face can close on its own. Tell me how it goes and we will check the next analysis together.";

const PROMPT_TOKENS: u32 = 700;
const COMPLETION_TOKENS: u32 = 120;

async fn complete(delay: Duration) -> Json<Value> {
    tokio::time::sleep(delay).await;
    Json(completion::completion(&completion::payload(REPLY), PROMPT_TOKENS, COMPLETION_TOKENS))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().ok_or("usage: mock-model PORT DELAY_MS")?.parse()?;
    let delay = Duration::from_millis(args.next().unwrap_or_else(|| "50".into()).parse()?);
    let app = Router::new().route("/v1/chat/completions", post(move || complete(delay)));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
