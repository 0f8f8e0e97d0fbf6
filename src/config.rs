//! Typed configuration, and the only reader of the process environment. The variables' names
//! are a contract with operators and the infra (README, "Configuration"). [`VARS`] is the table of every variable: `from_lookup` parses
//! through it, and the list the infra test and the README check against is derived from it.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::aws::AwsEnv;
use crate::limits::Limits;
use crate::llm::settings::{BreakerConfig, ModelConfig};
use crate::llm::table::ModelTableError;

/// The log-hash key outside Lambda. It is public (it is here), so inside Lambda the service
/// refuses to start with it: hashed ids and IPs could be reversed by anyone.
pub const DEFAULT_LOG_HASH_KEY: &str = "coach-api";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The caller is `claims.sub` from the API Gateway Cognito authorizer.
    Cognito,
    /// The caller is the `X-User-Id` header: local runs and tests only.
    Local,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cognito => "cognito",
            Self::Local => "local",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table_coaching: String,
    pub table_analyses: String,
    pub dynamodb_endpoint: Option<String>,
    /// A local stand-in for Secrets Manager (tests); AWS's when `None`.
    pub secrets_endpoint: Option<String>,
    pub aws: AwsEnv,
    pub model: ModelConfig,
    pub breaker: BreakerConfig,
    pub limits: Limits,
    pub auth_mode: AuthMode,
    pub port: u16,
    /// Threads of the async runtime: 1 is a current-thread runtime (the default; Lambda
    /// answers one request at a time), more a work-stealing one.
    pub worker_threads: usize,
    /// DynamoDB calls in flight at once; more wait for one to finish (within their deadline).
    pub dynamodb_max_calls: usize,
    pub cors_origins: Vec<String>,
    /// Turns kept verbatim on a conversation item before older ones fold into the summary.
    pub max_recent_messages: usize,
    /// The length the system prompt asks replies to stay under.
    pub reply_word_limit: u32,
    /// Templates from this folder instead of the ones built into the binary.
    pub prompts_dir: Option<PathBuf>,
    /// Key of the keyed hashes that stand for ids in logs.
    pub log_hash_key: SecretString,
    /// JSON log lines (always inside Lambda).
    pub log_json: bool,
    /// The tracing filter (`RUST_LOG`).
    pub log_filter: String,
    /// Running inside Lambda (`AWS_LAMBDA_RUNTIME_API` is set).
    pub in_lambda: bool,
    /// Inside Lambda, answer in Lambda's streaming response mode (the function behind the
    /// streamed route); otherwise buffered.
    pub lambda_streaming: bool,
    /// Total time a request may take, when no Lambda deadline is known (local serve).
    pub request_time_limit: Duration,
    /// Kept free before the Lambda deadline to store the turn and answer.
    pub deadline_margin: Duration,
    /// How long a request may wait for admission and its context (the first DynamoDB wave)
    /// before it is refused with 503, without calling the model: excess load is refused early.
    pub admission_wait: Duration,
    /// `coach-api serve` runs this many seconds ahead of (or behind) the system clock, for
    /// local trials across midnight or an hour; refused inside Lambda.
    pub clock_offset_secs: i64,
    /// The prompt variant tried on a share of golfers (`EXPERIMENT=NAME:PERCENT`), and its
    /// share in basis points; `None` (unset, or a share of 0) is the kill switch.
    pub experiment: Option<(String, u32)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            table_coaching: "coaching-conversations".into(),
            table_analyses: "golf-coach-analyses".into(),
            dynamodb_endpoint: None,
            secrets_endpoint: None,
            aws: AwsEnv::default(),
            model: ModelConfig::default(),
            breaker: BreakerConfig::default(),
            limits: Limits::default(),
            auth_mode: AuthMode::Cognito,
            port: 3000,
            worker_threads: 1,
            dynamodb_max_calls: 32,
            cors_origins: vec![],
            max_recent_messages: 20,
            reply_word_limit: 150,
            prompts_dir: None,
            log_hash_key: SecretString::from(DEFAULT_LOG_HASH_KEY),
            log_json: false,
            log_filter: "info".into(),
            in_lambda: false,
            lambda_streaming: false,
            request_time_limit: Duration::from_secs(25),
            deadline_margin: Duration::from_millis(2500),
            admission_wait: Duration::from_secs(3),
            clock_offset_secs: 0,
            experiment: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("AUTH_MODE=local trusts a header for identity and is refused inside Lambda; set ALLOW_LOCAL_AUTH_IN_LAMBDA=true only for a test stage")]
    LocalAuthInLambda,
    #[error(transparent)]
    ModelTable(#[from] ModelTableError),
    #[error("CLOCK_OFFSET_SECONDS moves the service's clock for local trials and is refused inside Lambda: quotas and spend would land on the wrong hour and day")]
    ClockOffsetInLambda,
}

