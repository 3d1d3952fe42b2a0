//! Health and metrics: `/api/ping` (dtm's), `/livez`, `/readyz`, and
//! `/api/metrics` (dtm's path) in Prometheus text format.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::{otel, telemetry};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ping", any(|| async { Json(json!({"msg": "pong"})) }))
        .route("/livez", get(|| async { Json(json!({"status": "alive"})) }))
        .route("/readyz", get(readyz))
        .route("/api/metrics", get(metrics))
}

/// Ready: Redis answers and this replica is not draining. Scripts are
/// loaded before the port opens, so a serving replica has them.
async fn readyz(State(s): State<AppState>) -> Response {
    if s.engine.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining"})),
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), s.engine.store.ping()).await {
        Ok(Ok(())) => Json(json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "redis unavailable", "message": e.to_string()})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "redis unavailable", "message": "ping timed out"})),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Counts every request by its matched route (never the raw path, which
/// could carry anything), and runs an API call in its trace context
/// ([`otel::api_call`]).
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = method_label(req.method());
    let started = Instant::now();
    // health checks and scrapes come every few seconds and change nothing:
    // no spans of their own
    let traced = route.starts_with("/api/") && !matches!(route, "/api/ping" | "/api/metrics");
    let cx = traced
        .then(|| otel::api_call(req.headers(), method, route))
        .flatten();
    let response = otel::in_context(cx.clone(), next.run(req)).await;
    let status = response.status().as_u16();
    if let Some(cx) = &cx {
        otel::answered(cx, status);
    }
    telemetry::http(route, method, status, started.elapsed());
    response
}

/// The metric label of a request method: the standard methods by name,
/// anything else `other`, so a client cannot grow the series count.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&axum::http::Method::POST), "POST");
        for raw in ["PURGE", "FOO", &"X".repeat(5000)] {
            let m = axum::http::Method::from_bytes(raw.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other", "{raw:.10}");
        }
    }
}
