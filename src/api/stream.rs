//! `POST /api/chat/coaching/stream`: the JSON route's checks and preparation (the same
//! extractors and `chat::prepare`), so whatever refuses a message is answered as JSON with
//! its status; from then on the answer's events are forwarded as server-sent events. The
//! response body works on the answer as it is read (`chat::answer`); a client that hangs up
//! does not stop it: the rest runs on in a task, the model's bill is settled and the turn stored.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};

use super::error::ApiError;
use super::observe::{respond, LateOutcome};
use crate::chat::{self, Caller, ChatEvent, ChatInput, Delivery, Prepared};
use crate::models::{ChatStreamEvent, CoachingChatResponse, StreamDone, StreamDoneType, StreamError, StreamErrorType};
use crate::state::AppState;

/// A comment line this often while nothing else is sent, so idle proxies keep the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

pub async fn post_chat_stream(State(state): State<AppState>, caller: Caller, input: ChatInput) -> Response {
    let composed = match chat::prepare(&state, &caller, &input).await {
        Err(e) => {
            let e = ApiError::from(e);
            return respond(&caller, e.outcome(), e);
        }
        Ok(Prepared::Replay(answered)) => {
            let events = stream::iter([done(*answered.response)]);
            return respond(&caller, answered.outcome, sse(events));
        }
        Ok(Prepared::Composed(composed)) => composed,
    };
    let answering = chat::answering(state, caller.clone(), input, *composed, Delivery::Streamed);
    let request_id = caller.request_id.clone();
    let events = answering.events.map(move |event| match event {
        ChatEvent::Show(shown) => *shown,
        ChatEvent::Done(answered) => done(*answered.response),
        // Only a fault on our side can come this late: the JSON route's error body, as the last event.
        ChatEvent::Failed(e) => {
            let e = ApiError::from(e);
            let status = i64::from(e.status_code().as_u16());
            ChatStreamEvent::Error(StreamError { error: e.logged_body(&request_id), status, type_: StreamErrorType::Error })
        }
    });
    let mut response = sse(events).into_response();
    response.extensions_mut().insert(LateOutcome(answering.ended));
    response.extensions_mut().insert(caller);
    response
}

fn done(response: CoachingChatResponse) -> ChatStreamEvent {
    ChatStreamEvent::Done(StreamDone { response, type_: StreamDoneType::Done })
}

/// Each event as one `data:` line of JSON, with keep-alive comments between.
fn sse(events: impl Stream<Item = ChatStreamEvent> + Send + 'static) -> impl IntoResponse {
    let lines = events.map(|e| Ok::<Event, Infallible>(Event::default().json_data(&e).unwrap_or_else(|_| Event::default().comment("unserializable event"))));
    Sse::new(lines).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
