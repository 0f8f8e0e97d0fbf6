//! Building the shared state from configuration, once per process.

use std::sync::Arc;

use crate::chat::AppState;
use crate::config::Config;
use crate::llm::breaker::BreakerConfig;
use crate::llm::offline::OfflineCoach;
use crate::llm::openai::OpenAiCoach;
use crate::llm::{Coach, LlmError};
use crate::prompts::{PromptError, Prompts};
use crate::schemas::SchemaError;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Prompts(#[from] PromptError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("model client: {0}")]
    Model(#[from] LlmError),
}

/// The coach this configuration asks for: offline without a key and base URL.
pub fn coach(config: &Config, prompts: Arc<Prompts>, breaker: BreakerConfig) -> Result<Arc<dyn Coach>, StartError> {
    if config.model.is_offline() {
        return Ok(Arc::new(OfflineCoach::new(prompts)));
    }
    Ok(Arc::new(OpenAiCoach::new(config.model.clone(), breaker)?))
}

/// When the tokenizer's and the output filter's patterns are compiled (a few ms each; the
/// tokenizer's tables are static data, see tokens/).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warm {
    /// Before serving: Lambda's INIT phase.
    Now,
    /// On a blocking thread while the server starts.
    Background,
}

pub async fn build_state(config: Config, prompts: Prompts, warm: Warm) -> Result<AppState, StartError> {
    crate::schemas::get()?;
    let warm_up = || {
        crate::tokens::warm_up();
        crate::safety::warm_up();
    };
    match warm {
        Warm::Now => warm_up(),
        Warm::Background => {
            tokio::task::spawn_blocking(warm_up);
        }
    }
    let prompts = Arc::new(prompts);
    let store = Store::connect(&config).await;
    let coach = coach(&config, prompts.clone(), BreakerConfig::default())?;
    let log_key: Arc<str> = std::env::var("LOG_HASH_KEY").unwrap_or_else(|_| "coach-api".into()).into();
    Ok(AppState { config: Arc::new(config), store, prompts, coach, log_key, metrics: crate::metrics::Sink::Stdout, clock: crate::clock::Clock::System })
}
