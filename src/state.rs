//! The state every request shares, built once per process from the configuration: by `main`
//! for Lambda and `serve`, and by the tests (with their overrides) through the same function.

use std::sync::Arc;

use crate::budget::GlobalBudget;
use crate::clock::Clock;
use crate::config::Config;
use crate::limits::Limits;
use crate::llm::offline::OfflineCoach;
use crate::llm::openai::OpenAiCoach;
use crate::llm::table::{InService, ModelSpec, ModelTableError, Models};
use crate::llm::watch::ModelWatch;
use crate::llm::{Coach, LlmError};
use crate::metrics::Sink;
use crate::models::UserId;
use crate::prompts::experiment::{self, Experiment, PromptSet};
use crate::prompts::{PromptError, Prompts};
use crate::schemas::SchemaError;
use crate::secrets::{SecretError, SecretSource};
use crate::store::Store;

/// Everything a request needs, shared by all requests of a process.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub prompts: Arc<Prompts>,
    pub coach: Arc<dyn Coach>,
    /// This process's slice of the global daily budget.
    pub budget: Arc<GlobalBudget>,
    pub metrics: Sink,
    pub clock: Clock,
    /// The model called now: the configured row, or its replacement.
    pub models: Arc<InService>,
    /// The model's shutdown, watched once an hour.
    pub watch: Arc<ModelWatch>,
    /// The prompt variant tried on a share of golfers (`EXPERIMENT`).
    pub experiment: Option<Experiment>,
}

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
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    ModelTable(#[from] ModelTableError),
    #[error("inside Lambda the log-hash key must be set, as the secret's log_hash_key or LOG_HASH_KEY: the default is public, and the hashed user ids and IPs in logs could be reversed")]
    PublicLogHashKey,
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

/// What a test replaces; the defaults are what `main` runs.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub metrics: Sink,
    pub clock: Clock,
}

/// What the coach is built from besides the configuration.
struct CoachParts {
    secret: Option<Arc<SecretSource>>,
    models: Arc<InService>,
    clock: Clock,
}

/// The coach this configuration asks for: offline without a key and base URL.
fn coach(config: &Config, parts: CoachParts) -> Result<Arc<dyn Coach>, StartError> {
    if config.model.is_offline() {
        return Ok(Arc::new(OfflineCoach));
    }
    Ok(Arc::new(OpenAiCoach::new(config.model.clone(), config.breaker.clone(), parts.secret, parts.models, parts.clock)?))
}

impl AppState {
    pub async fn build(mut config: Config, warm: Warm, overrides: Overrides) -> Result<Self, StartError> {
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
        let prompts = Arc::new(Prompts::load(config.prompts_dir.as_deref())?);
        let experiment = match &config.experiment {
            Some((name, share_bp)) => {
                let variant = Prompts::variant(name, config.prompts_dir.as_deref())?;
                if let Some(m) = &variant.model {
                    Models::builtin()?.spec(m)?;
                }
                Some(Experiment { variant: Arc::new(variant), share_bp: *share_bp })
            }
            None => None,
        };
        // The keys from Secrets Manager, when the deployment names the secret: no key, no start.
        let secret = SecretSource::connect(config.model.secret_arn.as_deref(), &config.aws, config.secrets_endpoint.as_deref()).await.map(Arc::new);
        if let Some(source) = &secret {
            let keys = source.fetch().await?;
            config.model.api_key = Some(keys.api_key);
            if let Some(k) = keys.log_hash_key {
                config.log_hash_key = k;
            }
        }
        if config.in_lambda && secrecy::ExposeSecret::expose_secret(&config.log_hash_key) == crate::config::DEFAULT_LOG_HASH_KEY {
            return Err(StartError::PublicLogHashKey);
        }
        let store = Store::connect(&config).await;
        let models = InService::new(Models::builtin()?, &config.model.model)?;
        let parts = CoachParts { secret, models: models.clone(), clock: overrides.clock.clone() };
        let coach = coach(&config, parts)?;
        let budget = Arc::new(GlobalBudget::new(config.limits.spend_total_day_micro));
        let state =
            Self { config: Arc::new(config), store, prompts, coach, budget, metrics: overrides.metrics, clock: overrides.clock, models, watch: Default::default(), experiment };
        state.watch_model();
        Ok(state)
    }

    /// The model row a message asked at `now` with `set` is answered by: the variant's own, or
    /// the model in service then (its replacement from its shutdown on). Decided once, at
    /// admission; every later step reads the row the message carries.
    pub fn model_row(&self, set: &PromptSet, now: chrono::DateTime<chrono::Utc>) -> ModelSpec {
        self.models.row(set.model.as_deref(), now.date_naive()).unwrap_or_else(|| self.config.model.spec.clone())
    }

    /// The limits of a message answered by `row`, at its prices.
    pub fn limits_for(&self, row: &ModelSpec) -> Limits {
        Limits { prices: row.prices, ..self.config.limits.clone() }
    }

    /// The templates (and model row) `user`'s messages are answered with.
    pub fn prompt_set(&self, user: &UserId) -> PromptSet {
        experiment::assign(&self.prompts, self.experiment.as_ref(), self.log_key(), user)
    }

    /// Watches the model's shutdown (at most once an hour: cheap on every request).
    pub fn watch_model(&self) {
        if !self.config.model.is_offline() {
            self.watch.check(&self.models, self.clock.now(), &self.metrics);
        }
    }

    /// The key of the hashes that stand for ids in logs.
    pub fn log_key(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.config.log_hash_key)
    }
}
