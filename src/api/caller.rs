//! The `Caller` extractor, for every route: identity (Cognito claims or, locally, the
//! `X-User-Id` header), the client IP as a hash, the request's deadline and its id. Once
//! extracted it is kept in the request's extensions, so later extractors see the same one.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tokio::time::Instant;

use super::error::ApiError;
use super::identity::{caller_identity, client_ip, lambda_deadline_ms};
use super::observe::current_request_id;
use crate::chat::Caller;
use crate::config::Config;
use crate::limits::IpHash;
use crate::state::AppState;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let user = caller_identity(state.config.auth_mode, parts).ok_or(ApiError::Unauthorized)?;
        let ip = client_ip(parts).or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()));
        let caller =
            Caller { user, ip: IpHash::keyed(state.log_key(), ip.as_deref().unwrap_or("unknown")), deadline: deadline(&state.config, parts), request_id: current_request_id() };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// One deadline for every wait of the request: the Lambda's remaining time (or the
/// configured time limit locally), less the margin kept to store the turn and answer.
fn deadline(config: &Config, parts: &Parts) -> Instant {
    let left = match lambda_deadline_ms(parts) {
        Some(deadline_ms) => {
            let now_ms = u64::try_from(crate::clock::wall_clock_ms()).unwrap_or(0);
            Duration::from_millis(deadline_ms.saturating_sub(now_ms)).min(config.request_time_limit)
        }
        None => config.request_time_limit,
    };
    Instant::now() + left.saturating_sub(config.deadline_margin)
}
