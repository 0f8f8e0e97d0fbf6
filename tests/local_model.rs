//! Conformance with a real OpenAI-compatible server: `coach-api serve` on DynamoDB Local,
//! calling SmolLM2-135M-Instruct on the local model server (evals/local-model/), which
//! scripts/test starts and names in `LOCAL_MODEL_URL` (and `LOCAL_MODEL_CALLS`, the file where
//! it writes each completion's usage). A fixed set of messages goes through both chat routes;
//! every answer must be in its schema, stored, settled from the server's usage, within the
//! 1,500-token limit as the server counts it, and replayed without a second call; an answer cut
//! at `max_tokens` is retried shorter once and then falls back; the facts and themes the model
//! proposed must pass output safety. The figures (answered by the model, degraded, latency,
//! tokens) are printed. A 135M model shows what a real server does, not how good the coach is:
//! the run asks that most messages, not all, be answered by the model.

#![allow(clippy::print_stdout, reason = "the conformance run prints its figures")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

const MODEL_ROW: &str = "smollm2-135m-instruct";
const TOKEN_LIMIT: u64 = 1500;

/// What the suite needs from scripts/test; missing, the test fails (it never skips).
struct Setting {
    model_url: String,
    calls: PathBuf,
    dynamodb: String,
}

fn setting() -> Result<Setting, Error> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set: run this test with scripts/test, which starts the local model server and DynamoDB Local"));
    Ok(Setting { model_url: var("LOCAL_MODEL_URL")?, calls: PathBuf::from(var("LOCAL_MODEL_CALLS")?), dynamodb: var("DYNAMODB_ENDPOINT")? })
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `coach-api` with the conformance run's environment and `extra` settings.
fn coach_api(s: &Setting, port: u16, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coach-api"));
    cmd.env("DYNAMODB_ENDPOINT", &s.dynamodb)
        .env("DYNAMODB_TABLE_COACHING", "lm-coaching-conversations")
        .env("DYNAMODB_TABLE_ANALYSES", "lm-golf-coach-analyses")
        .env("AUTH_MODE", "local")
        .env("PORT", port.to_string())
        .env("OPENAI_MODEL", MODEL_ROW)
        .env("OPENAI_BASE_URL", &s.model_url)
        .env_remove("OPENAI_API_KEY")
        .env("RUST_LOG", "warn");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

async fn serve(s: &Setting, extra: &[(&str, &str)], log: &str) -> Result<(Running, String), Error> {
    let port = free_port()?;
    std::fs::create_dir_all("target")?;
    let out = std::fs::File::create(format!("target/{log}"))?;
    let child = coach_api(s, port, extra).arg("serve").stdout(Stdio::null()).stderr(out).spawn()?;
    let running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{base}/openapi.json")).await.is_ok_and(|r| r.status().is_success()) {
            return Ok((running, base));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("coach-api serve did not answer on {base} (target/{log})").into())
}

fn setup(s: &Setting) -> Result<(), Error> {
    for command in ["migrate", "seed"] {
        let status = coach_api(s, 0, &[]).arg(command).stdout(Stdio::null()).status()?;
        if !status.success() {
            return Err(format!("coach-api {command} failed: {status}").into());
        }
    }
    Ok(())
}

/// One completion as the local model server counted it (`--calls`).
#[derive(Debug, serde::Deserialize)]
struct Call {
    prompt_tokens: u64,
    completion_tokens: u64,
    max_tokens: u64,
    finish_reason: String,
}

