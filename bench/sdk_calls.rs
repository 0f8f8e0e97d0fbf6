//! What one DynamoDB call costs this process, and how much of it is the AWS SDK's own.
//!
//! A stand-in for DynamoDB on loopback (its own thread and runtime) answers every call at
//! once with fixed bytes: a GetItem with one small item, a Query with 20 turns of about
//! 2 KB. The calls are sent one after another from a current-thread runtime on the main
//! thread, as `serve` runs, and the main thread's own CPU time (`/proc/thread-self/schedstat`,
//! nanoseconds) is divided by the calls. The stand-in's CPU is on its own thread and not
//! counted.
//!
//! The rows:
//! - `http`: the same request bytes POSTed with reqwest and the answer read and parsed as JSON:
//!   the transport and parsing a call needs whatever sends it.
//! - `sdk as shipped`: the client `Store::connect` builds (retries, the endpoint rules, signing).
//! - variants of it that change one setting each, to see whether a setting is worth its CPU.
//!
//! `cargo run --release --example sdk-calls [CALLS]` (`bench/README.md`, "The SDK's floor").

use std::time::Duration;

use aws_sdk_dynamodb::config::endpoint::{Endpoint, EndpointFuture, Params, ResolveEndpoint};
use aws_sdk_dynamodb::types::AttributeValue;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;

// As `coach-api` ships: the allocator is part of what a call costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The stand-in's answers: the body of a GetItem, and of a Query of `n` turns.
fn get_item_body() -> String {
    serde_json::json!({
        "Item": {
            "pk": {"S": "USER#golfer-0001"}, "sk": {"S": "USAGE#2026-12-03"},
            "requests": {"N": "7"}, "tokens": {"N": "7350"}, "cost": {"N": "1290"},
            "hour": {"S": "2026-12-03T04"}, "hourCount": {"N": "3"}, "ttl": {"N": "1796000000"}
        }
    })
    .to_string()
}

fn query_body(n: usize) -> String {
    let text = "Keep the lead wrist flat at the top and feel the club shallow on the way down. ".repeat(24);
    let items: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({
                "pk": {"S": "USER#golfer-0001"}, "sk": {"S": format!("CONV#c1#MSG#{i:06}")},
                "role": {"S": if i % 2 == 0 { "user" } else { "assistant" }},
                "content": {"S": text}, "tokens": {"N": "410"},
                "createdAt": {"S": "2026-12-03T04:00:00Z"}, "promptVersion": {"S": "coach-v3"},
                "model": {"S": "gpt-4o"}, "variant": {"S": "base"}
            })
        })
        .collect();
    serde_json::json!({"Items": items, "Count": n, "ScannedCount": n}).to_string()
}

