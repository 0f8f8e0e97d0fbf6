//! A short content hash of templates (name and text, in name order): the prompt version's
//! first part. Plain code with no crate imports: build.rs includes this file to hash the
//! embedded templates at build, and the service hashes a `PROMPTS_DIR` with it at load.

/// 16 hex digits of SHA-256 over every template's name and text, in name order.
pub fn templates_hash<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<(&str, &str)> = pairs.into_iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (name, text) in sorted {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}
