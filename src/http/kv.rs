//! Topics (contract §8.1) and the KV API behind them (§8.2).
//!
//! A topic is the KV entry `topics`/`<name>` holding the JSON list of its
//! subscribers. Every change is a version-guarded write, retried on a
//! conflict, so concurrent subscribes all land. Msg steps addressed
//! `topic://<name>` are fanned out from Redis when the msg is saved, so
//! every replica sees a change at once and a deleted topic is gone.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::info;

use super::json::{query_map, rfc3339};
use super::trans::{success, ApiResult};
use super::{ApiError, AppState};
use crate::domain::validate_url;
use crate::store::{KvEntry, Store, StoreError};

/// The KV category of topics.
const TOPICS: &str = "topics";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dtmsvr/subscribe", get(subscribe))
        .route("/api/dtmsvr/unsubscribe", get(unsubscribe))
        .route("/api/dtmsvr/topic/{name}", delete(delete_topic))
        .route("/api/dtmsvr/scanKV", get(scan_kv))
        .route("/api/dtmsvr/queryKV", get(query_kv))
}

/// One subscriber of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Subscriber {
    url: String,
    #[serde(default)]
    remark: String,
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

fn check_name(what: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() {
        return Err(ApiError::BadRequest(format!("empty {what}")));
    }
    if v.len() > 128
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(ApiError::BadRequest(format!(
            "{what} {v:?} must be 1 to 128 letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(())
}

/// Reads a topic's subscribers and version (0 when it does not exist).
async fn read_topic(store: &Store, topic: &str) -> Result<(Vec<Subscriber>, u64), ApiError> {
    match store.kv_get(TOPICS, topic).await? {
        None => Ok((Vec::new(), 0)),
        Some(e) => {
            let subs = serde_json::from_str(&e.value).map_err(|err| {
                ApiError::Internal(format!("topic {topic} holds bad JSON: {err}"))
            })?;
            Ok((subs, e.version))
        }
    }
}

/// Applies `change` to a topic's list until its version-guarded write
/// lands (a concurrent change makes it read again).
async fn update_topic(
    s: &AppState,
    topic: &str,
    change: impl Fn(&mut Vec<Subscriber>, u64) -> Result<(), ApiError>,
) -> ApiResult {
    let store = &s.engine.store;
    for _ in 0..20 {
        let (mut subs, version) = read_topic(store, topic).await?;
        change(&mut subs, version)?;
        let value = serde_json::to_string(&subs).map_err(|e| ApiError::Internal(e.to_string()))?;
        match store
            .kv_put(TOPICS, topic, version, Some(&value), s.engine.now_ms())
            .await
        {
            Ok(_) => return success(),
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Ongoing(format!(
        "topic {topic} is changing too fast; try again"
    )))
}

async fn subscribe(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (topic, url, remark) = (get("topic"), get("url"), get("remark"));
    check_name("topic", &topic)?;
    if url.is_empty() {
        return Err(ApiError::BadRequest("empty url".into()));
    }
    validate_url(&url)?;
    s.check_allowed(&url)?;
    let max = s.max_topic_subscribers;
    let r = update_topic(&s, &topic, |subs, _| {
        if subs.iter().any(|x| x.url == url) {
            return Err(ApiError::Conflict("this url exists".into()));
        }
        if subs.len() >= max {
            return Err(ApiError::BadRequest(format!(
                "topic {topic} has {max} subscribers, the most one topic may have (trans.max_topic_subscribers, DTX_TRANS_MAX_TOPIC_SUBSCRIBERS)"
            )));
        }
        subs.push(Subscriber {
            url: url.clone(),
            remark: remark.clone(),
        });
        Ok(())
    })
    .await;
    if r.is_ok() {
        info!(topic = %topic, "subscribed");
    }
    r
}

async fn unsubscribe(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let (topic, url) = (get("topic"), get("url"));
    check_name("topic", &topic)?;
    if url.is_empty() {
        return Err(ApiError::BadRequest("empty url".into()));
    }
    update_topic(&s, &topic, |subs, version| {
        if version == 0 {
            return Err(ApiError::NotFound("no such a topic".into()));
        }
        if subs.is_empty() {
            return Err(ApiError::NotFound("this topic is empty".into()));
        }
        let before = subs.len();
        subs.retain(|x| x.url != url);
        if subs.len() == before {
            return Err(ApiError::NotFound("no such an url".into()));
        }
        Ok(())
    })
    .await
}

async fn delete_topic(State(s): State<AppState>, Path(name): Path<String>) -> ApiResult {
    check_name("topic", &name)?;
    let store = &s.engine.store;
    for _ in 0..20 {
        let Some(e) = store.kv_get(TOPICS, &name).await? else {
            return Err(ApiError::NotFound(format!("no such a topic: {name}")));
        };
        match store
            .kv_put(TOPICS, &name, e.version, None, s.engine.now_ms())
            .await
        {
            Ok(_) => {
                info!(topic = %name, "topic deleted");
                return success();
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Ongoing(format!(
        "topic {name} is changing too fast; try again"
    )))
}

/// The subscriber URLs of every topic named by `topic://` in `actions`;
/// an unknown topic or one without subscribers is an error.
pub(super) async fn resolve_topics(
    store: &Store,
    actions: impl Iterator<Item = &str>,
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out = BTreeMap::new();
    for name in actions.filter_map(|a| a.strip_prefix("topic://")) {
        if out.contains_key(name) {
            continue;
        }
        let (subs, _) = read_topic(store, name).await?;
        if subs.is_empty() {
            return Err(ApiError::BadRequest(format!("topic not found: {name}")));
        }
        out.insert(name.to_owned(), subs.into_iter().map(|x| x.url).collect());
    }
    Ok(out)
}

async fn scan_kv(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let cat = q.get("cat").cloned().unwrap_or_default();
    check_name("cat", &cat)?;
    let limit: usize = match q.get("limit").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => 100,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to 1000, got {v:?}")))?,
    };
    let position = q.get("position").cloned().unwrap_or_default();
    let (entries, more) = s.engine.store.kv_scan(&cat, &position, limit).await?;
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
    check_name("cat", &cat)?;
    let key = q.get("key").cloned().unwrap_or_default();
    let entries = if key.is_empty() {
        s.engine.store.kv_scan(&cat, "", 1000).await?.0
    } else {
        s.engine
            .store
            .kv_get(&cat, &key)
            .await?
            .into_iter()
            .collect()
    };
    Ok(Json(
        json!({"kv": entries.iter().map(kv_json).collect::<Vec<_>>()}),
    ))
}
