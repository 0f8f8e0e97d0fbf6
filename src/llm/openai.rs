//! Any OpenAI-compatible chat endpoint through async-openai.
//!
//! async-openai's own retry layer waits out `Retry-After` without bound, so the client here
//! runs on a plain reqwest service and retries itself, counting what every attempt billed:
//!
//! - an answer with `usage` is billed at it, usable or not; a call sent and never answered
//!   (a timeout) at its worst case; a refused connection, a 429 or a 5xx without usage at
//!   nothing;
//! - outages (timeouts, 429 but `insufficient_quota`, 5xx, lost connections) are retried with
//!   exponential backoff and full jitter, `Retry-After` honoured when it fits before the
//!   deadline (and capped), and counted by the circuit breaker;
//! - answers the golfer cannot use are outcomes: a refusal is not retried; an answer cut at
//!   the token limit is asked for once more, shorter, within the same token budget; an answer
//!   off the schema is tried once more; none counts against the breaker;
//! - no attempt starts that could take the request's calls past its reservation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CompletionUsage, CreateChatCompletionRequest, FinishReason, ReasoningEffort, ResponseFormat, ResponseFormatJsonSchema,
};
use async_openai::Client;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use secrecy::ExposeSecret;
use tokio::time::Instant;

use super::breaker::{Breaker, Permit};
use super::settings::{BreakerConfig, ModelConfig};
use super::table::{InService, ModelSpec, OutputLimit};
use super::{parse_reply, Attempts, Coach, CoachEvent, CoachRequest, Draft, LlmError};
use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::limits;
use crate::limits::Billed;
use crate::models::Effort;
use crate::prompts::{PromptMessage, PromptRole};
use crate::secrets::SecretSource;
use crate::tokens;

/// Below this much time left, another attempt cannot succeed.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// The longest `Retry-After` taken from the provider (a larger one is this).
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// After a 401 the key is read from the secret again, at most this often.
const KEY_REFRESH_EVERY: Duration = Duration::from_secs(30);

pub struct OpenAiCoach {
    cfg: ModelConfig,
    /// The row called now: the configured one, or its replacement.
    service: Arc<InService>,
    clock: Clock,
    /// The endpoint and key; the key is replaced when the secret is read again after a 401.
    api: std::sync::RwLock<OpenAIConfig>,
    secret: Option<Arc<SecretSource>>,
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    pub(super) http: reqwest::Client,
    breaker: Breaker,
    reply_schema: serde_json::Value,
}

/// How one attempt ended.
pub(super) enum Attempt {
    Done(Draft, Billed),
    /// The provider answered, and billed, but the golfer cannot use the answer.
    Unusable(LlmError, Billed),
    /// The provider did not answer usefully; a timeout may still have been billed.
    Outage {
        error: LlmError,
        billed: Option<Billed>,
        retry_after: Option<Duration>,
    },
    /// The request was refused (a 4xx but 429): nothing was billed.
    Refused(LlmError),
    /// The provider says the model does not exist (any more): nothing was billed.
    Gone,
}

impl Attempt {
    /// Stamps the model called: its prices on every bill, its name on the draft.
    fn of_model(self, spec: &ModelSpec) -> Self {
        let priced = |b: Billed| Billed { prices: spec.prices, ..b };
        match self {
            Self::Done(draft, b) => Self::Done(Draft { source: spec.name.clone(), ..draft }, priced(b)),
            Self::Unusable(e, b) => Self::Unusable(e, priced(b)),
            Self::Outage { error, billed, retry_after } => Self::Outage { error, billed: billed.map(priced), retry_after },
            refused => refused,
        }
    }
}

impl OpenAiCoach {
    pub fn new(cfg: ModelConfig, breaker: BreakerConfig, secret: Option<Arc<SecretSource>>, service: Arc<InService>, clock: Clock) -> Result<Self, LlmError> {
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
        let reply_schema = crate::schemas::get().map_err(|_| LlmError::Malformed)?.coach_reply_for_model.clone();
        Ok(Self { cfg, service, clock, api: std::sync::RwLock::new(api), secret, refreshed: tokio::sync::Mutex::new(None), http, breaker: Breaker::new(breaker), reply_schema })
    }

