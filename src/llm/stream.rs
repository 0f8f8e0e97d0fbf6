//! A streamed attempt: the model is asked with `stream: true` and
//! `stream_options.include_usage`; the `reply` field of its structured answer is read from the
//! partial JSON as it grows and sent on as [`ReplyText`]; the whole answer is judged at the
//! end exactly as a buffered one, and billed at the usage of the stream's last chunk.

use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::types::chat::{ChatCompletionStreamOptions, CreateChatCompletionRequest, FinishReason};
use async_openai::Client;
use futures::StreamExt;
use jiter::{JsonValue, PartialMode};

use super::openai::{failed, usage, Attempt, OpenAiCoach};
use super::{Billed, LlmError, ReplyText, ReplyTextSender};

/// What a stream delivered, however far it got.
#[derive(Debug, Default)]
struct Streamed {
    /// The provider answered with a success status: from here the call may be billed.
    started: bool,
    content: String,
    refused: bool,
    finish: Option<FinishReason>,
    usage: Option<Billed>,
}

impl OpenAiCoach {
    pub(super) async fn attempt_streamed(&self, mut request: CreateChatCompletionRequest, timeout: Duration, worst: Billed, tx: &ReplyTextSender) -> Attempt {
        request.stream = Some(true);
        request.stream_options = Some(ChatCompletionStreamOptions { include_usage: Some(true), include_obfuscation: None });
        let (client, retry_after) = self.client();
        let mut got = Streamed::default();
        let result = tokio::time::timeout(timeout, read(&client, request, &mut got, tx)).await;
        let after = retry_after.lock().ok().and_then(|s| *s);
        match result {
            Ok(Ok(())) => self.judge(&got.content, got.refused, got.finish, got.usage, worst),
            // Cut off before its end: billed, at its usage if it came, else at the worst case.
            Err(_) => Attempt::Outage { error: LlmError::Timeout, billed: Some(got.usage.unwrap_or(worst)), retry_after: after },
            Ok(Err(OpenAIError::JSONDeserialize(..))) if got.started => Attempt::Unusable(LlmError::Malformed, got.usage.unwrap_or(worst)),
            Ok(Err(_)) if got.started => Attempt::Outage { error: LlmError::Transport, billed: Some(got.usage.unwrap_or(worst)), retry_after: after },
            Ok(Err(e)) => failed(e, worst, after),
        }
    }
}

async fn read(client: &Client<async_openai::config::OpenAIConfig>, request: CreateChatCompletionRequest, got: &mut Streamed, tx: &ReplyTextSender) -> Result<(), OpenAIError> {
    let mut stream = client.chat().create_stream(request).await?;
    got.started = true;
    let mut reply = ReplyField::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if let Some(u) = usage(chunk.usage.as_ref()) {
            got.usage = Some(u);
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.content {
                got.content.push_str(&text);
                if let Some(more) = reply.advance(&got.content) {
                    // A closed receiver only means no one is listening: the answer is still read.
                    let _ = tx.send(ReplyText::Text(more));
                }
            }
            got.refused |= choice.delta.refusal.is_some();
            if choice.finish_reason.is_some() {
                got.finish = choice.finish_reason;
            }
        }
    }
    Ok(())
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
