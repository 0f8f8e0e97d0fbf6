//! `spawn_app()`: a fresh pair of tables on DynamoDB Local, a mock OpenAI-compatible model on
//! loopback, and the real Router served on a loopback port.

use std::net::SocketAddr;
use std::sync::{Arc, Once};

use coach_api::api;
use coach_api::config::{AuthMode, Config};
use coach_api::llm::settings::BreakerConfig;
use coach_api::state::{AppState, Overrides, Warm};
use coach_api::store::Store;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const MODEL_PATH: &str = "/v1/chat/completions";

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub model: MockServer,
    pub config: Config,
    pub state: AppState,
    /// The EMF lines the service emitted, one per request.
    pub emf: Arc<std::sync::Mutex<Vec<String>>>,
}

static TRACING: Once = Once::new();

/// Tracing output only with TEST_LOG set; the log-capture layer is installed by `logs`.
fn init_tracing() {
    TRACING.call_once(crate::logs::install);
}

pub fn dynamodb_endpoint() -> String {
    match std::env::var("DYNAMODB_ENDPOINT") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("DYNAMODB_ENDPOINT is not set: run the tests with scripts/test, which starts DynamoDB Local"),
    }
}

#[path = "../support/completion.rs"]
pub mod completion;
pub use completion::{completion, payload};

pub fn ok_reply(reply: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(&payload(reply), 700, 120))
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_full(adjust, BreakerConfig::default()).await
}

/// An app whose breaker opens after three failures in a row and stays open `open_for`, with
/// three quick attempts a message: the breaker tests' setting.
pub async fn spawn_with_quick_breaker(open_for: std::time::Duration) -> TestApp {
    let breaker = BreakerConfig { consecutive: 3, ratio: 1.0, min_calls: 100, window: std::time::Duration::from_secs(30), open_for };
    let quick = |c: &mut Config| {
        c.model.max_attempts = 3;
        c.model.backoff_base = std::time::Duration::from_millis(5);
    };
    spawn_full(quick, breaker).await
}

