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

use axum::extract::DefaultBodyLimit;
use axum::Router;

pub use auth::Auth;
pub use error::ApiError;
pub use origin::AllowedOrigins;

use crate::service::Service;

use crate::engine::Engine;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The replica's engine.
    pub engine: Arc<Engine>,
    /// The use cases.
    pub service: Service,
    /// Renders the metrics.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Access tokens.
    pub auth: Arc<Auth>,
    /// Origins besides dtx's own whose pages may call the API.
    pub origins: Arc<AllowedOrigins>,
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
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            origin::same_site_only,
        ))
        .layer(axum::middleware::from_fn(health::track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
