//! Token counting with the gpt-4o tokenizer (o200k_base), including the chat format's
//! per-message overhead, so the budget is checked in the model's own units.
//!
//! Building the tokenizer's tables takes ~150 ms in release. In Lambda it happens during INIT,
//! before the runtime asks for the first event, so no invocation waits for it; under
//! `serve` it runs on a blocking thread at start-up and a request that needs it sooner waits
//! for the rest (`startup::build_state`).

use tiktoken_rs::{o200k_base_singleton, CoreBPE};

/// Each chat message costs its content, its role and three tokens of framing.
pub const PER_MESSAGE: usize = 3;
/// Every reply is primed with three tokens.
pub const REPLY_PRIMING: usize = 3;

fn bpe() -> &'static CoreBPE {
    o200k_base_singleton()
}

/// Builds the tokenizer tables now; returns how long that took (zero when already built).
pub fn warm_up() -> std::time::Duration {
    let started = std::time::Instant::now();
    let _ = bpe().encode_ordinary("warm up");
    let took = started.elapsed();
    tracing::info!(ms = took.as_secs_f64() * 1000.0, "tokenizer ready");
    took
}

pub fn count(text: &str) -> usize {
    bpe().encode_ordinary(text).len()
}

/// Tokens of a whole chat request's messages as the model counts them.
pub fn count_chat<'a>(messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    REPLY_PRIMING
        + messages
            .into_iter()
            .map(|(role, content)| PER_MESSAGE + count(role) + count(content))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_known_o200k_values() {
        // Reference counts from the o200k_base vocabulary.
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
        assert_eq!(count("user"), 1);
        assert_eq!(count_chat([("system", "hello world")]), 3 + 3 + 1 + 2);
    }
}