    /// Reads the key from the secret again (after a 401): `true` when it got a key.
    async fn refresh_key(&self) -> bool {
        let Some(secret) = &self.secret else { return false };
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t.elapsed() < KEY_REFRESH_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        match secret.fetch().await {
            Ok(keys) => {
                if let Ok(mut api) = self.api.write() {
                    *api = api.clone().with_api_key(keys.api_key.expose_secret());
                }
                tracing::info!("model key read again from the secret after a 401");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the secret could not be read after a 401");
                false
            }
        }
    }

    /// The request for `messages` to the model `spec`, with the reply's token limit in the
    /// parameter the model takes.
    fn request(&self, spec: &ModelSpec, messages: &[PromptMessage], max_tokens: u32, safety_identifier: &str) -> CreateChatCompletionRequest {
        let messages = messages
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
        #[expect(deprecated, reason = "max_tokens is what non-reasoning OpenAI-compatible servers accept; the model table says which")]
        CreateChatCompletionRequest {
            model: spec.name.clone(),
            messages,
            max_tokens: (spec.output_limit == OutputLimit::MaxTokens).then_some(max_tokens),
            max_completion_tokens: (spec.output_limit == OutputLimit::MaxCompletionTokens).then_some(max_tokens),
            temperature: spec.temperature.then_some(self.cfg.temperature),
            reasoning_effort: spec.reasoning_effort.map(|e| match e {
                Effort::None => ReasoningEffort::None,
                Effort::Minimal => ReasoningEffort::Minimal,
                Effort::Low => ReasoningEffort::Low,
                Effort::Medium => ReasoningEffort::Medium,
                Effort::High => ReasoningEffort::High,
                Effort::Xhigh => ReasoningEffort::Xhigh,
                Effort::Max => ReasoningEffort::Max,
            }),
            safety_identifier: Some(safety_identifier.to_string()),
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

    /// A client for one attempt, and the slot its response's `Retry-After` lands in.
    pub(super) fn client(&self) -> (Client<OpenAIConfig>, RetryAfter) {
        let retry_after: RetryAfter = Arc::new(Mutex::new(None));
        let slot = retry_after.clone();
        let http = self.http.clone();
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            let slot = slot.clone();
            async move {
                let request = factory.build().await?;
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                if let Ok(mut s) = slot.lock() {
                    *s = retry_after_header(response.headers());
                }
                Ok::<_, OpenAIError>(response)
            }
        });
        // build(): with_config() would make a reqwest client of its own, loading the system
        // certificates from disk on every attempt (measured: a fifth of the CPU per request).
        (Client::build(self.http.clone(), self.api_config()).with_http_service(service), retry_after)
    }

