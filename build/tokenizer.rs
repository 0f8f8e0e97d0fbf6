//! The gpt-4o tokenizer's vocabulary (o200k_base, from tiktoken-rs) as static tables
//! (`src/tokens/table.rs` describes them), so counting tokens needs no start-up work.

use std::fs;
use std::path::Path;

/// Writes the o200k_base tables of `src/tokens/table.rs` and `o200k.rs` (sizes and the
/// pre-tokenizing pattern), once per layout version: build.rs reruns on every schema or
/// template change, and building tiktoken-rs's tables takes a few seconds in a build script.
pub fn tables(out: &Path) {
    use crate::token_table::{fingerprint, hash, slot, LAYOUT_VERSION, RANK_MASK, SLOTS};
    let stamp = out.join("o200k.stamp");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(&LAYOUT_VERSION.to_string()) {
        return;
    }
    let bpe = tiktoken_rs::o200k_base().expect("tiktoken-rs builds o200k_base");
    // Ordinary tokens have the ranks 0..N; the first rank that does not decode ends them
    // (special tokens sit above a gap and are never produced by ordinary encoding).
    let tokens: Vec<Vec<u8>> = (0u32..).map_while(|rank| bpe.decode_bytes(&[rank]).ok()).collect();
    assert!(tokens.len() > 199_000, "o200k_base has about 200k tokens, got {}", tokens.len());
    assert!(tokens.len() < RANK_MASK as usize, "rank + 1 must fit the slot's rank bits");

    let mut bytes = Vec::with_capacity(tokens.iter().map(Vec::len).sum());
    let mut offsets = Vec::with_capacity((tokens.len() + 1) * 4);
    let mut slots = vec![0u32; SLOTS];
    for (rank, token) in tokens.iter().enumerate() {
        offsets.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        bytes.extend_from_slice(token);
        let h = hash(token);
        let mut i = slot(h);
        while slots[i] != 0 {
            let other = &tokens[(slots[i] & RANK_MASK) as usize - 1];
            assert!(other != token, "o200k_base has a duplicate token at rank {rank}");
            i = (i + 1) % SLOTS;
        }
        slots[i] = fingerprint(h) | (rank as u32 + 1);
    }
    offsets.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    let slots: Vec<u8> = slots.iter().flat_map(|s| s.to_le_bytes()).collect();

    fs::write(out.join("o200k_bytes.bin"), bytes).unwrap();
    fs::write(out.join("o200k_offsets.bin"), offsets).unwrap();
    fs::write(out.join("o200k_slots.bin"), slots).unwrap();
    fs::write(
        out.join("o200k.rs"),
        format!(
            "/// Ordinary tokens in o200k_base.\npub const TOKENS: usize = {};\n\
             /// The pattern that splits text into pieces before byte-pair merging (from tiktoken-rs).\n\
             pub const PATTERN: &str = {:?};\n",
            tokens.len(),
            tiktoken_rs::O200K_BASE_PAT_STR
        ),
    )
    .unwrap();
    fs::write(stamp, LAYOUT_VERSION.to_string()).unwrap();
}
