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

/// One golfer's answer in a burst: who asked, the status and body, and how long it took.
pub struct Answer {
    pub user: String,
    pub status: u16,
    pub body: serde_json::Value,
    pub took: std::time::Duration,
}

/// One message from each of `golfers` golfers (`{prefix}-NN`) at once, each from its own
/// loopback address, in the golfers' order.
pub async fn at_once(app: &helpers::TestApp, prefix: &str, golfers: usize, body: impl Fn(&str) -> serde_json::Value) -> Vec<Answer> {
    let asks = (0..golfers).map(|g| {
        let client = app.client_from(u8::try_from(2 + g).unwrap());
        let url = format!("{}{}", app.url, coach_api::api::CHAT_PATH);
        let user = format!("{prefix}-{g:02}");
        logs::sensitive(&user);
        let body = body(&user);
        async move {
            let started = std::time::Instant::now();
            let r = client.post(url).header("x-user-id", &user).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.json().await.unwrap_or(serde_json::Value::Null);
            Answer { user, status, body, took: started.elapsed() }
        }
    });
    futures::future::join_all(asks).await
}

mod budget;
mod bursts;
mod faults;
mod limits;
