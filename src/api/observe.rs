//! The observation layer around every route: it gives the request its id, opens its I/O
//! scope, times it, and emits one EMF line and one security line (hashed ids, no message
//! text) from the [`Outcome`] the handler left in the response's extensions. A streamed
//! answer leaves a [`LateOutcome`] instead: the lines are emitted when its stream ends.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::identity::lambda_request_id;
use crate::chat::Caller;
use crate::metrics::{Outcome, OutcomeKind, RequestMetrics};
use crate::safety;
use crate::state::AppState;
use crate::store::stats::{self, IoStats};

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served ("" outside one).
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A handler's result as a response that carries its outcome and caller to the layer.
pub fn respond(caller: &Caller, outcome: Outcome, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(outcome);
    response.extensions_mut().insert(caller.clone());
    response
}

/// The outcome of a streamed answer, known when its stream ends: the status the JSON route
/// would have answered with, the outcome, and the I/O of the work done after the headers.
/// (Response extensions must be `Clone`: the receiver is shared, and taken once.)
#[derive(Clone)]
pub struct LateOutcome(std::sync::Arc<std::sync::Mutex<Option<LateReceiver>>>);

type LateReceiver = oneshot::Receiver<(StatusCode, Outcome, IoStats)>;

impl LateOutcome {
    pub fn new(receiver: LateReceiver) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(Some(receiver))))
    }

    fn take(&self) -> Option<LateReceiver> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }
}

/// Runs a streamed answer's work in the request's id and I/O scope, and hands its outcome
/// to the layer through `done`.
pub async fn observed<F>(id: String, done: oneshot::Sender<(StatusCode, Outcome, IoStats)>, work: F)
where
    F: std::future::Future<Output = (StatusCode, Outcome)>,
{
    let ((status, outcome), io) = REQUEST_ID.scope(id, stats::scope(work)).await;
    let _ = done.send((status, outcome, io));
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = lambda_request_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (mut response, io) = REQUEST_ID.scope(id.clone(), stats::scope(next.run(request))).await;
    let status = response.status();
    let caller = response.extensions_mut().remove::<Caller>();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if let Some(late) = response.extensions_mut().remove::<LateOutcome>().and_then(|l| l.take()) {
        tokio::spawn(async move {
            let (status, outcome, late_io) = late.await.unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Outcome::of(OutcomeKind::Error), IoStats::default()));
            emit(&state, &id, caller.as_ref(), status, outcome, started, io.plus(&late_io));
        });
        return response;
    }
    let outcome = response.extensions_mut().remove::<Outcome>().unwrap_or_else(|| Outcome::of(kind_of(status)));
    emit(&state, &id, caller.as_ref(), status, outcome, started, io);
    response
}

fn emit(state: &AppState, id: &str, caller: Option<&Caller>, status: StatusCode, outcome: Outcome, started: Instant, io: IoStats) {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    security_log(state, id, caller, status, &outcome, elapsed_ms);
    let first_delta_ms = outcome.first_delta_at.map(|at| at.saturating_duration_since(started).as_secs_f64() * 1000.0);
    let metrics = RequestMetrics { server_error: status.is_server_error() && outcome.limit.is_none(), outcome, response_ms: elapsed_ms, io, first_delta_ms };
    metrics.emit(&state.metrics);
}

/// The outcome of a response whose handler did not say (a route without a caller).
fn kind_of(status: StatusCode) -> OutcomeKind {
    match status {
        s if s.is_server_error() => OutcomeKind::Error,
        s if s.is_success() => OutcomeKind::Read,
        _ => OutcomeKind::Refused,
    }
}

/// One line per request with hashed ids and no message text.
fn security_log(state: &AppState, request_id: &str, who: Option<&Caller>, status: StatusCode, outcome: &Outcome, elapsed_ms: f64) {
    let key = state.log_key();
    let user = who.map(|c| safety::log_hash(key, c.user.as_str())).unwrap_or_default();
    let ip = who.map(|c| safety::log_hash(key, c.ip.as_str())).unwrap_or_default();
    tracing::info!(
        target: "security",
        request_id,
        user_hash = %user,
        ip_hash = %ip,
        status = status.as_u16(),
        outcome = outcome.kind.as_str(),
        limit = outcome.limit.map(|c| c.label()).unwrap_or(""),
        model_error = outcome.model_error.unwrap_or(""),
        filtered = outcome.filtered,
        auth = state.config.auth_mode.as_str(),
        latency_ms = elapsed_ms,
        "request"
    );
}
