//! A streamed attempt: the model is asked with `stream: true` and
//! `stream_options.include_usage`; the `reply` field of its structured answer is read from the
//! partial JSON as it grows and yielded as text; the whole answer is judged at the end exactly
//! as a buffered one, and billed at the usage of the stream's last chunk.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat::{ChatCompletionStreamOptions, CreateChatCompletionRequest, CreateChatCompletionStreamResponse, FinishReason};
use futures::stream::BoxStream;
use futures::StreamExt;
use jiter::{JsonValue, PartialMode};
use tokio::time::Instant;

use super::openai::{failed, usage, Attempt, AttemptPiece, OpenAiCoach, Said};
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
            let (client, retry_after) = self.client();
            let after = || retry_after.lock().ok().and_then(|s| *s);
            let mut chunks = match tokio::time::timeout_at(by, client.chat().create_stream(request)).await {
                Err(_) => {
                    yield AttemptPiece::Ended(Box::new(Attempt::Outage { error: LlmError::Timeout, billed: Some(worst), retry_after: after() }));
                    return;
                }
                Ok(Err(e)) => {
                    yield AttemptPiece::Ended(Box::new(failed(e, worst, after())));
                    return;
                }
                Ok(Ok(chunks)) => chunks,
            };
            // The provider answered with a success status: from here the call may be billed.
            let mut got = Streamed::default();
            let mut reply = ReplyField::default();
            let ended = loop {
                let chunk = match tokio::time::timeout_at(by, chunks.next()).await {
                    Ok(None) => break None,
                    Ok(Some(Ok(chunk))) => chunk,
                    Ok(Some(Err(e))) => break Some(Some(e)),
                    // Cut off before its end.
                    Err(_) => break Some(None),
                };
                for text in got.take(chunk, &mut reply) {
                    yield AttemptPiece::Text(text);
                }
            };
            let attempt = match ended {
                None => self.judge(Said { content: &got.content, refused: got.refused, finish: got.finish }, got.usage, worst),
                // Billed at its usage if it came, else at the worst case.
                Some(None) => Attempt::Outage { error: LlmError::Timeout, billed: Some(got.usage.unwrap_or(worst)), retry_after: after() },
                Some(Some(OpenAIError::JSONDeserialize(..))) => Attempt::Unusable(LlmError::Malformed, got.usage.unwrap_or(worst)),
                Some(Some(_)) => Attempt::Outage { error: LlmError::Transport, billed: Some(got.usage.unwrap_or(worst)), retry_after: after() },
            };
            yield AttemptPiece::Ended(Box::new(attempt));
        })
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
