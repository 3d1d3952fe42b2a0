//! Access control, off unless tokens are configured: every route but
//! health and the console's own files needs `Authorization: Bearer
//! <token>`; a read-only token may only read.

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::access::{Access, Auth};

/// Routes a read-only token may use.
const READ_ROUTES: [&str; 8] = [
    "/api/dtmsvr/version",
    "/api/dtmsvr/newGid",
    "/api/dtmsvr/query",
    "/api/dtmsvr/all",
    "/api/dtmsvr/scanKV",
    "/api/dtmsvr/queryKV",
    "/api/metrics",
    "/api/admin/attention",
];

/// Paths open to anyone.
fn is_open(path: &str) -> bool {
    matches!(path, "/api/ping" | "/livez" | "/readyz")
        || path == "/admin"
        || path.starts_with("/admin/")
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut r = (status, Json(json!({"message": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// The middleware.
/// The refusal of `req` under `auth`, if it has no right to its route.
pub(super) fn refusal(auth: &Auth, req: &Request) -> Option<Response> {
    if !auth.enabled() || is_open(req.uri().path()) {
        return None;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    match auth.access(token) {
        Access::Full => None,
        Access::Read => {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
            if route.is_some_and(|r| READ_ROUTES.contains(&r)) {
                None
            } else {
                Some(refuse(StatusCode::FORBIDDEN, "this token may only read"))
            }
        }
        Access::None if token.is_empty() => Some(refuse(
            StatusCode::UNAUTHORIZED,
            "missing token: send Authorization: Bearer <token>",
        )),
        Access::None => Some(refuse(StatusCode::UNAUTHORIZED, "unknown token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_the_console_files_are_open() {
        assert!(is_open("/livez") && is_open("/admin/") && !is_open("/api/dtmsvr/all"));
    }
}
