//! Typed configuration from the environment. Names are the contract in design.md.

use std::time::Duration;

/// Every environment variable the service reads (the deployment template may set only these).
pub const ENV_VARS: [&str; 28] = [
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL",
    "DYNAMODB_TABLE_COACHING", "DYNAMODB_TABLE_ANALYSES", "DYNAMODB_ENDPOINT",
    "DYNAMODB_ATTEMPT_TIMEOUT_MS", "DYNAMODB_OPERATION_TIMEOUT_MS",
    "COST_LIMIT_PER_USER", "COST_LIMIT_TOTAL", "PRICE_INPUT_PER_MTOK", "PRICE_OUTPUT_PER_MTOK",
    "RATE_LIMIT_PER_HOUR", "IP_RATE_LIMIT_PER_HOUR", "TOKEN_LIMIT_PER_REQUEST", "MAX_REPLY_TOKENS",
    "AUTH_MODE", "ALLOW_LOCAL_AUTH_IN_LAMBDA", "CORS_ALLOWED_ORIGINS", "MAX_RECENT_MESSAGES", "PORT",
    "PROMPTS_DIR", "LOG_HASH_KEY", "LOG_FORMAT", "RUST_LOG", "AWS_LAMBDA_RUNTIME_API",
    // Read by the allocator at process start, not by Config.
    "MIMALLOC_ARENA_EAGER_COMMIT", "MIMALLOC_PURGE_DELAY",
];

use secrecy::SecretString;

/// Prices and limits in integer micro-dollars; counts as integers.
#[derive(Debug, Clone)]
pub struct Limits {
    pub token_limit_per_request: u32,
    pub max_reply_tokens: u32,
    pub requests_per_hour: u32,
    pub ip_requests_per_hour: u32,
    pub spend_per_user_day_micro: u64,
    pub spend_total_day_micro: u64,
    /// Micro-dollars per one million tokens ($2.50 → 2_500_000).
    pub input_price_per_mtok_micro: u64,
    pub output_price_per_mtok_micro: u64,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            token_limit_per_request: 1500,
            max_reply_tokens: 400,
            requests_per_hour: 15,
            ip_requests_per_hour: 60,
            spend_per_user_day_micro: 5_000_000,
            spend_total_day_micro: 100_000_000,
            input_price_per_mtok_micro: 2_500_000,
            output_price_per_mtok_micro: 10_000_000,
            max_body_bytes: 10 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The caller is `claims.sub` from the API Gateway Cognito authorizer.
    Cognito,
    /// The caller is the `X-User-Id` header: local runs and tests only.
    Local,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub api_key: Option<SecretString>,
    pub base_url: Option<String>,
    pub model: String,
    pub temperature: f32,
    /// Upper bound for one HTTP attempt.
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: None,
            model: "gpt-4o".into(),
            temperature: 0.7,
            attempt_timeout: Duration::from_secs(12),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(2),
        }
    }
}

impl ModelConfig {
    /// Without a key and a base URL there is no model to call: the offline coach answers.
    pub fn is_offline(&self) -> bool {
        self.api_key.is_none() && self.base_url.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub table_coaching: String,
    pub table_analyses: String,
    pub dynamodb_endpoint: Option<String>,
    pub model: ModelConfig,
    pub limits: Limits,
    pub auth_mode: AuthMode,
    pub port: u16,
    pub cors_origins: Vec<String>,
    /// Turns kept verbatim on a conversation item before older ones fold into the summary.
    pub max_recent_messages: usize,
    /// Total time a request may take, when no Lambda deadline is known (local serve).
    pub request_budget: Duration,
    /// Kept free before the Lambda deadline to store the turn and answer.
    pub deadline_margin: Duration,
    /// DynamoDB: one HTTP attempt, and one operation with the SDK's retries. DynamoDB
    /// answers in milliseconds; DynamoDB Local queues concurrent transactions on a hot item
    /// for up to a second or more, so its tests set longer ones.
    pub store_attempt_timeout: Duration,
    pub store_operation_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            table_coaching: "coaching-conversations".into(),
            table_analyses: "golf-coach-analyses".into(),
            dynamodb_endpoint: None,
            model: ModelConfig::default(),
            limits: Limits::default(),
            auth_mode: AuthMode::Cognito,
            port: 3000,
            cors_origins: vec![],
            max_recent_messages: 20,
            request_budget: Duration::from_secs(25),
            deadline_margin: Duration::from_millis(2500),
            store_attempt_timeout: Duration::from_secs(2),
            store_operation_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("AUTH_MODE=local trusts a header for identity and is refused inside Lambda; set ALLOW_LOCAL_AUTH_IN_LAMBDA=true only for a test stage")]
    LocalAuthInLambda,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        let in_lambda = get("AWS_LAMBDA_RUNTIME_API").is_some();
        let non_empty = |k: &str| get(k).filter(|v| !v.trim().is_empty());

