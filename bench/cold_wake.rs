//! What the same work costs after the process slept: the floor under one streamed answer at a time.
//!
//! The streamed route does a little work for each piece the model writes: parse the provider's
//! chunk, run output safety on the settled words, make the event the golfer's app gets. When
//! a hundred answers stream at once the process never sleeps between pieces; when one answer
//! streams, it sleeps the model's gap (about 20 ms) before each. This runs that work for each
//! piece of a coaching answer, back to back and after a sleep of 1, 5 and 20 ms before every
//! piece, and prints the time the work itself took (the sleep is not counted), beside a
//! control that touches no memory. On a machine whose caches and predictors stay warm the
//! rows agree; where they do not, the difference is what a wake-up costs, whatever the code
//! does after it.
//!
//! `cargo run --release --example cold-wake [ROUNDS]` (`bench/README.md`, "One stream at a time").

use std::time::{Duration, Instant};

use async_openai::types::chat::CreateChatCompletionStreamResponse;
use coach_api::safety::stream::{Step, StreamSafety};

// As `coach-api` ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/completion.rs"]
#[allow(dead_code, reason = "the test suite's helpers; this uses part of them")]
mod completion;

/// One piece's work: the chunk parsed, its text through output safety, the event made and
/// written as the SSE line's JSON. Returns the bytes written, so nothing is optimised away.
fn piece(data: &str, safety: &mut StreamSafety) -> usize {
    let Ok(chunk) = serde_json::from_str::<CreateChatCompletionStreamResponse>(data) else { return 0 };
    let text: String = chunk.choices.into_iter().filter_map(|c| c.delta.content).collect();
    match safety.push(&text) {
        Step::Show(more) => coach_api::chat::stream::delta(&more).and_then(|event| serde_json::to_string(&event).ok()).map_or(0, |line| line.len()),
        Step::Hold | Step::Blocked => 0,
    }
}

/// The control: arithmetic in registers, touching no memory, for about as long as a piece's
/// work takes warm. If it slows after a sleep too, the core itself runs slower after a
/// wake-up (its clock, or a sibling thread); if only the piece slows, its caches went cold.
fn arithmetic(seed: u64) -> usize {
    let mut x = seed | 1;
    for _ in 0..4_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    usize::from(x.is_multiple_of(2))
}

/// Median time of one piece's work (and of the control) over `rounds` answers, sleeping `gap`
/// before each piece.
fn per_piece(chunks: &[String], gap: Duration, rounds: usize) -> (f64, f64) {
    let (mut times, mut control) = (Vec::with_capacity(chunks.len() * rounds), Vec::with_capacity(chunks.len() * rounds));
    let mut written = 0;
    for round in 0..rounds {
        let mut safety = StreamSafety::new();
        for (i, data) in chunks.iter().enumerate() {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let start = Instant::now();
            written += std::hint::black_box(piece(data, &mut safety));
            times.push(start.elapsed().as_secs_f64() * 1e6);
            // The control on the next wake-up, so each is measured first after a sleep.
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let start = Instant::now();
            written += std::hint::black_box(arithmetic((round * chunks.len() + i) as u64));
            control.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    std::hint::black_box(written);
    (median(&mut times), median(&mut control))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    // The provider's chunks: the reply's words, each a chunk, as the mock model streams them.
    // (The reply as plain text: the service's partial-JSON reading of the structured answer
    // is left out, a few microseconds a piece.)
    let chunks: Vec<String> = completion::COACHING_REPLY.split_inclusive(' ').map(|w| completion::stream_chunk(w, None).to_string()).collect();
    println!("{} pieces an answer, {rounds} answers a row; the median time of one piece's work", chunks.len());
    let (warm, warm_control) = per_piece(&chunks, Duration::ZERO, rounds * 10);
    println!("| sleep before each | a piece's work | against back to back | the control (arithmetic, no memory) | against back to back |");
    println!("|---|---|---|---|---|");
    println!("| none (back to back) | {warm:.1} µs | 1.0× | {warm_control:.1} µs | 1.0× |");
    for ms in [1, 5, 20] {
        let (t, c) = per_piece(&chunks, Duration::from_millis(ms), rounds);
        println!("| {ms} ms | {t:.1} µs | {:.1}× | {c:.1} µs | {:.1}× |", t / warm.max(f64::EPSILON), c / warm_control.max(f64::EPSILON));
    }
}