pub async fn spawn_full(adjust: impl FnOnce(&mut Config), breaker: BreakerConfig) -> TestApp {
    init_tracing();
    let model = MockServer::start().await;
    // The default answer; tests mount their own with a higher priority (lower number).
    Mock::given(method("POST")).and(path(MODEL_PATH)).respond_with(ok_reply("Keep your tempo smooth: count one-two on the backswing.")).with_priority(10).mount(&model).await;

    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let mut config = Config {
        table_coaching: format!("coaching-conversations-{}", &suffix[..12]),
        table_analyses: format!("golf-coach-analyses-{}", &suffix[..12]),
        dynamodb_endpoint: Some(dynamodb_endpoint()),
        auth_mode: AuthMode::Local,
        ..Config::default()
    };
    config.model.base_url = Some(format!("{}/v1", model.uri()));
    config.model.api_key = Some("sk-test-not-a-real-key".to_string().into());
    config.model.attempt_timeout = std::time::Duration::from_secs(5);
    config.request_time_limit = std::time::Duration::from_secs(10);
    config.deadline_margin = std::time::Duration::from_millis(500);
    config.limits.ip_requests_per_hour = 10_000;
    config.breaker = breaker;
    config.log_hash_key = "test-key".to_string().into();
    adjust(&mut config);

    // The same constructor as `main`, with the test's metrics sink and a clock it can move.
    let emf = Arc::new(std::sync::Mutex::new(vec![]));
    let overrides = Overrides { metrics: coach_api::metrics::Sink::Memory(emf.clone()), clock: coach_api::clock::Clock::Offset(Default::default()) };
    let state = AppState::build(config.clone(), Warm::Now, overrides).await.unwrap_or_else(|e| panic!("{e}"));
    let store = state.store.clone();
    if let Err(e) = store.create_tables().await {
        panic!("creating test tables on DynamoDB Local failed: {e}");
    }
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let router = api::router(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    TestApp {
        url: format!("http://{addr}"),
        http: reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap_or_default(),
        store,
        model,
        config,
        state,
        emf,
    }
}

impl TestApp {
    pub async fn seed(&self) {
        if let Err(e) = coach_api::seed::seed(&self.store, 0, &[], self.state.clock.now()).await {
            panic!("seeding: {e}");
        }
    }

    /// POSTs a JSON body to the chat route as `user` (AUTH_MODE=local's X-User-Id).
    pub async fn chat(&self, user: &str, body: &Value) -> reqwest::Response {
        self.post(api::CHAT_PATH, user, body).await
    }

    /// POSTs a chat body to `path` as `user`; the user and the message are what the log scan
    /// must never find.
    pub async fn post(&self, path: &str, user: &str, body: &Value) -> reqwest::Response {
        crate::logs::sensitive(user);
        if let Some(m) = body["message"].as_str() {
            crate::logs::sensitive(m);
        }
        self.http.post(format!("{}{path}", self.url)).header("x-user-id", user).json(body).send().await.unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// POSTs and returns (status, JSON body).
    pub async fn chat_json(&self, user: &str, body: &Value) -> (u16, Value) {
        let r = self.chat(user, body).await;
        let status = r.status().as_u16();
        let v = r.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// Requests the mock model received, as JSON bodies.
    pub async fn model_requests(&self) -> Vec<Value> {
        self.model.received_requests().await.unwrap_or_default().iter().filter(|r| r.url.path() == MODEL_PATH).filter_map(|r| serde_json::from_slice(&r.body).ok()).collect()
    }

    /// A stored item of the coaching table, raw.
    pub async fn raw_item(&self, key: &str) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        self.store
            .client()
            .get_item()
            .table_name(self.store.table())
            .key("conversation_id", aws_sdk_dynamodb::types::AttributeValue::S(key.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get_item: {e:?}"))
            .item
    }

    /// The golfer's request count of the current hour (their quota item).
    pub async fn hour_count(&self, user: &str) -> i64 {
        let now = self.state.clock.now();
        self.number(&coach_api::store::keys::user_quota(&uid(user), now), &coach_api::store::counters::hour_attr(now)).await
    }

    /// The golfer's spend of the day in micro-dollars (their quota item).
    pub async fn day_spend(&self, user: &str) -> i64 {
        self.number(&coach_api::store::keys::user_quota(&uid(user), self.state.clock.now()), "spend_micro").await
    }

    /// The golfer's tokens of the day (their quota item).
    pub async fn day_tokens(&self, user: &str) -> i64 {
        self.number(&coach_api::store::keys::user_quota(&uid(user), self.state.clock.now()), "tokens").await
    }

    /// What this process holds of today's global budget: reserved by requests in flight plus
    /// spent by the settled ones (what it leased, less what is left of its slices).
    pub async fn global_held(&self) -> i64 {
        self.state.budget.held(&coach_api::clock::day_key(self.state.clock.now())).await
    }

    /// An integer attribute of a stored item (0 when absent).
    pub async fn number(&self, key: &str, attr: &str) -> i64 {
        self.raw_item(key).await.and_then(|i| i.get(attr).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())).unwrap_or(0)
    }
}

/// Every message content the model was sent, joined.
pub fn prompt_text(request: &Value) -> String {
    request["messages"].as_array().map(|ms| ms.iter().filter_map(|m| m["content"].as_str()).collect::<Vec<_>>().join("\n")).unwrap_or_default()
}

pub fn assert_valid(validator: &jsonschema::Validator, v: &Value) {
    let errors: Vec<String> = validator.iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "schema violations: {errors:?} in {v}");
}

pub fn schemas() -> &'static coach_api::schemas::Schemas {
    coach_api::schemas::get().unwrap_or_else(|e| panic!("{e}"))
}

/// Checks one EMF line against the Embedded Metric Format specification's structure: `_aws`
/// with an integer `Timestamp` and `CloudWatchMetrics` directives, each with a `Namespace`,
/// `Dimensions` (sets of at most 30 keys present as top-level strings) and `Metrics` (at
/// most 100, each named, with a valid unit, present as a top-level number).
pub fn assert_emf(line: &str) -> Value {
    const UNITS: [&str; 6] = ["Count", "Milliseconds", "Percent", "None", "Seconds", "Bytes"];
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("EMF line is not JSON: {e}: {line}"));
    let aws = &v["_aws"];
    assert!(aws["Timestamp"].is_i64(), "Timestamp: {line}");
    let directives = aws["CloudWatchMetrics"].as_array().unwrap_or_else(|| panic!("CloudWatchMetrics: {line}"));
    assert!(!directives.is_empty());
    for d in directives {
        assert!(d["Namespace"].as_str().is_some_and(|n| !n.is_empty() && n.len() <= 255));
        for set in d["Dimensions"].as_array().unwrap() {
            let keys = set.as_array().unwrap();
            assert!(keys.len() <= 30);
            for k in keys {
                assert!(v[k.as_str().unwrap()].is_string(), "dimension {k} missing: {line}");
            }
        }
        let metrics = d["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().unwrap();
            assert!(UNITS.contains(&m["Unit"].as_str().unwrap_or("None")), "unit of {name}");
            assert!(v[name].is_number(), "metric {name} has no value: {line}");
        }
    }
    v
}

