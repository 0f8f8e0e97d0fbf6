//! The observation layer around every route: it gives the request its id, opens its I/O
//! scope, times it, and emits one EMF line and one security line (hashed ids, no message
//! text) from the [`Outcome`] the handler left in the response's extensions. A streamed
//! answer leaves a [`LateOutcome`] instead: the lines are emitted when its answer ends.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::identity::lambda_request_id;
use crate::chat::{Caller, Ended};
use crate::metrics::{Outcome, OutcomeKind, RequestMetrics};
use crate::safety;
use crate::state::AppState;
use crate::stats::{self, IoStats};

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

/// The outcome of a streamed answer, known when its answer ends (whether or not the client
/// is still listening), with the I/O of its own task. A watch receiver: response extensions
/// must be `Clone`.
#[derive(Clone)]
pub struct LateOutcome(pub tokio::sync::watch::Receiver<Option<Ended>>);

impl LateOutcome {
    /// The status the JSON route would have answered with, the outcome and the late I/O.
    async fn wait(mut self) -> (StatusCode, Outcome, IoStats) {
        match self.0.wait_for(Option::is_some).await.ok().and_then(|end| end.clone()) {
            Some(Ended { outcome, io, failed: false }) => (StatusCode::OK, outcome, io),
            Some(Ended { outcome, io, failed: true }) => (StatusCode::INTERNAL_SERVER_ERROR, outcome, io),
            None => (StatusCode::INTERNAL_SERVER_ERROR, Outcome::of(OutcomeKind::Error), IoStats::default()),
        }
    }
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
    if let Some(late) = response.extensions_mut().remove::<LateOutcome>() {
        tokio::spawn(async move {
            let (status, outcome, late_io) = late.wait().await;
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
