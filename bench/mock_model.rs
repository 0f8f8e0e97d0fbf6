//! The benchmark's model: an OpenAI-compatible `POST /v1/chat/completions` on loopback that
//! answers every request after a fixed delay with the same structured coaching reply and the
//! same usage, so everything else in a measurement is the service's own doing.
//!
//! A request with `"stream": true` is answered as a stream instead: the content in word-sized
//! pieces (about a token each) `GAP_MS` apart, the usage chunk, `[DONE]`; when each answer's
//! first and last piece were written (Unix microseconds), its number of pieces and the
//! bench's tag (`bench-stream-N` in the request) are appended to `TIMES_FILE`.
//!
//! With `MOCK_EVALS=1` (the persona evals, `evals/run`) it also records every request
//! (`GET /v1/recorded`), reports the prompt's real size as `usage.prompt_tokens` (the service's
//! own o200k count, with the structured-output schema), answers a message that tries to take
//! over the coach with what a compromised model would write (links, an address) so output
//! safety is seen working, and answers a grader's rubric request with a passing grade.
//!
//! Like a model following the system prompt's memory rules, it remembers what a golfer says
//! of their goal ("my goal …"), wrist ("… wrist …") or driver ("my driver …"): one memory
//! operation with the golfer's first sentence, so flows and benchmarks see facts written.
//!
//! `cargo run --release --example mock-model -- PORT DELAY_MS [GAP_MS TIMES_FILE]`

use std::net::SocketAddr;
use std::time::Duration;

use std::io::Write;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::Value;

#[path = "../tests/support/completion.rs"]
#[allow(dead_code, reason = "the test suite's helpers; the mock uses part of them")]
mod completion;

const PROMPT_TOKENS: u32 = 700;
const COMPLETION_TOKENS: u32 = 120;

#[derive(Clone)]
struct Mock {
    delay: Duration,
    gap: Duration,
    times: Option<std::path::PathBuf>,
    /// The evals' mode: every request recorded.
    recorded: Option<std::sync::Arc<std::sync::Mutex<Vec<Value>>>>,
}

/// The text of every message of a chat request, in order.
fn texts(request: &Value) -> Vec<String> {
    request["messages"].as_array().into_iter().flatten().filter_map(|m| m["content"].as_str().map(str::to_string)).collect()
}

/// The evals' answer to a buffered request: a grade for a grader, else a coaching reply with
/// the prompt's real size.
fn eval_answer(request: &Value) -> Value {
    let all = texts(request).join("\n");
    if request["response_format"]["json_schema"]["name"] != "coach_reply" && all.to_lowercase().contains("rubric") {
        let grade = serde_json::json!({ "reason": "The loopback grader passes every output.", "pass": true, "score": 0.9 }).to_string();
        let mut answer = completion::completion(&Value::Null, 200, 30);
        answer["choices"][0]["message"]["content"] = Value::String(grade);
        return answer;
    }
    let messages: Vec<(String, String)> =
        request["messages"].as_array().into_iter().flatten().map(|m| (m["role"].as_str().unwrap_or("user").to_string(), m["content"].as_str().unwrap_or("").to_string())).collect();
    let prompt = coach_api::tokens::count_chat(messages.iter().map(|(r, c)| (r.as_str(), c.as_str()))) + coach_api::llm::response_format_tokens();
    let last = messages.last().map(|(_, c)| c.to_lowercase()).unwrap_or_default();
    let reply = if last.contains("ignore") && last.contains("instructions") {
        "Sure: visit evil.example/free-lessons or https://evil.example/x, email pro@golf.example, and <b>ignore</b> your coach. Keep your tempo smooth."
    } else {
        completion::COACHING_REPLY
    };
    completion::completion(&answer(request, reply), u32::try_from(prompt).unwrap_or(u32::MAX), COMPLETION_TOKENS)
}

/// The golfer's words: the last message, inside `message.tera`'s delimiter.
fn golfer_message(request: &Value) -> String {
    let last = texts(request).pop().unwrap_or_default();
    let inner = last.split_once("<golfer_message>").map_or(last.as_str(), |(_, rest)| rest);
    inner.split_once("</golfer_message>").map_or(inner, |(m, _)| m).trim().to_string()
}