fn calls(s: &Setting) -> Result<Vec<Call>, Error> {
    let text = std::fs::read_to_string(&s.calls).unwrap_or_default();
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// The requests the server was sent, newest last (`--record`).
async fn recorded(s: &Setting) -> Result<Vec<Value>, Error> {
    Ok(reqwest::get(format!("{}/recorded", s.model_url)).await?.json().await?)
}

/// What one message got: the response body, the time to it, and the server's calls for it.
struct Answer {
    body: Value,
    latency: Duration,
    calls: Vec<Call>,
    /// Per call: the server's prompt tokens over ours (o200k) for the messages it was sent.
    ratios: Vec<f64>,
}

async fn post(http: &reqwest::Client, url: &str, golfer: &str, body: &Value) -> Result<reqwest::Response, Error> {
    Ok(http.post(url).header("x-user-id", golfer).json(body).send().await?)
}

/// The streamed route's events: the text the app would show, and the `done` response.
async fn streamed(response: reqwest::Response) -> Result<Value, Error> {
    let text = response.text().await?;
    let schemas = coach_api::schemas::get()?;
    let mut shown = String::new();
    let mut done = None;
    let mut pieces = 0;
    for block in text.split("\n\n").filter(|b| b.starts_with("data:")) {
        let event: Value = serde_json::from_str(block.trim_start_matches("data:").trim())?;
        assert!(schemas.chat_stream.is_valid(&event), "a stream event outside schema/chat-stream.json: {event}");
        match event["type"].as_str() {
            Some("delta") => {
                pieces += 1;
                shown.push_str(event["text"].as_str().unwrap_or_default());
            }
            Some("replace") => {
                pieces += 1;
                shown = event["text"].as_str().unwrap_or_default().to_string();
            }
            Some("done") => done = Some(event["response"].clone()),
            other => return Err(format!("the stream ended with {other:?}: {event}").into()),
        }
    }
    let done = done.ok_or("the stream has no done event")?;
    // A replay is a single `done`; an answer shows its text first.
    assert!(
        pieces == 0 || shown == done["message"]["content"].as_str().unwrap_or_default(),
        "the text shown is the answer stored: {shown:?} against {}",
        done["message"]["content"]
    );
    Ok(done)
}

async fn ask(s: &Setting, http: &reqwest::Client, base: &str, golfer: &str, body: &Value, stream: bool) -> Result<Answer, Error> {
    let before = calls(s)?.len();
    let started = Instant::now();
    let url = if stream { format!("{base}/api/chat/coaching/stream") } else { format!("{base}/api/chat/coaching") };
    let response = post(http, &url, golfer, body).await?;
    let status = response.status().as_u16();
    let body = if stream && status == 200 { streamed(response).await? } else { response.json::<Value>().await? };
    let latency = started.elapsed();
    assert_eq!(status, 200, "{golfer}: {body}");
    assert!(coach_api::schemas::get()?.chat_response.is_valid(&body), "a response outside its schema: {body}");
    let calls: Vec<Call> = calls(s)?.into_iter().skip(before).collect();
    let sent = recorded(s).await?;
    let ratios = sent
        .iter()
        .rev()
        .take(calls.len())
        .rev()
        .zip(&calls)
        .map(|(request, call)| {
            let messages = request["messages"].as_array().cloned().unwrap_or_default();
            let ours = coach_api::tokens::count_chat(messages.iter().map(|m| (m["role"].as_str().unwrap_or_default(), m["content"].as_str().unwrap_or_default())));
            call.prompt_tokens as f64 / ours.max(1) as f64
        })
        .collect();
    Ok(Answer { body, latency, calls, ratios })
}

/// What every answer must show, whoever wrote it.
fn check_settled(golfer: &str, a: &Answer) {
    let usage = &a.body["usage"];
    assert!(!a.calls.is_empty(), "{golfer}: the model was not called");
    let prompt: u64 = a.calls.iter().map(|c| c.prompt_tokens).sum();
    let completion: u64 = a.calls.iter().map(|c| c.completion_tokens).sum();
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(prompt), Some(completion)), "{golfer}: settled at the server's usage");
    for c in &a.calls {
        assert!(c.prompt_tokens + c.max_tokens <= TOKEN_LIMIT, "{golfer}: {} prompt + {} max_tokens past {TOKEN_LIMIT} as the server counts them", c.prompt_tokens, c.max_tokens);
        assert!(c.prompt_tokens + c.completion_tokens <= TOKEN_LIMIT);
    }
    assert_eq!(a.body["storage"], "stored", "{golfer}: {}", a.body);
    assert_eq!(a.body["usage"]["cost_micro_usd"], 0, "a self-hosted row bills nothing");
    let model = a.body["source"] == MODEL_ROW;
    assert_eq!(a.body["degraded"].as_bool(), Some(!model), "{golfer}: degraded exactly when the model's answer was not used: {}", a.body);
}

