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
    state.watch_model();
    let id = lambda_request_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (mut response, io) = REQUEST_ID.scope(id.clone(), stats::scope(next.run(request))).await;
    let status = response.status();
    let caller = response.extensions_mut().remove::<Caller>();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    if let Some(super::RateLimit(quota)) = response.extensions_mut().remove::<super::RateLimit>() {
        super::rate_limit_headers(response.headers_mut(), &quota, state.clock.now());
    }
    if let Some(late) = response.extensions_mut().remove::<LateOutcome>() {
        tokio::spawn(async move {
            let (status, outcome, late_io) = late.wait().await;
            Observed { id, caller, status, outcome, started, io: io.plus(&late_io) }.emit(&state);
        });
        return response;
    }
    let outcome = response.extensions_mut().remove::<Outcome>().unwrap_or_else(|| Outcome::of(kind_of(status)));
    Observed { id, caller, status, outcome, started, io }.emit(&state);
    response
}

/// One request as the layer saw it.
struct Observed {
    id: String,
    caller: Option<Caller>,
    status: StatusCode,
    outcome: Outcome,
    started: Instant,
    io: IoStats,
}

impl Observed {
    /// The request's security line and EMF line.
    fn emit(self, state: &AppState) {
        let elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        self.security_log(state, elapsed_ms);
        let first_delta_ms = self.outcome.first_delta_at.map(|at| at.saturating_duration_since(self.started).as_secs_f64() * 1000.0);
        let server_error = self.status.is_server_error() && self.outcome.limit.is_none();
        let metrics = RequestMetrics { server_error, outcome: self.outcome, response_ms: elapsed_ms, io: self.io, first_delta_ms };
        metrics.emit(&state.metrics);
    }
}

/// The outcome of a response whose handler did not say (a route without a caller).
fn kind_of(status: StatusCode) -> OutcomeKind {
    match status {
        s if s.is_server_error() => OutcomeKind::Error,
        s if s.is_success() => OutcomeKind::Read,
        _ => OutcomeKind::Refused,
    }
}

impl Observed {
    /// One line per request with hashed ids and no message text.
    fn security_log(&self, state: &AppState, elapsed_ms: f64) {
        let key = state.log_key();
        let (who, status, outcome) = (self.caller.as_ref(), self.status, &self.outcome);
        let user = who.map(|c| safety::log_hash(key, c.user.as_str())).unwrap_or_default();
        let ip = who.map(|c| safety::log_hash(key, c.ip.as_str())).unwrap_or_default();
        tracing::info!(
            target: "security",
            request_id = self.id,
            user_hash = %user,
            ip_hash = %ip,
            status = status.as_u16(),
            outcome = outcome.kind.as_str(),
            limit = outcome.limit.map(|c| c.label()).unwrap_or(""),
            model_error = outcome.model_error.unwrap_or(""),
            filtered = outcome.filtered,
            prompt_version = outcome.prompt_version.as_deref().unwrap_or(""),
            variant = outcome.variant.as_deref().unwrap_or(""),
            auth = state.config.auth_mode.as_str(),
            latency_ms = elapsed_ms,
            "request"
        );
    }
}
