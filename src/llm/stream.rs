//! A streamed attempt: the model is asked with `stream: true` and
//! `stream_options.include_usage`; the provider's byte stream is read in the request's own
//! task (eventsource-stream parses the events; no reader task, no channel); the `reply` field
//! of its structured answer is read from the partial JSON as it grows and yielded as text;
//! the whole answer is judged at the end exactly as a buffered one, and billed at the usage
//! of the stream's last chunk.

use std::time::Duration;

use async_openai::config::Config as _;
use async_openai::error::{ApiError, ApiErrorResponse, OpenAIError, StreamError, WrappedError};
use async_openai::types::chat::{ChatCompletionStreamOptions, CreateChatCompletionRequest, CreateChatCompletionStreamResponse, FinishReason};
use eventsource_stream::Eventsource;
use futures::stream::BoxStream;
use futures::StreamExt;
use jiter::{JsonValue, PartialMode};
use tokio::time::Instant;

use super::openai::{failed, retry_after_header, usage, Attempt, AttemptPiece, OpenAiCoach, Said};
use super::LlmError;
use crate::limits::Billed;

/// What a stream delivered, however far it got.
#[derive(Debug, Default)]
struct Streamed {
    content: String,
    refused: bool,
    finish: Option<FinishReason>,
    usage: Option<Billed>,
}

impl OpenAiCoach {
    /// One streamed attempt: the reply's text as it comes, then how the attempt ended. The
    /// whole attempt, from the request to the stream's last chunk, takes at most `timeout`.
    pub(super) fn attempt_streamed(&self, mut request: CreateChatCompletionRequest, timeout: Duration, worst: Billed) -> BoxStream<'_, AttemptPiece> {
        request.stream = Some(true);
        request.stream_options = Some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None });
        Box::pin(async_stream::stream! {
            let by = Instant::now() + timeout;
            let (response, after) = match tokio::time::timeout_at(by, self.open_stream(&request)).await {
                Err(_) => {
                    yield AttemptPiece::Ended(Box::new(Attempt::Outage { error: LlmError::Timeout, billed: Some(worst), retry_after: None }));
                    return;
                }
                Ok(Err((e, after))) => {
                    yield AttemptPiece::Ended(Box::new(failed(e, worst, after)));
                    return;
                }
                Ok(Ok(opened)) => opened,
            };
            // The provider answered with a success status: from here the call may be billed.
            let mut events = response.bytes_stream().eventsource();
            let mut got = Streamed::default();
            let mut reply = ReplyField::default();
            let ended = loop {
                let event = match tokio::time::timeout_at(by, events.next()).await {
                    Ok(None) => break None,
                    Ok(Some(Ok(event))) => event,
                    Ok(Some(Err(e))) => break Some(Some(OpenAIError::StreamError(Box::new(StreamError::EventStream(e.to_string()))))),
                    // Cut off before its end.
                    Err(_) => break Some(None),
                };
                if event.data == "[DONE]" {
                    break None;
                }
                if event.event == "keepalive" {
                    continue;
                }
                let chunk = match serde_json::from_str::<CreateChatCompletionStreamResponse>(&event.data) {
                    Ok(chunk) => chunk,
                    Err(e) => break Some(Some(OpenAIError::JSONDeserialize(e, String::new()))),
                };
                for text in got.take(chunk, &mut reply) {
                    yield AttemptPiece::Text(text);
                }
            };
            let attempt = match ended {
                None => self.judge(Said { content: &got.content, refused: got.refused, finish: got.finish }, got.usage, worst),
                // Billed at its usage if it came, else at the worst case.
                Some(None) => Attempt::Outage { error: LlmError::Timeout, billed: Some(got.usage.unwrap_or(worst)), retry_after: after },
                Some(Some(OpenAIError::JSONDeserialize(..))) => Attempt::Unusable(LlmError::Malformed, got.usage.unwrap_or(worst)),
                Some(Some(_)) => Attempt::Outage { error: LlmError::Transport, billed: Some(got.usage.unwrap_or(worst)), retry_after: after },
            };
            yield AttemptPiece::Ended(Box::new(attempt));
        })
    }

    /// Sends the streamed request: the response to read, with its `Retry-After`; a status
    /// other than success is the provider's error, read as async-openai reads it.
    async fn open_stream(&self, request: &CreateChatCompletionRequest) -> Result<(reqwest::Response, Option<Duration>), (OpenAIError, Option<Duration>)> {
        let api = self.api_config();
        let body = serde_json::to_vec(request).map_err(|e| (OpenAIError::JSONDeserialize(e, String::new()), None))?;
        let sent = self
            .http
            .post(api.url("/chat/completions"))
            .headers(api.headers())
            .query(&api.query())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = sent.map_err(|e| (OpenAIError::Reqwest(e), None))?;
        let after = retry_after_header(response.headers());
        let status = response.status();
        if status.is_success() {
            return Ok((response, after));
        }
        let bytes = response.bytes().await.map_err(|e| (OpenAIError::Reqwest(e), after))?;
        // As the buffered call reads it: a server error's body as its message, a client
        // error's as OpenAI's error object (a body that is not one is a malformed answer).
        let error = if status.is_server_error() {
            let message = String::from_utf8_lossy(&bytes).into_owned();
            OpenAIError::ApiError(ApiErrorResponse { status_code: status, api_error: ApiError { message, r#type: None, param: None, code: None, misalignment: None } })
        } else {
            match serde_json::from_slice::<WrappedError>(&bytes) {
                Ok(wrapped) => OpenAIError::ApiError(ApiErrorResponse { status_code: status, api_error: wrapped.error }),
                Err(e) => OpenAIError::JSONDeserialize(e, String::new()),
            }
        };
        Err((error, after))
    }
}

impl Streamed {
    /// Takes one chunk: its usage, refusal and finish reason, and the reply's new text.
    fn take(&mut self, chunk: CreateChatCompletionStreamResponse, reply: &mut ReplyField) -> Vec<String> {
        if let Some(u) = usage(chunk.usage.as_ref()) {
            self.usage = Some(u);
        }
        let mut texts = vec![];
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content {
                self.content.push_str(&text);
                texts.extend(reply.advance(&self.content));
            }
            self.refused |= choice.delta.refusal.is_some();
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason;
            }
        }
        texts
    }
}

