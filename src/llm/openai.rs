//! Any OpenAI-compatible chat endpoint through async-openai.
//!
//! async-openai's own retry layer waits out `Retry-After` without bound, so the client here
//! runs on a plain reqwest service and retries itself: only on 429 (not
//! `insufficient_quota`), 5xx, timeouts, connection failures and malformed answers; with
//! exponential backoff and full jitter; honouring `Retry-After` only when the wait still
//! fits before the deadline; every attempt bounded by the attempt timeout and the deadline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, ResponseFormat, ResponseFormatJsonSchema,
};
use async_openai::Client;
use futures::future::BoxFuture;
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::breaker::{Admit, Breaker};
use super::{parse_reply, Coach, CoachReply, CoachRequest, LlmError};
use crate::backoff::Backoff;
use crate::config::{BreakerConfig, ModelConfig};
use crate::prompts::PromptRole;
use crate::tokens;

/// Below this much time left, another attempt cannot succeed.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

pub struct OpenAiCoach {
    cfg: ModelConfig,
    api: OpenAIConfig,
    http: reqwest::Client,
    breaker: Breaker,
    reply_schema: serde_json::Value,
}

/// How one attempt ended.
enum Attempt {
    Done(CoachReply),
    Retry { error: LlmError, retry_after: Option<Duration> },
    Fail(LlmError),
}

impl OpenAiCoach {
    pub fn new(cfg: ModelConfig, breaker: BreakerConfig) -> Result<Self, LlmError> {
        let mut api = OpenAIConfig::new();
        if let Some(key) = &cfg.api_key {
            api = api.with_api_key(key.expose_secret());
        }
        if let Some(base) = &cfg.base_url {
            api = api.with_api_base(base.trim_end_matches('/'));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(cfg.attempt_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|_| LlmError::Transport)?;
        let reply_schema = crate::schemas::get()
            .map_err(|_| LlmError::Malformed)?
            .coach_reply_for_model
            .clone();
        Ok(Self { cfg, api, http, breaker: Breaker::new(breaker), reply_schema })
    }

    fn request(&self, req: &CoachRequest<'_>) -> CreateChatCompletionRequest {
        let messages = req
            .messages
            .iter()
            .map(|m| match m.role {
                PromptRole::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(m.content.as_str())),
                PromptRole::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(m.content.as_str())),
                PromptRole::Assistant => ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                    content: Some(ChatCompletionRequestAssistantMessageContent::Text(m.content.clone())),
                    ..Default::default()
                }),
            })
            .collect();
        #[expect(deprecated, reason = "max_tokens is what every OpenAI-compatible server accepts; the budget contract names it")]
        CreateChatCompletionRequest {
            model: self.cfg.model.clone(),
            messages,
            max_tokens: Some(req.max_tokens),
            temperature: Some(self.cfg.temperature),
            response_format: Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    name: "coach_reply".into(),
                    description: Some("The coaching reply and proposed theme updates".into()),
                    schema: self.reply_schema.clone(),
                    strict: Some(true),
                },
            }),
            ..Default::default()
        }
    }

    async fn attempt(&self, request: CreateChatCompletionRequest, timeout: Duration, req: &CoachRequest<'_>) -> Attempt {
        // The Retry-After of this attempt's response, captured below async-openai.
        let retry_after: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
        let slot = retry_after.clone();
        let http = self.http.clone();
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            let slot = slot.clone();
            async move {
                let request = factory.build().await?;
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                let after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if let Ok(mut s) = slot.lock() {
                    *s = after;
                }
                Ok::<_, OpenAIError>(response)
            }
        });
        // build(): with_config() would make a reqwest client of its own, loading the system
        // certificates from disk on every attempt (measured: a fifth of the CPU per request).
        let client = Client::build(self.http.clone(), self.api.clone()).with_http_service(service);
        let result = tokio::time::timeout(timeout, client.chat().create(request)).await;
        let after = retry_after.lock().ok().and_then(|s| *s);
        let retry = |error| Attempt::Retry { error, retry_after: after };
        match result {
            Err(_) => retry(LlmError::Timeout),
            Ok(Ok(resp)) => {
                let Some(content) = resp.choices.into_iter().next().and_then(|c| c.message.content) else {
                    return retry(LlmError::Malformed);
                };
                let Ok(payload) = parse_reply(&content) else {
                    return retry(LlmError::Malformed);
                };
                let (prompt_tokens, completion_tokens) = match resp.usage {
                    Some(u) => (u64::from(u.prompt_tokens), u64::from(u.completion_tokens)),
                    None => (
                        tokens::count_chat(req.messages.iter().map(|m| (m.role.as_str(), m.content.as_str()))) as u64,
                        tokens::count(&content) as u64,
                    ),
                };
                Attempt::Done(CoachReply {
                    payload,
                    prompt_tokens,
                    completion_tokens,
                    source: self.cfg.model.clone(),
                })
            }
            Ok(Err(OpenAIError::ApiError(api))) => {
                let status = api.status_code.as_u16();
                match status {
                    429 if api.api_error.code.as_deref() == Some("insufficient_quota") => Attempt::Fail(LlmError::Refused(429)),
                    429 => retry(LlmError::RateLimited),
                    500..=599 => retry(LlmError::Upstream(status)),
                    _ => Attempt::Fail(LlmError::Refused(status)),
                }
            }
            Ok(Err(OpenAIError::JSONDeserialize(..))) => retry(LlmError::Malformed),
            Ok(Err(OpenAIError::Reqwest(e))) if e.is_timeout() => retry(LlmError::Timeout),
            Ok(Err(_)) => retry(LlmError::Transport),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.backoff_base, self.cfg.backoff_cap)
    }
}

impl Coach for OpenAiCoach {
    fn reply<'a>(&'a self, req: CoachRequest<'a>) -> BoxFuture<'a, Result<CoachReply, LlmError>> {
        Box::pin(async move {
            let request = self.request(&req);
            let mut attempts = 0u32;
            let mut last = LlmError::Timeout;
            while attempts < self.cfg.max_attempts {
                let left = req.deadline.saturating_duration_since(Instant::now());
                if left < MIN_ATTEMPT {
                    break;
                }
                if self.breaker.admit() == Admit::Reject {
                    return Err(if attempts == 0 { LlmError::CircuitOpen } else { last });
                }
                attempts += 1;
                let outcome = self.attempt(request.clone(), self.cfg.attempt_timeout.min(left), &req).await;
                match outcome {
                    Attempt::Done(reply) => {
                        self.breaker.record(true);
                        return Ok(reply);
                    }
                    Attempt::Fail(e) => {
                        // The request was refused, not the service failing: the breaker is not told.
                        return Err(e);
                    }
                    Attempt::Retry { error, retry_after } => {
                        self.breaker.record(false);
                        tracing::warn!(attempt = attempts, error = error.label(), "model attempt failed");
                        last = error;
                        if attempts >= self.cfg.max_attempts {
                            break;
                        }
                        let wait = retry_after.unwrap_or_default().max(self.backoff().delay(attempts - 1));
                        if Instant::now() + wait + MIN_ATTEMPT > req.deadline {
                            break;
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            Err(last)
        })
    }
}