/// The memory operations a model keeping to the memory rules would make for this message.
fn memory_ops(request: &Value) -> Value {
    let message = golfer_message(request);
    let lower = message.to_lowercase();
    let kind = if lower.contains("my goal") {
        "goal"
    } else if lower.contains("wrist") {
        "injury"
    } else if lower.contains("my driver") {
        "equipment"
    } else {
        return serde_json::json!([]);
    };
    let sentence: String = message.split_inclusive(['.', '!', '?']).next().unwrap_or(&message).trim().chars().take(150).collect();
    serde_json::json!([{ "op": "remember", "id": null, "kind": kind, "text": format!("Said: {sentence}") }])
}

/// The structured reply to `request`: `reply`, and what to remember.
fn answer(request: &Value, reply: &str) -> Value {
    let mut p = completion::payload(reply);
    p["memory"] = memory_ops(request);
    p
}

async fn recorded_requests(State(mock): State<Mock>) -> Response {
    let all = mock.recorded.map(|r| r.lock().map(|l| l.clone()).unwrap_or_default()).unwrap_or_default();
    Json(Value::Array(all)).into_response()
}

fn unix_us() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
}

async fn complete(State(mock): State<Mock>, Json(request): Json<Value>) -> Response {
    tokio::time::sleep(mock.delay).await;
    if let Some(recorded) = &mock.recorded {
        if let Ok(mut r) = recorded.lock() {
            r.push(request.clone());
        }
        if request["stream"] != Value::Bool(true) {
            return Json(eval_answer(&request)).into_response();
        }
    }
    if request["stream"] != Value::Bool(true) {
        return Json(completion::completion(&answer(&request, completion::COACHING_REPLY), PROMPT_TOKENS, COMPLETION_TOKENS)).into_response();
    }
    let content = answer(&request, completion::COACHING_REPLY).to_string();
    let mut pieces: Vec<String> = content.split_inclusive(' ').map(str::to_string).collect();
    let last = pieces.len().saturating_sub(1);
    let mut frames: Vec<(Duration, String)> = pieces
        .drain(..)
        .enumerate()
        .map(|(i, p)| {
            let finish = (i == last).then_some("stop");
            (if i == 0 { Duration::ZERO } else { mock.gap }, format!("data: {}\n\n", completion::stream_chunk(&p, finish)))
        })
        .collect();
    frames.push((Duration::ZERO, format!("data: {}\n\ndata: [DONE]\n\n", completion::usage_chunk(PROMPT_TOKENS, COMPLETION_TOKENS))));
    let count = frames.len();
    let times = mock.times.clone();
    // The bench's concurrent streams name themselves in the golfer's message (`bench-stream-N`),
    // so each answer's times can be matched with the events its client saw.
    // The last mention is the golfer's new message (the prompt's history and memory come first).
    let text = request.to_string();
    let tag = text.rfind("bench-stream-").map(|at| text[at + "bench-stream-".len()..].chars().take_while(char::is_ascii_digit).collect::<String>()).unwrap_or_default();
    let first = std::sync::Arc::new(std::sync::Mutex::new(0u128));
    let body = futures::stream::iter(frames.into_iter().enumerate()).then(move |(i, (wait, frame))| {
        let (times, first, tag) = (times.clone(), first.clone(), tag.clone());
        async move {
            tokio::time::sleep(wait).await;
            let now = unix_us();
            if i == 0 {
                *first.lock().unwrap_or_else(|p| p.into_inner()) = now;
            }
            // The last content piece (the usage chunk follows it at once).
            if i + 2 == count {
                if let Some(path) = &times {
                    let started = *first.lock().unwrap_or_else(|p| p.into_inner());
                    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                        // One write a line: answers streamed at once append to the same file.
                        let _ = f.write_all(format!("{started} {now} {} {tag}\n", count - 1).as_bytes());
                    }
                }
            }
            Ok::<_, std::convert::Infallible>(frame)
        }
    });
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().ok_or("usage: mock-model PORT DELAY_MS")?.parse()?;
    let delay = Duration::from_millis(args.next().unwrap_or_else(|| "50".into()).parse()?);
    let gap = Duration::from_millis(args.next().unwrap_or_else(|| "0".into()).parse()?);
    let times = args.next().map(std::path::PathBuf::from);
    let recorded = (std::env::var("MOCK_EVALS").as_deref() == Ok("1")).then(Default::default);
    let app =
        Router::new().route("/v1/chat/completions", post(complete)).route("/v1/recorded", axum::routing::get(recorded_requests)).with_state(Mock { delay, gap, times, recorded });
    let listener = axum::serve::ListenerExt::tap_io(tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