fn percentile(values: &[u128], p: usize) -> u128 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get((p * v.len()).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0)
}

/// The fixed set: golfer, message, route (streamed or not).
const MESSAGES: [(&str, &str, bool); 8] = [
    ("demo-alice", "How do I fix my slice?", false),
    ("demo-ben", "My left wrist hurts after range sessions. What should I practise this week?", true),
    ("demo-chloe", "I just bought new irons. Any tips for my tempo with them?", false),
    ("demo-alice", "What drill helps me keep my head still through impact?", true),
    ("demo-ben", "My goal is to break 90 by June. Where should I start?", false),
    ("demo-chloe", "How far should I stand from the ball with a driver?", true),
    ("demo-alice", "I play at Pebble Creek on Saturdays. How should I warm up?", false),
    ("demo-ben", "Can you help me get out of bunkers in one shot?", true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_model_answers_through_both_routes_settled_stored_and_within_the_token_limit() -> Result<(), Error> {
    let s = setting()?;
    setup(&s)?;
    let (_service, base) = serve(&s, &[], "local-model-serve.log").await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let row = coach_api::llm::table::spec(MODEL_ROW)?;
    let mut answers = vec![];
    let mut retried = 0;
    for (i, (golfer, message, stream)) in MESSAGES.iter().enumerate() {
        let body = json!({ "message": message, "clientMessageId": format!("lm-conformance-{i:04}") });
        let a = ask(&s, &http, &base, golfer, &body, *stream).await?;
        check_settled(golfer, &a);
        for r in &a.ratios {
            assert!(
                *r <= f64::from(row.tokens_per_o200k_milli) / 1000.0,
                "{golfer}: the server counted {r:.3} of its tokens per o200k token, more than the row's tokens_per_o200k"
            );
        }
        // The same message again, on the other route: the stored answer without a second
        // call; a fallback is not kept for the app's id, so its retry is answered anew.
        let again = ask(&s, &http, &base, golfer, &body, !*stream).await?;
        if a.body["degraded"] == false {
            assert!(again.calls.is_empty(), "{golfer}: a replay called the model");
            assert_eq!(again.body["message"], a.body["message"], "{golfer}: a replay is the stored answer");
        } else {
            check_settled(golfer, &again);
            retried += 1;
        }
        answers.push((golfer, *stream, a));
    }

    // What the model proposed to remember and to coach on passed output safety.
    let mut facts = 0;
    let mut themes = 0;
    for golfer in ["demo-alice", "demo-ben", "demo-chloe"] {
        let memory: Value = http.get(format!("{base}/api/chat/coaching/memory")).header("x-user-id", golfer).send().await?.json().await?;
        for fact in memory["facts"].as_array().cloned().unwrap_or_default() {
            let text = fact["text"].as_str().unwrap_or_default();
            assert_eq!(coach_api::safety::clean_fact(text, 160).as_deref(), Some(text), "{golfer}: a remembered fact that output safety would not keep: {text:?}");
            facts += 1;
        }
        let view: Value = http.get(format!("{base}/api/chat/coaching/themes")).header("x-user-id", golfer).send().await?.json().await?;
        for theme in strings(&view["coaching_themes"]) {
            // (Not compared letter for letter: a theme clipped with "…" reads as "..." once normalized.)
            let clean = coach_api::safety::clean_output(&theme);
            let safe = !clean.blocked && clean.redactions == 0 && !coach_api::safety::holds_markup(&theme) && !coach_api::safety::holds_delimiter(&theme);
            assert!(safe, "{golfer}: a coaching theme that output safety would not take: {theme:?}");
            themes += 1;
        }
    }

    let by_model = answers.iter().filter(|(_, _, a)| a.body["source"] == MODEL_ROW).count();
    let streamed_by_model = answers.iter().filter(|(_, s, a)| *s && a.body["source"] == MODEL_ROW).count();
    let latencies: Vec<u128> = answers.iter().map(|(_, _, a)| a.latency.as_millis()).collect();
    let totals: Vec<u64> = answers.iter().map(|(_, _, a)| a.body["usage"]["total_tokens"].as_u64().unwrap_or(0)).collect();
    let all_calls: Vec<&Call> = answers.iter().flat_map(|(_, _, a)| &a.calls).collect();
    let ratios: Vec<f64> = answers.iter().flat_map(|(_, _, a)| a.ratios.iter().copied()).collect();
    let n = answers.len();
    println!("local model conformance ({MODEL_ROW}, {n} messages, {} model calls):", all_calls.len());
    println!("  answered by the model  {by_model}/{n} ({} %), streamed {streamed_by_model}/{}", 100 * by_model / n, n / 2);
    println!("  degraded (fallback)    {}/{n} ({} %)", n - by_model, 100 * (n - by_model) / n);
    println!("  latency p50 / p95      {} / {} ms", percentile(&latencies, 50), percentile(&latencies, 95));
    println!(
        "  tokens per call        max {} of {TOKEN_LIMIT} (prompt + reply, the server's count)",
        all_calls.iter().map(|c| c.prompt_tokens + c.completion_tokens).max().unwrap_or(0)
    );
    println!("  tokens per message     max {}, mean {} (all its calls; at most two are reserved)", totals.iter().max().unwrap_or(&0), totals.iter().sum::<u64>() / n as u64);
    println!(
        "  prompt tokens          max {} (server's count) with max_tokens {}",
        all_calls.iter().map(|c| c.prompt_tokens).max().unwrap_or(0),
        all_calls.iter().map(|c| c.max_tokens).max().unwrap_or(0)
    );
    println!("  cut at max_tokens      {} of {} calls", all_calls.iter().filter(|c| c.finish_reason == "length").count(), all_calls.len());
    println!(
        "  server tokens per o200k token  max {:.3}, mean {:.3} (row: {})",
        ratios.iter().copied().fold(0.0, f64::max),
        ratios.iter().sum::<f64>() / ratios.len().max(1) as f64,
        f64::from(row.tokens_per_o200k_milli) / 1000.0
    );
    println!("  fallbacks asked again  {retried} (answered anew, settled and stored too)");
    println!("  facts remembered {facts}, coaching themes {themes}: all pass output safety");
    assert!(2 * by_model > n, "the model answered {by_model} of {n} messages: the service mishandles its answers");
    assert!(streamed_by_model > 0, "no streamed message was answered by the model");
    Ok(())
}

/// Every string in a JSON value.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => vec![],
    }
}