/// One environment variable: its name, its default, what it means, and how it sets the
/// configuration (a non-empty, trimmed value; empty counts as unset). A setter sets only its
/// own setting; what follows from several variables is worked out once all are read
/// (`Config::from_lookup`), so their order does not matter.
pub struct EnvVar {
    pub name: &'static str,
    default: Shown,
    pub meaning: &'static str,
    set: fn(&mut Config, &'static str, &str) -> Result<(), ConfigError>,
}

/// A variable's default as the README shows it: the value `Config::default()` holds (the
/// only place a default is written down), or what stands in when it is unset.
enum Shown {
    Value(fn(&Config) -> String),
    Unset(&'static str),
}

impl EnvVar {
    /// The default as an operator reads it (Markdown).
    pub fn default(&self) -> String {
        match &self.default {
            Shown::Value(show) => format!("`{}`", show(&Config::default())),
            Shown::Unset(what) => (*what).to_string(),
        }
    }
}

const UNSET: Shown = Shown::Unset("unset");

fn nothing(_: &mut Config, _: &'static str, _: &str) -> Result<(), ConfigError> {
    Ok(())
}

/// Every variable the service reads, in the README's order.
pub static VARS: &[EnvVar] = &[
    EnvVar { name: "OPENAI_API_KEY", default: UNSET, meaning: "model API key for local runs (in AWS: `OPENAI_SECRET_ARN`, never in the environment)",
        set: |c, _, v| { c.model.api_key = Some(SecretString::from(v)); Ok(()) } },
    EnvVar { name: "OPENAI_SECRET_ARN", default: UNSET, meaning: "Secrets Manager secret with `api_key` and `log_hash_key` (JSON), read at start and again after a 401: how the key reaches the function in AWS",
        set: |c, _, v| { c.model.secret_arn = Some(v.into()); Ok(()) } },
    EnvVar { name: "SECRETS_ENDPOINT", default: Shown::Unset("AWS"), meaning: "a local stand-in for Secrets Manager (tests)",
        set: |c, _, v| { c.secrets_endpoint = Some(v.into()); Ok(()) } },
    EnvVar { name: "OPENAI_BASE_URL", default: Shown::Unset("OpenAI"), meaning: "any OpenAI-compatible endpoint, e.g. `http://host/v1`",
        set: |c, _, v| { c.model.base_url = Some(v.into()); Ok(()) } },
    EnvVar { name: "OPENAI_MODEL", default: Shown::Value(|c| c.model.model.clone()), meaning: "a row of `prompts/models.json` (prices, parameters, shutdown date and replacement); reported as `source`; a model not listed refuses to start; from its shutdown date on, or once the provider says it is gone, its replacement is called",
        set: |c, _, v| { c.model.model = v.into(); Ok(()) } },
    EnvVar { name: "DYNAMODB_TABLE_COACHING", default: Shown::Value(|c| c.table_coaching.clone()), meaning: "the single table",
        set: |c, _, v| { c.table_coaching = v.into(); Ok(()) } },
    EnvVar { name: "DYNAMODB_TABLE_ANALYSES", default: Shown::Value(|c| c.table_analyses.clone()), meaning: "swing analyses (read-only)",
        set: |c, _, v| { c.table_analyses = v.into(); Ok(()) } },
    EnvVar { name: "DYNAMODB_ENDPOINT", default: Shown::Unset("AWS"), meaning: "e.g. DynamoDB Local's `http://127.0.0.1:8000`",
        set: |c, _, v| { c.dynamodb_endpoint = Some(v.into()); Ok(()) } },
    EnvVar { name: "ADMISSION_WAIT_MS", default: Shown::Value(|c| c.admission_wait.as_millis().to_string()), meaning: "how long a message may wait for admission and its context before a 503 (the model is not called); every other wait derives from the request's deadline",
        set: |c, n, v| { c.admission_wait = Duration::from_millis(number(n, v)?); Ok(()) } },
    EnvVar { name: "TOKEN_LIMIT_PER_REQUEST", default: Shown::Value(|c| c.limits.token_limit_per_request.to_string()), meaning: "prompt + reply tokens, hard limit",
        set: |c, n, v| { c.limits.token_limit_per_request = number(n, v)?; Ok(()) } },
    EnvVar { name: "MAX_REPLY_TOKENS", default: Shown::Value(|c| c.limits.max_reply_tokens.to_string()), meaning: "`max_tokens` sent with every model call",
        set: |c, n, v| { c.limits.max_reply_tokens = number(n, v)?; Ok(()) } },
    EnvVar { name: "RATE_LIMIT_PER_HOUR", default: Shown::Value(|c| c.limits.requests_per_hour.to_string()), meaning: "messages per golfer per clock hour",
        set: |c, n, v| { c.limits.requests_per_hour = number(n, v)?; Ok(()) } },
    EnvVar { name: "IP_RATE_LIMIT_PER_HOUR", default: Shown::Value(|c| c.limits.ip_requests_per_hour.to_string()), meaning: "messages per client IP per clock hour",
        set: |c, n, v| { c.limits.ip_requests_per_hour = number(n, v)?; Ok(()) } },
    EnvVar { name: "COST_LIMIT_PER_USER", default: Shown::Value(|c| crate::limits::dollars_text(c.limits.spend_per_user_day_micro)), meaning: "dollars per golfer per UTC day",
        set: |c, n, v| { c.limits.spend_per_user_day_micro = dollars(n, v)?; Ok(()) } },
    EnvVar { name: "COST_LIMIT_TOTAL", default: Shown::Value(|c| crate::limits::dollars_text(c.limits.spend_total_day_micro)), meaning: "dollars for everyone per UTC day",
        set: |c, n, v| { c.limits.spend_total_day_micro = dollars(n, v)?; Ok(()) } },
    EnvVar { name: "AUTH_MODE", default: Shown::Value(|c| c.auth_mode.as_str().to_string()), meaning: "`cognito` (claims.sub) or `local` (`X-User-Id`; refused inside Lambda)",
        set: |c, n, v| {
            c.auth_mode = match v {
                "cognito" => AuthMode::Cognito,
                "local" => AuthMode::Local,
                other => return Err(ConfigError::Invalid { name: n, problem: format!("expected cognito or local, got {other}") }),
            };
            Ok(())
        } },
    EnvVar { name: "ALLOW_LOCAL_AUTH_IN_LAMBDA", default: UNSET, meaning: "`true` lets `AUTH_MODE=local` run in Lambda (a test stage only)",
        set: nothing },
    EnvVar { name: "CORS_ALLOWED_ORIGINS", default: Shown::Unset("none"), meaning: "comma-separated origins; no wildcard",
        set: |c, n, v| {
            c.cors_origins = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            if c.cors_origins.iter().any(|o| o == "*") {
                return Err(ConfigError::Invalid { name: n, problem: "list the app's origins; a wildcard is not allowed".into() });
            }
            Ok(())
        } },
    EnvVar { name: "MAX_RECENT_MESSAGES", default: Shown::Value(|c| c.max_recent_messages.to_string()), meaning: "turns kept verbatim before older ones fold into a summary",
        set: |c, n, v| { c.max_recent_messages = number(n, v)?; Ok(()) } },
    EnvVar { name: "REPLY_WORD_LIMIT", default: Shown::Value(|c| c.reply_word_limit.to_string()), meaning: "the reply length the system prompt asks for (`reply_word_limit` in templates)",
        set: |c, n, v| { c.reply_word_limit = number(n, v)?; Ok(()) } },
    EnvVar { name: "PROMPTS_DIR", default: Shown::Unset("embedded"), meaning: "read templates from a folder instead of the binary",
        set: |c, _, v| { c.prompts_dir = Some(PathBuf::from(v)); Ok(()) } },
    EnvVar { name: "PORT", default: Shown::Value(|c| c.port.to_string()), meaning: "`coach-api serve` port (127.0.0.1)",
        set: |c, n, v| { c.port = number(n, v)?; Ok(()) } },
    EnvVar { name: "WORKER_THREADS", default: Shown::Value(|c| c.worker_threads.to_string()), meaning: "threads of the async runtime: `1` runs every task on the main thread (a Lambda sandbox answers one request at a time; `coach-api serve` holds bench/'s load on one), more shares tasks between threads by work stealing",
        set: |c, n, v| { c.worker_threads = number::<usize>(n, v)?.max(1); Ok(()) } },
    EnvVar { name: "DYNAMODB_MAX_CALLS", default: Shown::Value(|c| c.dynamodb_max_calls.to_string()), meaning: "DynamoDB calls in flight at once from one process; more wait for a free one within their deadline (each holds a connection and its buffers; a Lambda sandbox makes at most five at once)",
        set: |c, n, v| { c.dynamodb_max_calls = number::<usize>(n, v)?.max(1); Ok(()) } },
    EnvVar { name: "CLOCK_OFFSET_SECONDS", default: Shown::Value(|c| c.clock_offset_secs.to_string()), meaning: "`coach-api serve` runs this many seconds ahead (negative: behind), e.g. to try a conversation across UTC midnight; refused inside Lambda",
        set: |c, n, v| { c.clock_offset_secs = number(n, v)?; Ok(()) } },
    EnvVar { name: "EXPERIMENT", default: UNSET, meaning: "`NAME:PERCENT`: answer that share of golfers (each always the same golfers) with the prompt variant `prompts/variants/NAME/`; `NAME:0` or unset is the kill switch",
        set: |c, n, v| { c.experiment = experiment(n, v)?; Ok(()) } },
    EnvVar { name: "LOG_HASH_KEY", default: Shown::Value(|_| DEFAULT_LOG_HASH_KEY.to_string()), meaning: "key of the hashes that stand for user ids and IPs in logs; inside Lambda it must be set (here or as the secret's `log_hash_key`): with the public default the service refuses to start",
        set: |c, _, v| { c.log_hash_key = SecretString::from(v); Ok(()) } },
    EnvVar { name: "LOG_FORMAT", default: Shown::Value(|c| if c.log_json { "json" } else { "compact" }.to_string()), meaning: "`json` for JSON log lines (always JSON inside Lambda)",
        set: |c, _, v| { c.log_json = v == "json"; Ok(()) } },
    EnvVar { name: "RUST_LOG", default: Shown::Value(|c| c.log_filter.clone()), meaning: "log filter",
        set: |c, _, v| { c.log_filter = v.into(); Ok(()) } },
    EnvVar { name: "AWS_LAMBDA_RUNTIME_API", default: UNSET, meaning: "set by Lambda: serve the Lambda runtime",
        set: |c, _, _| { c.in_lambda = true; Ok(()) } },
    EnvVar { name: "LAMBDA_RESPONSE_MODE", default: Shown::Value(|c| if c.lambda_streaming { "streaming" } else { "buffered" }.to_string()), meaning: "`streaming` for the function behind `POST /api/chat/coaching/stream` (Lambda response streaming)",
        set: |c, n, v| {
            c.lambda_streaming = match v {
                "buffered" => false,
                "streaming" => true,
                other => return Err(ConfigError::Invalid { name: n, problem: format!("expected buffered or streaming, got {other}") }),
            };
            Ok(())
        } },
    EnvVar { name: "AWS_ACCESS_KEY_ID", default: UNSET, meaning: "credentials from the environment (Lambda sets them); else the SDK's provider chain",
        set: |c, _, _| { c.aws.credentials_in_env = true; Ok(()) } },
    EnvVar { name: "AWS_REGION", default: UNSET, meaning: "the region (Lambda sets it; `us-east-1` with DynamoDB Local)",
        set: |c, _, v| { c.aws.region = Some(v.into()); Ok(()) } },
    EnvVar { name: "AWS_DEFAULT_REGION", default: UNSET, meaning: "the region when `AWS_REGION` is unset",
        set: |c, _, v| { c.aws.default_region = Some(v.into()); Ok(()) } },
    EnvVar { name: "MIMALLOC_ARENA_EAGER_COMMIT", default: UNSET, meaning: "read by the allocator at process start (bench/README.md)",
        set: nothing },
    EnvVar { name: "MIMALLOC_PURGE_DELAY", default: UNSET, meaning: "read by the allocator at process start (bench/README.md)",
        set: nothing },
];

/// Whether the service reads `name` (the deployment template may set only these).
pub fn reads(name: &str) -> bool {
    VARS.iter().any(|v| v.name == name)
}

/// The README's configuration table, rendered from [`VARS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in VARS {
        out.push_str(&format!("| `{}` | {} | {} |\n", v.name, v.default(), v.meaning));
    }
    out
}

