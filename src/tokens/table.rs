//! The layout of the o200k_base tables that `build.rs` writes into `OUT_DIR` and
//! `tokens/mod.rs` reads as static data. This file is compiled into both (build.rs includes it
//! by path), so the hash that places a token and the hash that finds it are one function.
//!
//! - `o200k_bytes.bin`: every token's bytes, concatenated in rank order;
//! - `o200k_offsets.bin`: `TOKENS + 1` little-endian u32 offsets into the bytes (rank r is
//!   `bytes[offsets[r]..offsets[r + 1]]`);
//! - `o200k_slots.bin`: an open-addressing table of `1 << SLOT_BITS` little-endian u32 slots,
//!   each `rank + 1` or 0 for empty, probed linearly from `slot(hash(bytes))`.

/// 2^19 slots for ~200k tokens: a load of 0.38, so a miss probes about 1.3 slots.
pub const SLOT_BITS: u32 = 19;
pub const SLOTS: usize = 1 << SLOT_BITS;
/// Bumped when the layout changes, so build.rs regenerates the tables.
pub const LAYOUT_VERSION: u32 = 1;

/// FNV-1a over the bytes, then a multiplicative mix so the slot's high bits are spread.
#[inline]
pub fn slot(bytes: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SLOT_BITS)) as usize
}
