//! The HTTP API: dtm's routes under `/api/dtmsvr`, its reply shapes, and
//! the one mapping of errors to status codes.

mod auth;
mod console;
mod error;
mod health;
mod json;
mod jsonrpc;
mod kv;
mod ops;
mod origin;
pub mod serve;
mod trans;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::Router;

pub use crate::access::{Access, Auth};
pub use error::ApiError;
pub use origin::AllowedOrigins;

use crate::service::Service;

use crate::engine::Engine;

/// What every handler needs, shared: one reference count per request
/// however many layers look at it.
pub type AppState = Arc<Api>;

/// What every handler needs.
pub struct Api {
    /// The replica's engine.
    pub engine: Arc<Engine>,
    /// The use cases.
    pub service: Service,
    /// Renders the metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Access tokens.
    pub auth: Auth,
    /// Origins besides dtx's own whose pages may call the API.
    pub origins: AllowedOrigins,
}

/// Refuses what a browser marks as cross-site, then what the request's
/// token has no right to; one layer for both, as every request passes it.
async fn guard(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(refused) = origin::refusal(&s.origins, req.headers()) {
        return refused;
    }
    if let Some(refused) = auth::refusal(&s.auth, &req) {
        return refused;
    }
    next.run(req).await
}

/// The whole HTTP API.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(trans::router())
        .merge(ops::router())
        .merge(kv::router())
        .merge(jsonrpc::router())
        .merge(console::router())
        .merge(health::router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::middleware::from_fn(health::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