/// The top-level `reply` string of a JSON object that is still being written.
#[derive(Debug, Default)]
pub(super) struct ReplyField {
    /// Bytes of the decoded reply already sent on.
    sent: usize,
}

impl ReplyField {
    /// What the reply gained since the last call, given the whole content so far.
    pub(super) fn advance(&mut self, content: &str) -> Option<String> {
        let value = JsonValue::parse_with_config(content.as_bytes(), false, PartialMode::TrailingStrings).ok()?;
        let JsonValue::Object(fields) = value else { return None };
        let reply = fields.iter().find_map(|(k, v)| match v {
            JsonValue::Str(s) if k == "reply" => Some(s),
            _ => None,
        })?;
        // A partial string only grows; anything else (which jiter does not do) is not sent.
        let more = reply.get(self.sent..).filter(|m| !m.is_empty())?.to_string();
        self.sent = reply.len();
        Some(more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(content: &str, at: &[usize]) -> Vec<String> {
        let mut field = ReplyField::default();
        let mut out = vec![];
        let mut end = 0;
        for &n in at.iter().chain(std::iter::once(&content.len())) {
            end = n.min(content.len()).max(end);
            if let Some(more) = field.advance(&content[..end]) {
                out.push(more);
            }
        }
        out
    }

    #[test]
    fn the_reply_field_is_read_as_it_grows() {
        let content = r#"{"reply":"Keep \"tempo\"\nsmooth \ud83c\udfcc swing","theme_updates":[{"theme":"x"}]}"#;
        let cuts: Vec<usize> = (1..content.len()).collect();
        let got = pieces(content, &cuts);
        assert!(got.len() > 10, "{got:?}");
        assert_eq!(got.concat(), "Keep \"tempo\"\nsmooth \u{1F3CC} swing");
    }

    #[test]
    fn other_fields_and_broken_json_send_nothing() {
        assert!(pieces(r#"{"theme_updates":[],"primary_focus":"x"}"#, &[5, 20]).is_empty());
        assert!(pieces("not json at all", &[3]).is_empty());
    }
}