impl TestApp {
    pub fn emf_lines(&self) -> Vec<String> {
        self.emf.lock().unwrap().clone()
    }
}

impl TestApp {
    /// A GET or DELETE on one of the read paths as `user`; returns (status, JSON body).
    pub async fn read(&self, method: reqwest::Method, user: &str, path: &str) -> (u16, Value) {
        crate::logs::sensitive(user);
        let r = self.http.request(method, format!("{}{path}", self.url)).header("x-user-id", user).send().await.unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// An app at the shipped defaults (timeouts, limits, deadline), only pointed at DynamoDB Local
/// and the mock model: for burst, load and fault tests.
pub async fn spawn_shipped() -> TestApp {
    spawn_shipped_with(|_| {}).await
}

/// As [`spawn_shipped`], then `adjust` (a test's own subject: a smaller budget, an endpoint).
pub async fn spawn_shipped_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let shipped = Config::default();
    spawn_with(move |c| {
        c.model.attempt_timeout = shipped.model.attempt_timeout;
        c.request_time_limit = shipped.request_time_limit;
        c.deadline_margin = shipped.deadline_margin;
        c.limits = shipped.limits.clone();
        c.breaker = shipped.breaker.clone();
        c.admission_wait = shipped.admission_wait;
        adjust(c);
    })
    .await
}

impl TestApp {
    /// A client whose connections come from `127.0.0.x`: a golfer with an address of its own,
    /// so per-IP limits apply at their shipped values.
    pub fn client_from(&self, x: u8) -> reqwest::Client {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, x));
        reqwest::Client::builder()
            .local_address(ip)
            .timeout(std::time::Duration::from_secs(60))
            // Plain HTTP on loopback: no roots. Loading the system's (a directory of PEM files) for
            // each of a burst's hundred clients was a fifth of the test process's CPU, taken
            // from the two cores DynamoDB Local needs.
            .tls_certs_only([])
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"))
    }
}

pub fn uid(user: &str) -> coach_api::models::UserId {
    coach_api::models::UserId::try_from(user.to_string()).unwrap_or_else(|e| panic!("{user}: {e}"))
}

/// The model answers every request after `delay` (priority over the default answer).
pub async fn slow_model(app: &TestApp, delay: std::time::Duration) {
    Mock::given(method("POST"))
        .and(path(MODEL_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion(&payload("Smooth tempo: count one-two."), 700, 120)).set_delay(delay))
        .with_priority(1)
        .mount(&app.model)
        .await;
}

/// An app whose configured model is the table's row `name`.
pub async fn spawn_model(name: &'static str) -> TestApp {
    spawn_with(move |c| {
        c.model.model = name.to_string();
        c.model.spec = coach_api::llm::table::spec(name).unwrap();
        c.limits.prices = c.model.spec.prices;
    })
    .await
}

/// Moves the app's clock (the coach's too) to `day` at noon UTC.
pub fn on_day(app: &TestApp, day: &str) {
    let noon = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap().and_hms_opt(12, 0, 0).unwrap().and_utc();
    app.state.clock.advance(noon - app.state.clock.now());
}
