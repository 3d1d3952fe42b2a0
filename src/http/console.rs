//! The admin console at `/admin/`: one static page that uses only dtx's
//! own API, plus the one query it needs that dtm has no route for (the
//! attention list).

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::json::{query_map, rfc3339, trans_json};
use super::trans::ApiResult;
use super::{ApiError, AppState};

const PAGE: &str = include_str!("console/index.html");

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(page))
        .route("/admin/index.html", get(page))
        .route("/api/admin/attention", get(attention))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

/// Transactions overdue by more than `overdue_s` (5) seconds and not
/// claimed, or that failed `min_attempt` (3) times in a row; and those set
/// aside because they cannot be decoded.
async fn attention(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let num = |k: &str, d: u64| -> Result<u64, ApiError> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(d),
            Some(v) => v
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("{k} must be a number"))),
        }
    };
    let overdue_ms = num("overdue_s", 5)?.saturating_mul(1000);
    let min_attempt = num("min_attempt", 3)? as u32;
    let now = s.engine.now_ms();
    let found = s
        .engine
        .store
        .attention(now, overdue_ms, min_attempt, 200)
        .await?;
    let list: Vec<Value> = found
        .iter()
        .map(|(t, at)| {
            let mut v = trans_json(t);
            v["due_in_ms"] = json!(*at as i64 - now as i64);
            v
        })
        .collect();
    let aside: Vec<Value> = s
        .engine
        .store
        .set_aside_list(200)
        .await?
        .into_iter()
        .map(|(gid, since, why)| json!({"gid": gid, "since": rfc3339(since), "error": why}))
        .collect();
    Ok(Json(json!({"transactions": list, "set_aside": aside})))
}
