//! One CloudWatch Embedded Metric Format line per request, on stdout, where the Lambda
//! log agent turns it into metrics. Dimensions are low-cardinality: never user ids.

use std::io::Write;

use serde_json::json;

pub const NAMESPACE: &str = "GolfCoach";
pub const SERVICE: &str = "coaching-chat";

/// Metric names: the alarms and the dashboard in `infra/` use exactly these.
pub const CONVERSATION_REQUESTS: &str = "ConversationRequests";
pub const TOKENS_USED: &str = "TokensUsed";
pub const RESPONSE_TIME: &str = "ResponseTime";
pub const ERROR_RATE: &str = "ErrorRate";
pub const COST_PER_DAY: &str = "CostPerDay";
pub const USER_ACTIVE_CONVERSATIONS: &str = "UserActiveConversations";
pub const DEGRADED_REPLIES: &str = "DegradedReplies";
pub const CONTENT_FILTERED: &str = "ContentFiltered";
pub const BILLED_UNUSABLE: &str = "BilledUnusable";
pub const MODEL_REFUSALS: &str = "ModelRefusals";
pub const BREAKER_OPEN: &str = "BreakerOpen";
/// The provider said the configured model is gone; the replacement answered.
pub const MODEL_REPLACED: &str = "ModelReplaced";
/// Days until the model in service shuts down (its own line, dimension `Model`).
pub const MODEL_DAYS_TO_SHUTDOWN: &str = "ModelDaysToShutdown";
/// Ratings (their own requests), by the prompt version, model and variant of the answer rated.
pub const FEEDBACK_UP: &str = "FeedbackUp";
pub const FEEDBACK_DOWN: &str = "FeedbackDown";
/// Streamed answers only: from the request's arrival to its first words on the way.
pub const FIRST_DELTA_TIME: &str = "FirstDeltaTime";

/// How a request ended, as metrics and the security line name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Answered by the model.
    Model,
    /// Answered by the offline coach (no model configured).
    Offline,
    /// The model could not answer: the fallback reply.
    Fallback,
    /// The stored answer to an earlier identical request.
    Replay,
    /// A read route answered.
    Read,
    /// Refused: bad input, identity, or a limit (4xx; the global cap's 503 counts as an error).
    Refused,
    /// Failed on our side (5xx).
    #[default]
    Error,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Offline => "offline",
            Self::Fallback => "fallback",
            Self::Replay => "replay",
            Self::Read => "read",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }
}

/// What a handler reports about its request (carried in the response's extensions to the
/// observation layer, which adds the timing and I/O).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub kind: OutcomeKind,
    pub tokens: u64,
    pub cost_micro: i64,
    /// The request started a day's conversation (summed daily: active conversations).
    pub new_conversation: bool,
    pub degraded: bool,
    pub filtered: bool,
    /// The counter that refused the request.
    pub limit: Option<crate::limits::Counter>,
    /// Why the model could not answer (a fallback).
    pub model_error: Option<&'static str>,
    /// Model calls billed whose answer the golfer did not get (cut off, refused, off schema,
    /// timed out).
    pub billed_unusable: u32,
    /// The model declined to answer.
    pub refusal: bool,
    /// The circuit breaker was open when the request ended.
    pub breaker_open: bool,
    /// A streamed answer: when its first words were sent.
    pub first_delta_at: Option<tokio::time::Instant>,
    /// The provider said the model is gone, and its replacement answered.
    pub model_replaced: bool,
    /// The prompt set, variant and model that wrote the reply (requests a model answered).
    pub prompt_version: Option<String>,
    pub variant: Option<String>,
    pub model: Option<String>,
    /// A golfer's rating of an answer: `true` thumbs up, `false` down.
    pub rating: Option<bool>,
}

impl Outcome {
    pub fn of(kind: OutcomeKind) -> Self {
        Self { kind, ..Self::default() }
    }
}

/// One request's line: its outcome, its time and its I/O.
#[derive(Debug, Clone, Default)]
pub struct RequestMetrics {
    pub outcome: Outcome,
    pub response_ms: f64,
    /// A 5xx answer other than a limit: ErrorRate's average over requests is the error ratio.
    pub server_error: bool,
    /// The request's I/O (properties on the line, not metrics).
    pub io: crate::stats::IoStats,
    /// A streamed answer's time to its first words.
    pub first_delta_ms: Option<f64>,
}

fn metric(name: &str, unit: &str) -> serde_json::Value {
    json!({ "Name": name, "Unit": unit })
}