#[test]
fn models_check_finds_the_self_hosted_row_on_the_servers_list() -> Result<(), Error> {
    let s = setting()?;
    let out = coach_api(&s, 0, &[]).args(["models", "check"]).output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "models check against the local server failed: {table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.lines().any(|l| l.contains(MODEL_ROW)), "the row is not in the printed table: {table}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_at_max_tokens_is_asked_once_shorter_then_falls_back_billed_at_usage() -> Result<(), Error> {
    let s = setting()?;
    setup(&s)?;
    // A reply limit a 135M model's structured reply does not fit in (its fields alone take a
    // third of it, and the model writes 200-400 tokens at the default): the only setting
    // changed here, so that a real answer is cut at max_tokens, and the shorter retry (the
    // limit less the instruction, at least half of it) is too.
    let (_service, base) = serve(&s, &[("MAX_REPLY_TOKENS", "100")], "local-model-serve-cut.log").await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let body = json!({ "message": "Tell me everything about the golf swing, from grip to finish.", "clientMessageId": "lm-conformance-cut-0001" });
    let a = ask(&s, &http, &base, "demo-chloe", &body, false).await?;
    check_settled("demo-chloe", &a);
    let finishes: Vec<&str> = a.calls.iter().map(|c| c.finish_reason.as_str()).collect();
    assert_eq!(finishes, ["length", "length"], "cut, then asked once more, shorter");
    assert!(a.calls[1].max_tokens < a.calls[0].max_tokens, "the second call leaves room for the instruction to be shorter");
    assert_eq!((a.body["source"].as_str(), a.body["degraded"].as_bool()), (Some("fallback"), Some(true)));
    assert_eq!(a.body["usage"]["completion_tokens"].as_u64(), Some(a.calls.iter().map(|c| c.completion_tokens).sum()), "both cut answers billed at their usage");
    Ok(())
}