    /// The endpoint and key in use now.
    pub(super) fn api_config(&self) -> OpenAIConfig {
        self.api.read().map(|a| a.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    async fn attempt(&self, request: CreateChatCompletionRequest, timeout: Duration, worst: Billed) -> Attempt {
        let (client, retry_after) = self.client();
        let result = tokio::time::timeout(timeout, client.chat().create(request)).await;
        let after = retry_after.lock().ok().and_then(|s| *s);
        match result {
            // Sent and never answered: it may have been billed, at most its worst case.
            Err(_) => Attempt::Outage { error: LlmError::Timeout, billed: Some(worst), retry_after: after },
            Ok(Ok(resp)) => {
                let usage = usage(resp.usage.as_ref());
                let Some(choice) = resp.choices.into_iter().next() else {
                    return Attempt::Unusable(LlmError::Malformed, usage.unwrap_or(worst));
                };
                let content = choice.message.content.unwrap_or_default();
                let said = Said { content: &content, refused: choice.message.refusal.is_some(), finish: choice.finish_reason };
                self.judge(said, usage, worst)
            }
            Ok(Err(e)) => failed(e, worst, after),
        }
    }

    /// An answer: billed at its usage (or, without one, at the tokens counted here), then
    /// used, or not, as what it says allows.
    pub(super) fn judge(&self, said: Said<'_>, usage: Option<Billed>, worst: Billed) -> Attempt {
        let Said { content, refused, finish } = said;
        // Counted only when the provider sent no usage.
        let billed = usage.unwrap_or_else(|| Billed { prompt_tokens: worst.prompt_tokens, completion_tokens: tokens::count(content) as u64, estimated: true, ..Billed::default() });
        if refused || finish == Some(FinishReason::ContentFilter) {
            return Attempt::Unusable(LlmError::Declined, billed);
        }
        if finish == Some(FinishReason::Length) {
            return Attempt::Unusable(LlmError::CutOff, billed);
        }
        match parse_reply(content) {
            // The model's name and prices are stamped by `of_model`.
            Ok(payload) => Attempt::Done(Draft { payload, source: String::new() }, Billed { used: true, ..billed }),
            Err(e) => Attempt::Unusable(e, billed),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.backoff_base, self.cfg.backoff_cap)
    }
}

/// What a model answered: its content, whether it refused, and why it stopped.
pub(super) struct Said<'a> {
    pub content: &'a str,
    pub refused: bool,
    pub finish: Option<FinishReason>,
}

/// Where an attempt's `Retry-After` is captured, below async-openai.
pub(super) type RetryAfter = Arc<Mutex<Option<Duration>>>;

/// How an attempt that got no usable answer from async-openai ended.
pub(super) fn failed(error: OpenAIError, worst: Billed, after: Option<Duration>) -> Attempt {
    let outage = |error, billed| Attempt::Outage { error, billed, retry_after: after };
    match error {
        OpenAIError::ApiError(api) => {
            let status = api.status_code.as_u16();
            match status {
                429 if api.api_error.code.as_deref() == Some("insufficient_quota") => Attempt::Refused(LlmError::Refused(429)),
                429 => outage(LlmError::RateLimited, None),
                500..=599 => outage(LlmError::Upstream(status), None),
                404 | 400 if says_model_is_gone(api.api_error.code.as_deref(), &api.api_error.message) => Attempt::Gone,
                _ => Attempt::Refused(LlmError::Refused(status)),
            }
        }
        // A success status whose body does not read: billed, at what no one can say.
        OpenAIError::JSONDeserialize(..) => Attempt::Unusable(LlmError::Malformed, worst),
        OpenAIError::Reqwest(e) if e.is_timeout() => outage(LlmError::Timeout, Some(worst)),
        OpenAIError::Reqwest(e) if e.is_connect() => outage(LlmError::Transport, None),
        // The connection failed after the request went out: it may have been billed.
        _ => outage(LlmError::Transport, Some(worst)),
    }
}

/// Whether a 404 or 400 says the model itself does not exist (any more): OpenAI answers
/// `model_not_found`; compatible servers say the model is deprecated, unknown or missing.
fn says_model_is_gone(code: Option<&str>, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == Some("model_not_found") || (m.contains("model") && ["deprecated", "does not exist", "not found", "unknown", "shut down"].iter().any(|w| m.contains(w)))
}

/// What a response's usage says was billed.
pub(super) fn usage(u: Option<&CompletionUsage>) -> Option<Billed> {
    let u = u?;
    Some(Billed {
        prices: Default::default(),
        prompt_tokens: u64::from(u.prompt_tokens),
        cached_tokens: u.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).map(u64::from).unwrap_or(0),
        completion_tokens: u64::from(u.completion_tokens),
        reasoning_tokens: u.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).map(u64::from).unwrap_or(0),
        estimated: false,
        used: false,
    })
}

/// `Retry-After` in seconds, capped: a provider's absurd value must not overflow an Instant.
pub(super) fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

/// The messages of the attempt after an answer was cut at the token limit: the instruction
/// to answer shorter, just before the golfer's message, and a reply budget that leaves room
/// for it, so prompt and reply stay within the same limit.
fn shorter(req: &CoachRequest<'_>, spec: &ModelSpec) -> (Vec<PromptMessage>, u32) {
    let mut messages = req.messages.to_vec();
    let at = messages.len().saturating_sub(1);
    messages.insert(at, req.shorter.clone());
    let ours = tokens::count_message(req.shorter.role.as_str(), &req.shorter.content) as u64;
    let extra = u32::try_from(spec.model_tokens(ours)).unwrap_or(u32::MAX);
    (messages, req.max_tokens.saturating_sub(extra))
}

