//! A mock OpenAI-compatible model that streams: it writes a scripted answer as server-sent
//! chunks, `gap` apart, and records when it wrote each (wiremock answers in one piece).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::time::Instant;

use crate::helpers::completion::{completion, stream_chunk, usage_chunk};

#[derive(Clone)]
pub struct Script {
    /// The pieces of the message's content, in order.
    pub pieces: Vec<String>,
    pub gap: Duration,
    pub usage: (u32, u32),
    /// The first answer's connection drops after this many pieces (no usage, no `[DONE]`).
    pub drop_first_after: Option<usize>,
}

impl Script {
    pub fn new(pieces: Vec<String>, gap: Duration, usage: (u32, u32)) -> Self {
        Script { pieces, gap, usage, drop_first_after: None }
    }
}

#[derive(Clone)]
pub struct StreamModel {
    /// The base URL to configure (`…/v1`).
    pub base_url: String,
    script: Script,
    /// When each content piece was written, by index.
    pub written: Arc<Mutex<Vec<Instant>>>,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl StreamModel {
    pub async fn start(script: Script) -> Self {
        let model = StreamModel { base_url: String::new(), script, written: Arc::default(), requests: Arc::default() };
        let app = Router::new().route("/v1/chat/completions", post(answer)).with_state(model.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        StreamModel { base_url: format!("http://{addr}/v1"), ..model }
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    pub fn written(&self) -> Vec<Instant> {
        self.written.lock().unwrap().clone()
    }
}

async fn answer(State(model): State<StreamModel>, Json(request): Json<Value>) -> Response {
    model.requests.lock().unwrap().push(request.clone());
    let s = model.script.clone();
    let first = model.requests.lock().unwrap().len() == 1;
    if request["stream"] != Value::Bool(true) {
        let content: String = s.pieces.concat();
        let body = completion(&serde_json::from_str(&content).unwrap_or(Value::Null), s.usage.0, s.usage.1);
        return Json(body).into_response();
    }
    let last = s.pieces.len().saturating_sub(1);
    let written = model.written.clone();
    let drop_after = s.drop_first_after.filter(|_| first);
    let chunks = futures::stream::iter(s.pieces.clone().into_iter().enumerate()).then(move |(i, piece)| {
        let written = written.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(s.gap).await;
            }
            if drop_after.is_some_and(|n| i >= n) {
                return Err(std::io::Error::other("the connection dropped"));
            }
            written.lock().unwrap().push(Instant::now());
            let finish = (i == last).then_some("stop");
            Ok::<_, std::io::Error>(format!("data: {}\n\n", stream_chunk(&piece, finish)))
        }
    });
    let (p, c) = s.usage;
    let tail = futures::stream::iter([Ok(format!("data: {}\n\ndata: [DONE]\n\n", usage_chunk(p, c)))]);
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(futures::StreamExt::chain(chunks, tail))).into_response()
}

use futures::StreamExt as _;
