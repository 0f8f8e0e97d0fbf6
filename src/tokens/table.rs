//! The layout of the o200k_base tables that `build.rs` writes into `OUT_DIR` and
//! `tokens/mod.rs` reads as static data. This file is compiled into both (build.rs includes it
//! by path), so the hash that places a token and the hash that finds it are one function.
//!
//! - `o200k_bytes.bin`: every token's bytes, concatenated in rank order;
//! - `o200k_offsets.bin`: `TOKENS + 1` little-endian u32 offsets into the bytes (rank r is
//!   `bytes[offsets[r]..offsets[r + 1]]`);
//! - `o200k_slots.bin`: an open-addressing table of `1 << SLOT_BITS` little-endian u32 slots,
//!   probed linearly from `slot(hash(bytes))`; a slot is 0 when empty, else `rank + 1` in its
//!   low `RANK_BITS` and the token's `fingerprint` above them, so a probe compares a token's
//!   bytes only when the fingerprints agree (about one slot in 16,000 that does not hold it).

/// 2^18 slots for ~200k tokens, a load of 0.76: a miss probes about nine slots, which are
/// 36 neighbouring bytes, one or two cache lines. The table is 1 MB (half of 2^19 slots at a
/// load of 0.38, whose every probe of a filled slot read the token's offset and bytes).
pub const SLOT_BITS: u32 = 18;
pub const SLOTS: usize = 1 << SLOT_BITS;
/// `rank + 1` fits in 18 bits (o200k_base has 200,019 ordinary tokens; build.rs checks).
pub const RANK_BITS: u32 = 18;
pub const RANK_MASK: u32 = (1 << RANK_BITS) - 1;
const FINGERPRINT_BITS: u32 = 32 - RANK_BITS;
/// Bumped when the layout changes, so build.rs regenerates the tables.
pub const LAYOUT_VERSION: u32 = 2;

/// FNV-1a over the bytes, then a multiplicative mix so the high bits are spread.
#[inline]
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The first slot to probe: the hash's top bits.
#[inline]
pub fn slot(hash: u64) -> usize {
    (hash >> (64 - SLOT_BITS)) as usize
}

/// The slot's fingerprint bits, already in place: the hash's next bits, never all zero, so
/// a filled slot is never 0.
#[inline]
pub fn fingerprint(hash: u64) -> u32 {
    let bits = ((hash >> (64 - SLOT_BITS - FINGERPRINT_BITS)) as u32) & ((1 << FINGERPRINT_BITS) - 1);
    bits.max(1) << RANK_BITS
}