/// A streamed attempt's pieces: the reply's text as it comes, then how the attempt ended.
pub(super) enum AttemptPiece {
    Text(String),
    Ended(Box<Attempt>),
}

/// What comes after an attempt.
enum Next {
    /// Try again after this wait (or give up if the deadline is too close).
    Retry(Duration),
    /// The draft, or why there is none.
    Stop(Result<Draft, LlmError>),
}

/// One message's attempts: what has been tried, billed and learnt so far.
struct Tries<'a> {
    req: CoachRequest<'a>,
    /// The worst a call can bill: the whole prompt and the whole reply.
    worst: Billed,
    messages: Vec<PromptMessage>,
    max_tokens: u32,
    billed: Vec<Billed>,
    attempts: u32,
    cut: bool,
    malformed: bool,
    rekeyed: bool,
    /// The provider said the model is gone and its replacement was called.
    replaced: bool,
    /// The row called: the request's, or its replacement once the provider said it is gone.
    row: ModelSpec,
    last: LlmError,
}

impl<'a> Tries<'a> {
    fn new(req: CoachRequest<'a>) -> Self {
        let prompt_tokens = req.prompt_tokens as u64;
        let worst = Billed { prompt_tokens, completion_tokens: u64::from(req.max_tokens), estimated: true, ..Billed::default() };
        Self {
            req,
            worst,
            messages: req.messages.to_vec(),
            max_tokens: req.max_tokens,
            billed: vec![],
            attempts: 0,
            cut: false,
            malformed: false,
            rekeyed: false,
            replaced: false,
            row: req.model.clone(),
            last: LlmError::Timeout,
        }
    }

    /// The time the next attempt may take, or `None` when none may start: out of time, or
    /// the reservation could not cover another worst case.
    fn room(&self, max_attempts: u32) -> Option<Duration> {
        let left = self.req.deadline.saturating_duration_since(Instant::now());
        let spent: i64 = self.billed.iter().map(limits::billed_cost).sum();
        let affordable = spent + limits::billed_cost(&self.worst) <= self.req.reserved_micro;
        (self.attempts < max_attempts && left >= MIN_ATTEMPT && affordable).then_some(left)
    }

    /// After an answer cut at the token limit: once, the messages and budget of a shorter
    /// answer. The instruction asks for half the words, so a budget it leaves below half the
    /// reply's would be cut again (and at 0 a server refuses the request): then `false`.
    fn ask_shorter(&mut self, spec: &ModelSpec) -> bool {
        if self.cut {
            return false;
        }
        self.cut = true;
        let (messages, max_tokens) = shorter(&self.req, spec);
        if max_tokens < self.req.max_tokens / 2 {
            return false;
        }
        (self.messages, self.max_tokens) = (messages, max_tokens);
        true
    }

    fn done(self, draft: Result<Draft, LlmError>) -> CoachEvent {
        CoachEvent::Done(Attempts { draft, billed: self.billed, replaced_model: self.replaced })
    }
}

impl Coach for OpenAiCoach {
    fn reply<'a>(&'a self, req: CoachRequest<'a>) -> BoxFuture<'a, Attempts> {
        Box::pin(async move {
            let mut events = self.run(req, false);
            while let Some(event) = events.next().await {
                if let CoachEvent::Done(attempts) = event {
                    return attempts;
                }
            }
            Attempts { draft: Err(LlmError::Transport), billed: vec![], replaced_model: false }
        })
    }

    fn reply_stream<'a>(&'a self, req: CoachRequest<'a>) -> BoxStream<'a, CoachEvent> {
        self.run(req, true)
    }

    fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }
}

