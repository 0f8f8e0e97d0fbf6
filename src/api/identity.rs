//! Who is calling, from where, and by when the Lambda must answer.
//!
//! `AUTH_MODE=cognito`: the caller is `claims.sub` from the API Gateway Cognito authorizer in
//! the request context that lambda_http attaches. `AUTH_MODE=local`: the `X-User-Id` header.
//! Either way the id must match the schema's user-id pattern.

use axum::http::request::Parts;
use lambda_http::request::RequestContext;

use crate::config::AuthMode;
use crate::models::UserId;

fn gateway_context(parts: &Parts) -> Option<&lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext> {
    // Only the REST-API context exists with this crate's features; the wildcard keeps this
    // compiling if more are enabled.
    #[allow(unreachable_patterns)]
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV1(ctx) => Some(ctx),
        _ => None,
    }
}

/// The caller's user id, when the request carries a valid one.
pub fn caller_identity(mode: AuthMode, parts: &Parts) -> Option<UserId> {
    let raw = match mode {
        AuthMode::Cognito => {
            gateway_context(parts).and_then(|c| c.authorizer.fields.get("claims")).and_then(|claims| claims.get("sub")).and_then(|sub| sub.as_str()).map(str::to_string)
        }
        AuthMode::Local => parts.headers.get("x-user-id").and_then(|v| v.to_str().ok()).map(str::to_string),
    };
    UserId::try_from(raw?).ok()
}

/// The client address API Gateway saw (not a client-supplied header).
pub fn client_ip(parts: &Parts) -> Option<String> {
    gateway_context(parts).and_then(|c| c.identity.source_ip.clone())
}

pub fn lambda_request_id(request: &axum::extract::Request) -> Option<String> {
    let parts_ext = request.extensions();
    #[allow(unreachable_patterns)]
    let gateway = match parts_ext.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.clone(),
        _ => None,
    };
    gateway.or_else(|| parts_ext.get::<lambda_http::Context>().map(|c| c.request_id.clone()))
}

/// The invocation's deadline in epoch milliseconds, inside Lambda.
pub fn lambda_deadline_ms(parts: &Parts) -> Option<u64> {
    parts.extensions.get::<lambda_http::Context>().map(|c| c.deadline)
}

/// The API Gateway stage of the request, when it came through one.
pub fn stage<B>(request: &http::Request<B>) -> Option<String> {
    #[allow(unreachable_patterns)]
    match request.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV1(ctx) => ctx.stage.clone().filter(|s| s != "$default"),
        _ => None,
    }
}
