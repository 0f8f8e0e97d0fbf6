//! Chat completions as an OpenAI-compatible server sends them, for the test suite's mock model
//! and the benchmark's (`bench/mock_model.rs`): both include this file.

use serde_json::{json, Value};

/// About 120 tokens of reply, as a coaching answer runs (the benchmark's model answers with it).
pub const COACHING_REPLY: &str = "Good question. Your last swings show the path still working from out to in, \
which is what starts the slice. For the next range session, make ten slow half swings where the \
downswing starts with the lead hip turning, and let the club drop to the inside before the arms \
move. Then hit five full drivers at eighty percent and watch the start line: the ball should \
start right of target and curve back. Keep grip pressure light, about four out of ten, so the \
face can close on its own. Tell me how it goes and we will check the next analysis together.";

/// A structured reply (schema/coach-reply.json) proposing no theme or memory changes.
pub fn payload(reply: &str) -> Value {
    json!({
        "reply": reply,
        "primary_focus": null,
        "secondary_focus": null,
        "improvement": null,
        "swing_reference": null,
        "memory": []
    })
}

/// A chat completion whose content is `payload` (serialized), with the given usage.
pub fn completion(payload: &Value, prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_764_000_000u32,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": payload.to_string() },
            "finish_reason": "stop"
        }],
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens }
    })
}

/// One chunk of a streamed chat completion carrying `content` (and, last, the finish reason).
pub fn stream_chunk(content: &str, finish: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000u32,
        "model": "gpt-4o-2024-08-06",
        "choices": [{ "index": 0, "delta": { "role": "assistant", "content": content }, "finish_reason": finish }],
        "usage": null
    })
}

/// The chunk `stream_options.include_usage` adds before `[DONE]`: no choices, the usage.
pub fn usage_chunk(prompt_tokens: u32, completion_tokens: u32) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_764_000_000u32,
        "model": "gpt-4o-2024-08-06",
        "choices": [],
        "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens }
    })
}

/// `content` cut into `n` pieces of about equal length (on character boundaries).
pub fn split_even(content: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = content.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}