        if let Some(v) = non_empty("DYNAMODB_TABLE_COACHING") {
            c.table_coaching = v;
        }
        if let Some(v) = non_empty("DYNAMODB_TABLE_ANALYSES") {
            c.table_analyses = v;
        }
        c.dynamodb_endpoint = non_empty("DYNAMODB_ENDPOINT");
        c.model.api_key = non_empty("OPENAI_API_KEY").map(SecretString::from);
        c.model.base_url = non_empty("OPENAI_BASE_URL");
        if let Some(v) = non_empty("OPENAI_MODEL") {
            c.model.model = v;
        }
        c.auth_mode = match non_empty("AUTH_MODE").as_deref() {
            None | Some("cognito") => AuthMode::Cognito,
            Some("local") => AuthMode::Local,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "AUTH_MODE",
                    problem: format!("expected cognito or local, got {other}"),
                })
            }
        };
        if in_lambda
            && c.auth_mode == AuthMode::Local
            && non_empty("ALLOW_LOCAL_AUTH_IN_LAMBDA").as_deref() != Some("true")
        {
            return Err(ConfigError::LocalAuthInLambda);
        }
        let l = &mut c.limits;
        if let Some(v) = non_empty("COST_LIMIT_PER_USER") {
            l.spend_per_user_day_micro = parse_dollars("COST_LIMIT_PER_USER", &v)?;
        }
        if let Some(v) = non_empty("COST_LIMIT_TOTAL") {
            l.spend_total_day_micro = parse_dollars("COST_LIMIT_TOTAL", &v)?;
        }
        if let Some(v) = non_empty("PRICE_INPUT_PER_MTOK") {
            l.input_price_per_mtok_micro = parse_dollars("PRICE_INPUT_PER_MTOK", &v)?;
        }
        if let Some(v) = non_empty("PRICE_OUTPUT_PER_MTOK") {
            l.output_price_per_mtok_micro = parse_dollars("PRICE_OUTPUT_PER_MTOK", &v)?;
        }
        parse_into(&non_empty, "RATE_LIMIT_PER_HOUR", &mut l.requests_per_hour)?;
        parse_into(&non_empty, "IP_RATE_LIMIT_PER_HOUR", &mut l.ip_requests_per_hour)?;
        parse_into(&non_empty, "TOKEN_LIMIT_PER_REQUEST", &mut l.token_limit_per_request)?;
        parse_into(&non_empty, "MAX_REPLY_TOKENS", &mut l.max_reply_tokens)?;
        if l.max_reply_tokens >= l.token_limit_per_request {
            return Err(ConfigError::Invalid {
                name: "MAX_REPLY_TOKENS",
                problem: "must be below TOKEN_LIMIT_PER_REQUEST, or no prompt fits".into(),
            });
        }
        let ms = |name, slot: &mut Duration| -> Result<(), ConfigError> {
            let mut v = slot.as_millis() as u64;
            parse_into(&non_empty, name, &mut v)?;
            *slot = Duration::from_millis(v);
            Ok(())
        };
        ms("DYNAMODB_ATTEMPT_TIMEOUT_MS", &mut c.store_attempt_timeout)?;
        ms("DYNAMODB_OPERATION_TIMEOUT_MS", &mut c.store_operation_timeout)?;
        if c.store_operation_timeout < c.store_attempt_timeout {
            return Err(ConfigError::Invalid {
                name: "DYNAMODB_OPERATION_TIMEOUT_MS",
                problem: "must be at least DYNAMODB_ATTEMPT_TIMEOUT_MS".into(),
            });
        }
        parse_into(&non_empty, "PORT", &mut c.port)?;
        parse_into(&non_empty, "MAX_RECENT_MESSAGES", &mut c.max_recent_messages)?;
        if let Some(v) = non_empty("CORS_ALLOWED_ORIGINS") {
            c.cors_origins = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if c.cors_origins.iter().any(|o| o == "*") {
                return Err(ConfigError::Invalid {
                    name: "CORS_ALLOWED_ORIGINS",
                    problem: "list the app's origins; a wildcard is not allowed".into(),
                });
            }
        }
        Ok(c)
    }
}

