//! Chat completions as an OpenAI-compatible server sends them, for the test suite's mock model
//! and the benchmark's (`bench/mock_model.rs`): both include this file.

use serde_json::{json, Value};

/// A structured reply (schema/coach-reply.json) proposing no theme changes.
pub fn payload(reply: &str) -> Value {
    json!({
        "reply": reply,
        "primary_focus": null,
        "secondary_focus": null,
        "improvement": null,
        "swing_reference": null
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