impl OpenAiCoach {
    /// The attempts for one message, within its deadline, its reservation and the breaker;
    /// `streamed`, each attempt streams and its text is yielded as it comes.
    fn run<'a>(&'a self, req: CoachRequest<'a>, streamed: bool) -> BoxStream<'a, CoachEvent> {
        Box::pin(async_stream::stream! {
            let mut tries = Tries::new(req);
            loop {
                let spec = tries.row.clone();
                // The worst case in the model's own tokens, at its prices.
                tries.worst.prices = spec.prices;
                tries.worst.prompt_tokens = spec.model_tokens(req.prompt_tokens as u64);
                let Some(left) = tries.room(self.cfg.max_attempts) else { break };
                let Some(permit) = self.breaker.permit() else {
                    let error = if tries.attempts == 0 { LlmError::CircuitOpen } else { tries.last.clone() };
                    yield tries.done(Err(error));
                    return;
                };
                tries.attempts += 1;
                let request = self.request(&spec, &tries.messages, tries.max_tokens, req.safety_identifier);
                let timeout = self.cfg.attempt_timeout.min(left);
                let attempted = if streamed {
                    if tries.attempts > 1 {
                        yield CoachEvent::Restart;
                    }
                    let mut pieces = self.attempt_streamed(request, timeout, tries.worst);
                    let mut ended = Attempt::Outage { error: LlmError::Transport, billed: Some(tries.worst), retry_after: None };
                    while let Some(piece) = pieces.next().await {
                        match piece {
                            AttemptPiece::Text(text) => yield CoachEvent::Text(text),
                            AttemptPiece::Ended(attempt) => ended = *attempt,
                        }
                    }
                    ended
                } else {
                    self.attempt(request, timeout, tries.worst).await
                };
                match self.next(&mut tries, attempted.of_model(&spec), permit, &spec).await {
                    Next::Stop(draft) => {
                        yield tries.done(draft);
                        return;
                    }
                    Next::Retry(wait) if Instant::now() + wait + MIN_ATTEMPT > req.deadline => break,
                    Next::Retry(wait) => tokio::time::sleep(wait).await,
                }
            }
            let last = tries.last.clone();
            yield tries.done(Err(last));
        })
    }

    /// What an attempt's ending means for the next: its bill kept, the breaker told, and a
    /// retry (with what it changes) or the end.
    async fn next(&self, tries: &mut Tries<'_>, attempted: Attempt, permit: Permit<'_>, spec: &ModelSpec) -> Next {
        let n = tries.attempts;
        let (error, wait) = match attempted {
            // The model answered "gone": not an outage. The same message goes to the replacement,
            // which every later message calls too.
            Attempt::Gone => {
                permit.answered();
                let Some(next) = self.service.replace(spec, self.clock.now().date_naive()) else {
                    tracing::error!(model = %spec.name, "the provider says the model is gone and it has no replacement");
                    return Next::Stop(Err(LlmError::Refused(404)));
                };
                tracing::error!(gone = %spec.name, replacement = %next.name, "the provider says the model is gone: its replacement is called from now on");
                tries.replaced = true;
                tries.row = next;
                tries.attempts -= 1;
                (LlmError::Refused(404), Duration::ZERO)
            }
            Attempt::Done(draft, b) => {
                permit.answered();
                tries.billed.push(b);
                return Next::Stop(Ok(draft));
            }
            Attempt::Refused(LlmError::Refused(401)) if !tries.rekeyed && self.refresh_key().await => {
                // The key may have been rotated: once, with the key read again.
                permit.answered();
                tries.rekeyed = true;
                (LlmError::Refused(401), Duration::ZERO)
            }
            Attempt::Refused(e) => {
                permit.answered();
                return Next::Stop(Err(e));
            }
            Attempt::Unusable(error, b) => {
                permit.answered();
                tries.billed.push(b);
                tracing::warn!(attempt = n, error = error.label(), "the model's answer cannot be used");
                match error {
                    LlmError::CutOff if tries.ask_shorter(spec) => {}
                    LlmError::Malformed if !tries.malformed => tries.malformed = true,
                    e => return Next::Stop(Err(e)),
                }
                (error, Duration::ZERO)
            }
            Attempt::Outage { error, billed: b, retry_after } => {
                Permit::outage(permit);
                tries.billed.extend(b);
                tracing::warn!(attempt = n, error = error.label(), "model attempt failed");
                (error, retry_after.unwrap_or_default().max(self.backoff().delay(n - 1)))
            }
        };
        tries.last = error;
        Next::Retry(wait)
    }
}