impl RequestMetrics {
    pub fn to_emf(&self, timestamp_ms: i64) -> serde_json::Value {
        let mut line = json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Service"]],
                    "Metrics": [
                        metric(CONVERSATION_REQUESTS, "Count"),
                        metric(TOKENS_USED, "Count"),
                        metric(RESPONSE_TIME, "Milliseconds"),
                        metric(ERROR_RATE, "Percent"),
                        metric(COST_PER_DAY, "None"),
                        metric(USER_ACTIVE_CONVERSATIONS, "Count"),
                        metric(DEGRADED_REPLIES, "Count"),
                        metric(CONTENT_FILTERED, "Count"),
                        metric(BILLED_UNUSABLE, "Count"),
                        metric(MODEL_REFUSALS, "Count"),
                        metric(BREAKER_OPEN, "Count"),
                        metric(MODEL_REPLACED, "Count"),
                    ]
                }]
            },
            "Service": SERVICE,
            "Outcome": self.outcome.kind.as_str(),
            // Searchable properties for on-call and benchmarks: where the time went.
            "DynamoCalls": self.io.dynamo_calls,
            "DynamoWaves": self.io.dynamo_waves,
            "DynamoReadUnits": self.io.read_units,
            "DynamoWriteUnits": self.io.write_units,
            "StoreWaitMs": self.io.store_wait.as_secs_f64() * 1000.0,
            "ModelWaitMs": self.io.model_wait.as_secs_f64() * 1000.0,
            "InProcessMs": (self.response_ms - (self.io.store_wait + self.io.model_wait).as_secs_f64() * 1000.0).max(0.0),
            CONVERSATION_REQUESTS: 1,
            TOKENS_USED: self.outcome.tokens,
            RESPONSE_TIME: self.response_ms,
            ERROR_RATE: if self.server_error { 100 } else { 0 },
            // Dollars, so the daily Sum reads as the day's spend.
            COST_PER_DAY: self.outcome.cost_micro as f64 / 1_000_000.0,
            USER_ACTIVE_CONVERSATIONS: u8::from(self.outcome.new_conversation),
            DEGRADED_REPLIES: u8::from(self.outcome.degraded),
            CONTENT_FILTERED: u8::from(self.outcome.filtered),
            BILLED_UNUSABLE: self.outcome.billed_unusable,
            MODEL_REFUSALS: u8::from(self.outcome.refusal),
            BREAKER_OPEN: u8::from(self.outcome.breaker_open),
            MODEL_REPLACED: u8::from(self.outcome.model_replaced),
        });
        self.by_prompt(&mut line);
        self.rating(&mut line);
        // Declared only where it has a value: a declared metric without one is an EMF error.
        if let Some(ms) = self.first_delta_ms {
            line[FIRST_DELTA_TIME] = json!(ms);
            if let Some(declared) = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array_mut() {
                declared.push(metric(FIRST_DELTA_TIME, "Milliseconds"));
            }
        }
        line
    }

    /// An answered message's metrics (and a rating's) also by the prompt set, model and
    /// variant that wrote the answer.
    fn by_prompt(&self, line: &mut serde_json::Value) {
        if let (Some(version), Some(variant)) = (&self.outcome.prompt_version, &self.outcome.variant) {
            line["PromptVersion"] = json!(version);
            line["Variant"] = json!(variant);
            line["Model"] = json!(self.outcome.model.as_deref().unwrap_or(""));
            if let Some(sets) = line["_aws"]["CloudWatchMetrics"][0]["Dimensions"].as_array_mut() {
                sets.push(json!(["Service", "PromptVersion", "Model", "Variant"]));
            }
            // Properties for infra/insights/variants.query: an answer's count and latency.
            if self.outcome.rating.is_none() {
                line["Answers"] = json!(1);
                line["AnsweredMs"] = json!(self.response_ms);
            }
        }
    }

    /// A rating's thumbs up or down.
    fn rating(&self, line: &mut serde_json::Value) {
        if let Some(up) = self.outcome.rating {
            line[FEEDBACK_UP] = json!(u8::from(up));
            line[FEEDBACK_DOWN] = json!(u8::from(!up));
            if let Some(declared) = line["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array_mut() {
                declared.push(metric(FEEDBACK_UP, "Count"));
                declared.push(metric(FEEDBACK_DOWN, "Count"));
            }
        }
    }

    /// Writes the EMF line to the sink as one write.
    pub fn emit(&self, sink: &Sink) {
        sink.write(self.to_emf(crate::clock::wall_clock_ms()).to_string());
    }
}

/// The model in service and the days to its shutdown, as an EMF line of its own (the alarm
/// and the dashboard read it by its `Model` dimension).
pub fn model_days_to_shutdown(model: &str, days: i64, timestamp_ms: i64) -> serde_json::Value {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service", "Model"]],
                "Metrics": [{ "Name": MODEL_DAYS_TO_SHUTDOWN, "Unit": "Count" }]
            }]
        },
        "Service": SERVICE,
        "Model": model,
        MODEL_DAYS_TO_SHUTDOWN: days,
    })
}

/// Where EMF lines go: stdout in Lambda and `serve` (the log agent reads it), memory in tests.
#[derive(Debug, Clone, Default)]
pub enum Sink {
    #[default]
    Stdout,
    Memory(std::sync::Arc<std::sync::Mutex<Vec<String>>>),
}

impl Sink {
    /// One EMF line, as one write.
    pub fn write(&self, line: String) {
        match self {
            Sink::Stdout => {
                let _ = std::io::stdout().lock().write_all(format!("{line}\n").as_bytes());
            }
            Sink::Memory(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_has_a_value_and_dimensions_are_fixed() {
        let outcome = Outcome { kind: OutcomeKind::Model, tokens: 812, cost_micro: 4_230, ..Outcome::default() };
        let m = RequestMetrics { outcome, response_ms: 61.5, ..Default::default() };
        let v = m.to_emf(1_764_000_000_000);
        let declared = v["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().cloned().unwrap_or_default();
        assert_eq!(declared.len(), 12);
        for d in declared {
            let name = d["Name"].as_str().unwrap_or_default();
            assert!(v[name].is_number(), "{name} has no value");
        }
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Service"]]));
        assert_eq!(v[COST_PER_DAY], json!(0.00423));
        assert_eq!(v[ERROR_RATE], json!(0));
        assert_eq!(v["Outcome"], "model");
        assert!(v.get(FIRST_DELTA_TIME).is_none(), "only streamed answers have a first delta");
        let streamed = RequestMetrics { first_delta_ms: Some(412.5), ..m }.to_emf(1_764_000_000_000);
        assert_eq!(streamed[FIRST_DELTA_TIME], json!(412.5));
        assert_eq!(streamed["_aws"]["CloudWatchMetrics"][0]["Metrics"][12]["Name"], FIRST_DELTA_TIME);
    }
}