fn parse_into<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    slot: &mut T,
) -> Result<(), ConfigError> {
    if let Some(v) = get(name) {
        *slot = v.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            problem: format!("'{v}' is not a number"),
        })?;
    }
    Ok(())
}

/// Parses "5", "5.00" or "0.0075" into micro-dollars without floating point.
pub fn parse_dollars(name: &'static str, v: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::Invalid {
        name,
        problem: format!("'{v}' is not an amount in dollars with at most 6 decimals"),
    };
    let v = v.trim().trim_start_matches('$');
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 6 {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let frac_micro: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micro))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn dollars_parse_to_exact_micro_dollars() {
        assert_eq!(parse_dollars("X", "5").ok(), Some(5_000_000));
        assert_eq!(parse_dollars("X", "100.00").ok(), Some(100_000_000));
        assert_eq!(parse_dollars("X", "0.0075").ok(), Some(7_500));
        assert_eq!(parse_dollars("X", "$2.5").ok(), Some(2_500_000));
        assert!(parse_dollars("X", "1.0000001").is_err());
        assert!(parse_dollars("X", "-1").is_err());
        assert!(parse_dollars("X", "abc").is_err());
    }

    #[test]
    fn defaults_follow_the_seed() -> Result<(), ConfigError> {
        let c = cfg(&[])?;
        assert_eq!(c.limits.token_limit_per_request, 1500);
        assert_eq!(c.limits.requests_per_hour, 15);
        assert_eq!(c.limits.spend_per_user_day_micro, 5_000_000);
        assert_eq!(c.limits.spend_total_day_micro, 100_000_000);
        assert_eq!(c.model.model, "gpt-4o");
        assert_eq!(c.auth_mode, AuthMode::Cognito);
        assert!(c.model.is_offline());
        Ok(())
    }

    #[test]
    fn store_timeouts_default_for_dynamodb_and_can_be_raised_for_dynamodb_local() -> Result<(), ConfigError> {
        let c = cfg(&[])?;
        assert_eq!((c.store_attempt_timeout, c.store_operation_timeout), (Duration::from_secs(2), Duration::from_secs(5)));
        let c = cfg(&[("DYNAMODB_ATTEMPT_TIMEOUT_MS", "8000"), ("DYNAMODB_OPERATION_TIMEOUT_MS", "20000")])?;
        assert_eq!((c.store_attempt_timeout, c.store_operation_timeout), (Duration::from_secs(8), Duration::from_secs(20)));
        assert!(cfg(&[("DYNAMODB_ATTEMPT_TIMEOUT_MS", "8000")]).is_err(), "an operation cannot be shorter than its attempt");
        Ok(())
    }

    #[test]
    fn local_auth_is_refused_inside_lambda_unless_allowed() {
        let lambda = ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001");
        assert!(matches!(
            cfg(&[lambda, ("AUTH_MODE", "local")]),
            Err(ConfigError::LocalAuthInLambda)
        ));
        assert!(cfg(&[lambda, ("AUTH_MODE", "local"), ("ALLOW_LOCAL_AUTH_IN_LAMBDA", "true")]).is_ok());
        assert!(cfg(&[("AUTH_MODE", "local")]).is_ok());
    }

    #[test]
    fn wildcard_cors_and_oversized_reply_budget_are_rejected() {
        assert!(cfg(&[("CORS_ALLOWED_ORIGINS", "*")]).is_err());
        assert!(cfg(&[("MAX_REPLY_TOKENS", "1500")]).is_err());
        assert!(cfg(&[("RATE_LIMIT_PER_HOUR", "many")]).is_err());
    }
}