impl Config {
    /// The clock the service runs on: the system's, or `CLOCK_OFFSET_SECONDS` away from it.
    pub fn clock(&self) -> crate::clock::Clock {
        match self.clock_offset_secs {
            0 => crate::clock::Clock::System,
            secs => crate::clock::Clock::Offset(std::sync::Arc::new(std::sync::Mutex::new(chrono::Duration::seconds(secs)))),
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let non_empty = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        for var in VARS {
            if let Some(v) = non_empty(var.name) {
                (var.set)(&mut c, var.name, &v)?;
            }
        }
        // What follows from several variables, now that all are read.
        c.log_json |= c.in_lambda; // Lambda always logs JSON
        c.model.spec = crate::llm::table::spec(&c.model.model)?;
        c.limits.prices = c.model.spec.prices;
        c.check(non_empty("ALLOW_LOCAL_AUTH_IN_LAMBDA").as_deref() == Some("true"))?;
        Ok(c)
    }

    /// Rules between variables.
    fn check(&self, allow_local_auth_in_lambda: bool) -> Result<(), ConfigError> {
        if self.in_lambda && self.auth_mode == AuthMode::Local && !allow_local_auth_in_lambda {
            return Err(ConfigError::LocalAuthInLambda);
        }
        if self.in_lambda && self.clock_offset_secs != 0 {
            return Err(ConfigError::ClockOffsetInLambda);
        }
        if self.limits.max_reply_tokens >= self.limits.token_limit_per_request {
            return Err(ConfigError::Invalid { name: "MAX_REPLY_TOKENS", problem: "must be below TOKEN_LIMIT_PER_REQUEST, or no prompt fits".into() });
        }
        Ok(())
    }
}

fn number<T: std::str::FromStr>(name: &'static str, v: &str) -> Result<T, ConfigError> {
    v.parse().map_err(|_| ConfigError::Invalid { name, problem: format!("'{v}' is not a number") })
}

/// `NAME:PERCENT` (a percent with at most two decimals) as the name and basis points; a share
/// of 0 is no experiment.
fn experiment(name: &'static str, v: &str) -> Result<Option<(String, u32)>, ConfigError> {
    let bad = || ConfigError::Invalid { name, problem: format!("'{v}' is not NAME:PERCENT (0 to 100)") };
    let (variant, percent) = v.split_once(':').ok_or_else(bad)?;
    // A percent read as a decimal amount: millionths, so a basis point is 10,000 of them.
    let millionths = crate::limits::parse_dollars(percent).map_err(|_| bad())?;
    let bp = u32::try_from(millionths / 10_000).map_err(|_| bad())?;
    let valid_name = !variant.is_empty() && variant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bp > 10_000 || millionths % 10_000 != 0 || !valid_name {
        return Err(bad());
    }
    Ok((bp > 0).then(|| (variant.to_string(), bp)))
}

/// An amount in dollars as micro-dollars (`limits::parse_dollars`).
fn dollars(name: &'static str, v: &str) -> Result<u64, ConfigError> {
    crate::limits::parse_dollars(v).map_err(|problem| ConfigError::Invalid { name, problem })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::settings::{DEFAULT_MODEL, DEFAULT_SPEC};
    use crate::llm::table::{ModelSpec, OutputLimit};
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_seed() -> Result<(), ConfigError> {
        let c = cfg(&[])?;
        assert_eq!(c.limits.token_limit_per_request, 1500);
        assert_eq!(c.limits.requests_per_hour, 15);
        assert_eq!(c.limits.spend_per_user_day_micro, 5_000_000);
        assert_eq!(c.limits.spend_total_day_micro, 100_000_000);
        assert_eq!(c.model.model, "gpt-6-luna");
        assert_eq!(c.auth_mode, AuthMode::Cognito);
        assert!(c.model.is_offline());
        assert!(!c.in_lambda && !c.log_json);
        Ok(())
    }

    #[test]
    fn the_admission_wait_is_the_only_store_setting() -> Result<(), ConfigError> {
        assert_eq!(cfg(&[])?.admission_wait, Duration::from_secs(3));
        assert_eq!(cfg(&[("ADMISSION_WAIT_MS", "1500")])?.admission_wait, Duration::from_millis(1500));
        assert!(!reads("DYNAMODB_ATTEMPT_TIMEOUT_MS"), "no fixed per-attempt timeout");
        Ok(())
    }

    #[test]
    fn local_auth_is_refused_inside_lambda_unless_allowed() {
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        assert!(matches!(cfg(&[lambda, ("AUTH_MODE", "local")]), Err(ConfigError::LocalAuthInLambda)));
        assert!(cfg(&[lambda, ("AUTH_MODE", "local"), ("ALLOW_LOCAL_AUTH_IN_LAMBDA", "true")]).is_ok());
        assert!(cfg(&[("AUTH_MODE", "local")]).is_ok());
    }

    #[test]
    fn a_clock_offset_moves_local_time_and_is_refused_inside_lambda() -> Result<(), ConfigError> {
        assert!(matches!(cfg(&[])?.clock(), crate::clock::Clock::System));
        let ahead = cfg(&[("CLOCK_OFFSET_SECONDS", "7200")])?.clock().now() - chrono::Utc::now();
        assert!((ahead - chrono::Duration::hours(2)).num_seconds().abs() <= 1, "{ahead}");
        let behind = cfg(&[("CLOCK_OFFSET_SECONDS", "-60")])?.clock().now() - chrono::Utc::now();
        assert!((behind + chrono::Duration::minutes(1)).num_seconds().abs() <= 1, "{behind}");
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        assert!(matches!(cfg(&[lambda, ("CLOCK_OFFSET_SECONDS", "60")]), Err(ConfigError::ClockOffsetInLambda)));
        assert!(cfg(&[("CLOCK_OFFSET_SECONDS", "soon")]).is_err());
        Ok(())
    }

    #[test]
    fn an_experiment_is_a_variant_and_a_share_and_zero_switches_it_off() -> Result<(), ConfigError> {
        assert_eq!(cfg(&[("EXPERIMENT", "warmer:25")])?.experiment, Some(("warmer".to_string(), 2_500)));
        assert_eq!(cfg(&[("EXPERIMENT", "warmer:12.5")])?.experiment, Some(("warmer".to_string(), 1_250)));
        assert_eq!(cfg(&[("EXPERIMENT", "warmer:0")])?.experiment, None, "the kill switch");
        assert_eq!(cfg(&[])?.experiment, None);
        for bad in ["warmer", "warmer:101", "warmer:-1", ":10", "../x:10", "warmer:0.001"] {
            assert!(cfg(&[("EXPERIMENT", bad)]).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn wildcard_cors_and_an_oversized_reply_token_limit_are_rejected() {
        assert!(cfg(&[("CORS_ALLOWED_ORIGINS", "*")]).is_err());
        assert!(cfg(&[("MAX_REPLY_TOKENS", "1500")]).is_err());
        assert!(cfg(&[("RATE_LIMIT_PER_HOUR", "many")]).is_err());
    }

    #[test]
    fn what_other_modules_once_read_themselves_comes_from_config() -> Result<(), ConfigError> {
        let c = cfg(&[
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("LOG_HASH_KEY", "k-123"),
            ("PROMPTS_DIR", "/tmp/prompts"),
            ("REPLY_WORD_LIMIT", "90"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("RUST_LOG", "debug"),
        ])?;
        assert!(c.in_lambda && c.log_json, "Lambda always logs JSON");
        assert_eq!(c.log_hash_key.expose_secret(), "k-123");
        assert_eq!(c.prompts_dir, Some(PathBuf::from("/tmp/prompts")));
        assert_eq!(c.reply_word_limit, 90);
        assert!(c.aws.credentials_in_env);
        assert_eq!(c.aws.region(), Some("eu-west-1"));
        assert_eq!(c.log_filter, "debug");
        let both = cfg(&[("AWS_REGION", "us-west-2"), ("AWS_DEFAULT_REGION", "eu-west-1")])?;
        assert_eq!(both.aws.region(), Some("us-west-2"), "AWS_REGION wins");
        Ok(())
    }

    #[test]
    fn the_default_model_row_is_the_tables_and_switching_is_one_variable() -> Result<(), ConfigError> {
        let table = crate::llm::table::spec(DEFAULT_MODEL)?;
        assert_eq!(ModelSpec { name: table.name.clone(), ..DEFAULT_SPEC }, table);
        assert_eq!(cfg(&[])?.model.spec, table);
        let c = cfg(&[("OPENAI_MODEL", "gpt-4o")])?;
        assert_eq!((c.model.spec.output_limit, c.limits.prices.output_micro), (OutputLimit::MaxTokens, 10_000_000));
        assert!(cfg(&[("OPENAI_MODEL", "gpt-unknown")]).is_err(), "a model not in the table refuses to start");
        Ok(())
    }

    /// What follows from several variables does not depend on their order in `VARS`: Lambda
    /// logs JSON whatever LOG_FORMAT says, and AWS_REGION beats AWS_DEFAULT_REGION.
    #[test]
    fn rules_between_variables_hold_in_any_order() -> Result<(), ConfigError> {
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        assert!(cfg(&[lambda, ("LOG_FORMAT", "compact")])?.log_json, "Lambda always logs JSON");
        assert!(cfg(&[("LOG_FORMAT", "json")])?.log_json);
        assert!(!cfg(&[("LOG_FORMAT", "compact")])?.log_json);
        let position = |name: &str| VARS.iter().position(|v| v.name == name);
        assert!(position("LOG_FORMAT") < position("AWS_LAMBDA_RUNTIME_API") && position("AWS_REGION") < position("AWS_DEFAULT_REGION"), "the order the checks above would catch");
        Ok(())
    }

    /// A default is written once, in `Config::default()`: the README's column is rendered from it.
    #[test]
    fn the_readme_defaults_are_the_configs_own() {
        let shown = |name: &str| VARS.iter().find(|v| v.name == name).map(EnvVar::default);
        let d = Config::default();
        assert_eq!(shown("RATE_LIMIT_PER_HOUR"), Some(format!("`{}`", d.limits.requests_per_hour)));
        assert_eq!(shown("COST_LIMIT_PER_USER"), Some("`5`".to_string()));
        assert_eq!(shown("ADMISSION_WAIT_MS"), Some(format!("`{}`", d.admission_wait.as_millis())));
        assert_eq!(shown("OPENAI_MODEL"), Some(format!("`{}`", d.model.model)));
        assert_eq!(shown("OPENAI_BASE_URL").as_deref(), Some("OpenAI"));
    }

    #[test]
    fn every_variable_is_listed_once() {
        let names: std::collections::HashSet<&str> = VARS.iter().map(|v| v.name).collect();
        assert_eq!(names.len(), VARS.len(), "a variable is listed twice");
        assert!(markdown_table().lines().count() == VARS.len() + 2);
    }
}