/// The stand-in, on its own thread and runtime; returns its address.
fn stand_in() -> std::io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let get = get_item_body();
    let query = query_body(20);
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let app = Router::new().route(
                "/",
                post(move |headers: HeaderMap| {
                    let body = match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
                        Some(t) if t.ends_with(".Query") => query.clone(),
                        _ => get.clone(),
                    };
                    async move { ([("content-type", "application/x-amz-json-1.0")], body) }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(addr)
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat").ok().and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok())).unwrap_or(0);
    Duration::from_nanos(ns)
}

/// The endpoint, fixed: what the rules resolve to when an endpoint URL is configured.
#[derive(Debug)]
struct Fixed(String);

impl ResolveEndpoint for Fixed {
    fn resolve_endpoint<'a>(&'a self, _params: &'a Params) -> EndpointFuture<'a> {
        EndpointFuture::ready(Ok(Endpoint::builder().url(self.0.clone()).build()))
    }
}

enum Call {
    Get,
    Query,
}

async fn sdk_call(client: &aws_sdk_dynamodb::Client, call: &Call) -> bool {
    match call {
        Call::Get => client
            .get_item()
            .table_name("coaching-conversations")
            .key("pk", AttributeValue::S("USER#golfer-0001".into()))
            .key("sk", AttributeValue::S("USAGE#2026-12-03".into()))
            .consistent_read(true)
            .send()
            .await
            .map(|o| o.item.is_some())
            .unwrap_or(false),
        Call::Query => client
            .query()
            .table_name("coaching-conversations")
            .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
            .expression_attribute_values(":pk", AttributeValue::S("USER#golfer-0001".into()))
            .expression_attribute_values(":sk", AttributeValue::S("CONV#c1#MSG#".into()))
            .scan_index_forward(false)
            .limit(20)
            .send()
            .await
            .map(|o| o.items.is_some_and(|i| i.len() == 20))
            .unwrap_or(false),
    }
}

async fn http_call(http: &reqwest::Client, url: &str, call: &Call) -> bool {
    let (target, body) = match call {
        Call::Get => {
            ("DynamoDB_20120810.GetItem", r#"{"TableName":"coaching-conversations","Key":{"pk":{"S":"USER#golfer-0001"},"sk":{"S":"USAGE#2026-12-03"}},"ConsistentRead":true}"#)
        }
        Call::Query => (
            "DynamoDB_20120810.Query",
            r#"{"TableName":"coaching-conversations","KeyConditionExpression":"pk = :pk AND begins_with(sk, :sk)","ExpressionAttributeValues":{":pk":{"S":"USER#golfer-0001"},":sk":{"S":"CONV#c1#MSG#"}},"ScanIndexForward":false,"Limit":20}"#,
        ),
    };
    let Ok(response) = http.post(url).header("content-type", "application/x-amz-json-1.0").header("x-amz-target", target).body(body).send().await else {
        return false;
    };
    let Ok(bytes) = response.bytes().await else { return false };
    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
}

/// CPU per call in microseconds, the median of three rounds of `calls`, after a warm-up.
async fn measure<F: AsyncFn() -> bool>(calls: usize, f: F) -> Option<f64> {
    for _ in 0..calls / 5 {
        if !f().await {
            return None;
        }
    }
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let start = thread_cpu();
        for _ in 0..calls {
            if !f().await {
                return None;
            }
        }
        rounds.push((thread_cpu() - start).as_secs_f64() * 1e6 / calls as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds.get(1).copied()
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3000);
    let addr = stand_in()?;
    let url = format!("http://{addr}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        // No credentials named: the store then signs with fixed local ones, as against DynamoDB Local.
        let vars = [("DYNAMODB_ENDPOINT", url.clone()), ("AWS_REGION", "us-east-1".into())];
        let config = coach_api::config::Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))?;
        let shipped = coach_api::store::Store::connect(&config).await;
        let conf = shipped.client().config().clone();
        let variants: Vec<(&str, aws_sdk_dynamodb::Client)> = vec![
            ("sdk as shipped", shipped.client().clone()),
            ("sdk, no retries", aws_sdk_dynamodb::Client::from_conf(conf.to_builder().retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()).build())),
            ("sdk, fixed endpoint", aws_sdk_dynamodb::Client::from_conf(conf.to_builder().endpoint_resolver(Fixed(url.clone())).build())),
        ];
        let http = reqwest::Client::new();
        println!("| call | sender | CPU per call (µs) |");
        println!("|---|---|---|");
        for (name, call) in [("GetItem, one item", Call::Get), ("Query, 20 turns of ~2 KB", Call::Query)] {
            let figure = measure(calls, async || http_call(&http, &url, &call).await).await;
            println!("| {name} | http + JSON | {} |", shown(figure));
            for (variant, client) in &variants {
                let figure = measure(calls, async || sdk_call(client, &call).await).await;
                println!("| {name} | {variant} | {} |", shown(figure));
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

fn shown(figure: Option<f64>) -> String {
    figure.map_or_else(|| "failed".into(), |us| format!("{us:.1}"))
}
