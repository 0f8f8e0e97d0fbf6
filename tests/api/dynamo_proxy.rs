//! A loopback proxy speaking DynamoDB's JSON protocol, between the service and DynamoDB
//! Local. It records every call (action, tables, indexes, a transaction's item actions) and
//! injects what DynamoDB Local never does: throttling (ProvisionedThroughputExceeded, or a
//! transaction cancelled with ThrottlingError), transactions cancelled for a TransactionConflict,
//! a 500 after the write was applied (the answer lost), and added latency. It also counts the
//! calls it holds at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// One call as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub action: String,
    /// (table, index) for every table the call names; the index when it queries one.
    pub resources: Vec<(String, Option<String>)>,
    /// For TransactWriteItems: each item's kind (Put, Update, Delete, ConditionCheck) and table.
    pub items: Vec<(String, String)>,
    /// The fault injected instead of (or after) forwarding, if any.
    pub fault: Option<&'static str>,
}

/// Fault rates, each a share of calls (conflicts: of transactions; lost answers: of writes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub throttle: f64,
    pub conflict: f64,
    pub lost_answer: f64,
    pub latency: Duration,
}

struct Inner {
    upstream: String,
    http: reqwest::Client,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    calls: Mutex<Vec<Call>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// One call held by the proxy, from its arrival until its answer is ready (whether or not the
/// caller still waits for it).
struct Held(Arc<Inner>);

impl Held {
    fn new(inner: &Arc<Inner>) -> Self {
        let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.most_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(inner.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct DynamoProxy {
    pub endpoint: String,
    inner: Arc<Inner>,
}

impl DynamoProxy {
    pub async fn start(upstream: &str, seed: u64) -> Self {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            calls: Mutex::new(vec![]),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { endpoint, inner }
    }

    pub fn set_faults(&self, f: Faults) {
        *self.inner.faults.lock().unwrap() = f;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// The most calls the proxy held at once since it started.
    pub fn most_in_flight(&self) -> usize {
        self.inner.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn clear(&self) {
        self.inner.calls.lock().unwrap().clear();
    }
}

fn error(status: StatusCode, kind: &str, extra: Value) -> Response {
    let mut body = json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": kind });
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    (status, [("content-type", "application/x-amz-json-1.0")], body.to_string()).into_response()
}

/// A transaction cancelled with `code` for one of its items ("None" for the others).
fn cancelled(items: usize, code: &str, which: usize) -> Response {
    let reasons: Vec<Value> = (0..items.max(1)).map(|i| if i == which { json!({ "Code": code, "Message": code }) } else { json!({ "Code": "None" }) }).collect();
    error(StatusCode::BAD_REQUEST, "TransactionCanceledException", json!({ "CancellationReasons": reasons }))
}

/// As DynamoDB does, the proxy goes on with a call whose caller hung up: the call is counted in
/// flight, and forwarded, until its answer is ready.
async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let held = Held::new(&inner);
    let work = tokio::spawn(async move {
        let _held = held;
        proxied(inner, headers, body).await
    });
    work.await.unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", json!({})))
}

async fn proxied(inner: Arc<Inner>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let action = target.rsplit('.').next().unwrap_or_default().to_string();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (resources, items) = describe(&action, &request);
    let faults = *inner.faults.lock().unwrap();
    let (roll, which) = {
        let mut rng = inner.rng.lock().unwrap();
        (rng.random::<f64>(), rng.random_range(0..items.len().max(1)))
    };
    let write = matches!(action.as_str(), "TransactWriteItems" | "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem");
    let transaction = action == "TransactWriteItems";
    let fault = if roll < faults.throttle {
        Some("throttled")
    } else if transaction && roll < faults.throttle + faults.conflict {
        Some("conflict")
    } else if write && roll < faults.throttle + faults.conflict + faults.lost_answer {
        Some("lost answer")
    } else {
        None
    };
    inner.calls.lock().unwrap().push(Call { action: action.clone(), resources, items: items.clone(), fault });
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    match fault {
        Some("throttled") if transaction => return cancelled(items.len(), "ThrottlingError", which),
        Some("throttled") => return error(StatusCode::BAD_REQUEST, "ProvisionedThroughputExceededException", json!({})),
        Some("conflict") => return cancelled(items.len(), "TransactionConflict", which),
        _ => {}
    }
    let mut forward = inner.http.post(&inner.upstream).body(body);
    for (name, value) in headers.iter().filter(|(n, _)| n.as_str() != "host" && n.as_str() != "content-length") {
        forward = forward.header(name, value);
    }
    let Ok(answer) = forward.send().await else { return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", json!({})) };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if let (Ok(n), Ok(v)) = (axum::http::HeaderName::from_bytes(name.as_str().as_bytes()), axum::http::HeaderValue::from_bytes(value.as_bytes())) {
            out.insert(n, v);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    if fault == Some("lost answer") && status.is_success() {
        // DynamoDB applied it; the caller hears a server error.
        return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", json!({}));
    }
    out.remove("content-length");
    (status, out, bytes).into_response()
}

/// (table, index) pairs a call names, and a transaction's (item kind, table) pairs.
type Described = (Vec<(String, Option<String>)>, Vec<(String, String)>);

/// The tables (and index) a request names, and a transaction's item actions.
fn describe(action: &str, r: &Value) -> Described {
    let s = |v: &Value| v.as_str().map(str::to_string);
    match action {
        "BatchGetItem" | "BatchWriteItem" => {
            let tables = r["RequestItems"].as_object().map(|m| m.keys().map(|t| (t.clone(), None)).collect()).unwrap_or_default();
            (tables, vec![])
        }
        "TransactWriteItems" | "TransactGetItems" => {
            let items: Vec<(String, String)> = r["TransactItems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_object()?.iter().next().map(|(kind, body)| (kind.clone(), s(&body["TableName"]).unwrap_or_default())))
                .collect();
            (items.iter().map(|(_, t)| (t.clone(), None)).collect(), items)
        }
        _ => (s(&r["TableName"]).map(|t| vec![(t, s(&r["IndexName"]))]).unwrap_or_default(), vec![]),
    }
}
