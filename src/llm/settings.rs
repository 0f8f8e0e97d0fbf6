//! The model's settings: what `config` reads from the environment for the client, its
//! retries and its breaker. Their defaults live here, with the code that uses them.

use std::time::Duration;

use secrecy::SecretString;

use super::table::{ModelSpec, OutputLimit};
use crate::limits::DEFAULT_PRICES;

/// The default model's row, so a default Config needs no table (a test keeps it equal to
/// the table's row): gpt-6-luna, with no announced shutdown, at reasoning effort none.
pub const DEFAULT_MODEL: &str = "gpt-6-luna";
pub const DEFAULT_SPEC: ModelSpec = ModelSpec {
    name: String::new(),
    prices: DEFAULT_PRICES,
    output_limit: OutputLimit::MaxCompletionTokens,
    temperature: true,
    reasoning_effort: Some(crate::models::Effort::None),
    shutdown: None,
    replacement: None,
    tokens_per_o200k_milli: 1000,
    schema_in_prompt: true,
};

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub api_key: Option<SecretString>,
    /// The Secrets Manager secret holding `api_key` (and `log_hash_key`), read at start and
    /// again after a 401 (in AWS; locally the key may come from `OPENAI_API_KEY`).
    pub secret_arn: Option<String>,
    pub base_url: Option<String>,
    pub model: String,
    /// The model's row of the model table: the parameters it takes.
    pub spec: ModelSpec,
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
            secret_arn: None,
            base_url: None,
            model: DEFAULT_MODEL.into(),
            spec: ModelSpec { name: String::new(), ..DEFAULT_SPEC },
            temperature: 0.7,
            attempt_timeout: Duration::from_secs(12),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(2),
        }
    }
}

impl ModelConfig {
    /// Without a key (or a secret holding one) and a base URL there is no model to call: the
    /// offline coach answers.
    pub fn is_offline(&self) -> bool {
        self.api_key.is_none() && self.secret_arn.is_none() && self.base_url.is_none()
    }
}

/// The model's circuit breaker (per instance): opens after `consecutive` failures in a row or
/// when at least `ratio` of the calls in the last `window` failed (with `min_calls` seen).
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub consecutive: u32,
    pub ratio: f64,
    pub min_calls: usize,
    pub window: Duration,
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { consecutive: 5, ratio: 0.5, min_calls: 10, window: Duration::from_secs(30), open_for: Duration::from_secs(15) }
    }
}
