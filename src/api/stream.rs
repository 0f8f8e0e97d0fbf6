//! `POST /api/chat/coaching/stream`: the JSON route's checks and admission (the same
//! extractors and `AppState::admit`). The answer runs in a task of its own, so a client that
//! hangs up does not stop it: the model's bill is settled and the turn stored. Whatever fails
//! before the coach is asked is answered as JSON with its status; from then on the answer is
//! server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::error::ApiError;
use super::observe::{observed, respond, LateOutcome};
use crate::chat::{Admission, Answer, Caller, ChatInput, EventSender};
use crate::metrics::Outcome;
use crate::models::{ChatStreamEvent, CoachingChatResponse, StreamDone, StreamDoneType, StreamError, StreamErrorType};
use crate::state::AppState;

/// A comment line this often while nothing else is sent, so idle proxies keep the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

pub async fn post_chat_stream(State(state): State<AppState>, caller: Caller, input: ChatInput) -> Response {
    let fresh = match state.admit(&caller, &input).await {
        Err(e) => {
            let e = ApiError::from(e);
            return respond(&caller, e.outcome(), e);
        }
        Ok(Admission::Replay(answered)) => {
            let events = stream::iter([done(body(answered.answer))]);
            return respond(&caller, answered.outcome, sse(events));
        }
        Ok(Admission::Fresh(fresh)) => fresh,
    };
    let (events, received) = mpsc::unbounded_channel();
    let (start, started) = oneshot::channel();
    let events = EventSender::new(events, start);
    let (finished, late) = oneshot::channel();
    let task_caller = caller.clone();
    tokio::spawn(async move {
        let work = answer(&state, &task_caller, &input, *fresh, &events);
        // The task-local request id does not cross the spawn; the caller carries it.
        observed(task_caller.request_id.clone(), finished, work).await;
        // The stream ends here, after the outcome was handed to the layer.
        drop(events);
    });
    let e = match started.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(ApiError::from(e)),
        // The task ended without starting or failing (it cannot, short of a panic).
        Err(_) => Some(ApiError::Internal),
    };
    if let Some(e) = e {
        return respond(&caller, e.outcome(), e);
    }
    let mut response = sse(tokio_stream::wrappers::UnboundedReceiverStream::new(received)).into_response();
    response.extensions_mut().insert(LateOutcome::new(late));
    response.extensions_mut().insert(caller);
    response
}

/// Steps 2 to 5, then the last event: `done` with the JSON route's body, or `error`.
async fn answer(state: &AppState, caller: &Caller, input: &ChatInput, fresh: crate::chat::Fresh, events: &EventSender) -> (StatusCode, Outcome) {
    match state.answer_admitted(caller, input, fresh, Some(events)).await {
        Ok(answered) => {
            events.send(done(body(answered.answer)));
            (StatusCode::OK, answered.outcome)
        }
        Err(e) => {
            // Before the stream started, the route answers the error as JSON (and the layer
            // reports it from that response).
            let Some(e) = events.fail(e) else { return (StatusCode::OK, Outcome::default()) };
            let e = ApiError::from(e);
            let status = e.status_code();
            let error = e.logged_body(&caller.request_id);
            let status_code = i64::from(status.as_u16());
            events.send(ChatStreamEvent::Error(StreamError { error, status: status_code, type_: StreamErrorType::Error }));
            (status, e.outcome())
        }
    }
}

fn body(answer: Answer) -> CoachingChatResponse {
    match answer {
        Answer::Fresh(b) | Answer::Replay(b) => *b,
    }
}

fn done(response: CoachingChatResponse) -> ChatStreamEvent {
    ChatStreamEvent::Done(StreamDone { response, type_: StreamDoneType::Done })
}

/// Each event as one `data:` line of JSON, with keep-alive comments between.
fn sse(events: impl Stream<Item = ChatStreamEvent> + Send + 'static) -> impl IntoResponse {
    let lines = events.map(|e| Ok::<Event, Infallible>(Event::default().json_data(&e).unwrap_or_else(|_| Event::default().comment("unserializable event"))));
    Sse::new(lines).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
