//! Topics (contract §8.1) and the KV API behind them (§8.2): the HTTP
//! adapter of the topic use cases in `service::topics`, and the KV reads.

use axum::extract::{Path, RawQuery, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::json::{query_map, rfc3339};
use super::trans::{success, ApiResult};
use super::{ApiError, AppState};
use crate::store::KvEntry;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dtmsvr/subscribe", get(subscribe))
        .route("/api/dtmsvr/unsubscribe", get(unsubscribe))
        .route("/api/dtmsvr/topic/{name}", delete(delete_topic))
        .route("/api/dtmsvr/scanKV", get(scan_kv))
        .route("/api/dtmsvr/queryKV", get(query_kv))
}

fn kv_json(e: &KvEntry) -> Value {
    json!({
        "id": 0,
        "create_time": rfc3339(e.create_ms),
        "update_time": rfc3339(e.update_ms),
        "cat": e.cat,
        "k": e.key,
        "v": e.value,
        "version": e.version,
    })
}

async fn subscribe(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    s.service
        .subscribe(&get("topic"), &get("url"), &get("remark"))
        .await?;
    success()
}

async fn unsubscribe(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    s.service.unsubscribe(&get("topic"), &get("url")).await?;
    success()
}

async fn delete_topic(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    s.service.delete_topic(&name).await?;
    success()
}

async fn scan_kv(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let cat = q.get("cat").cloned().unwrap_or_default();
    let limit: usize = match q.get("limit").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => 100,
        // the service checks the range
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("limit must be 1 to 1000, got {v:?}")))?,
    };
    let position = q.get("position").cloned().unwrap_or_default();
    let (entries, more) = s.service.kv_scan(&cat, &position, limit).await?;
    let next = if more {
        entries.last().map(|e| e.key.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Json(json!({
        "kv": entries.iter().map(kv_json).collect::<Vec<_>>(),
        "next_position": next,
    })))
}

async fn query_kv(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let cat = q.get("cat").cloned().unwrap_or_default();
    let key = q.get("key").cloned().unwrap_or_default();
    let entries = s.service.kv_query(&cat, &key).await?;
    Ok(Json(
        json!({"kv": entries.iter().map(kv_json).collect::<Vec<_>>()}),
    ))
}
