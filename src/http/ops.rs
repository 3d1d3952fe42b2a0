//! `/api/dtmsvr/*` routes beyond create/submit/abort/read: branch
//! registration (tcc, xa, workflow) and the operator's levers.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::json::{nullable, query_map, JsonBody};
use super::trans::{kind_conflict, success, ApiResult};
use super::{ApiError, AppState};
use crate::domain::{build_registered, validate_gid, GlobalStatus, TransKind};
use crate::store::StoreError;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dtmsvr/registerBranch", post(register_branch))
        .route("/api/dtmsvr/registerTccBranch", post(register_branch))
        .route("/api/dtmsvr/registerXaBranch", post(register_branch))
        .route("/api/dtmsvr/forceStop", post(force_stop))
        .route("/api/dtmsvr/resetCronTime", get(reset_cron_time))
        .route("/api/dtmsvr/resetNextCronTime", post(reset_next_cron_time))
}

/// The body of `registerBranch`: a flat object of strings (contract §3.3).
pub(super) type BranchBody = BTreeMap<String, Value>;

async fn register_branch(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<BranchBody>,
) -> ApiResult {
    do_register_branch(&s, body).await
}

pub(super) async fn do_register_branch(s: &AppState, body: BranchBody) -> ApiResult {
    let mut fields = BTreeMap::new();
    for (k, v) in body {
        match v {
            Value::String(v) => {
                fields.insert(k, v);
            }
            Value::Null => {}
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "registerBranch takes string values only; {k} is not a string"
                )))
            }
        }
    }
    let gid = fields.get("gid").cloned().unwrap_or_default();
    validate_gid(&gid, s.limits.max_gid_len)?;
    let trans_type = fields
        .get("trans_type")
        .map(String::as_str)
        .unwrap_or_default();
    let kind = TransKind::parse(trans_type)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown trans_type {trans_type:?}")))?;
    let engine = &s.engine;
    let now = engine.now_ms();
    let rows = build_registered(kind, &fields, now)?;
    rows.iter().try_for_each(|b| s.check_allowed(&b.url))?;
    match engine
        .store
        .register_branch(&gid, kind, &rows, &s.limits, now)
        .await
    {
        Ok(()) => {
            info!(gid = %gid, branch = %rows[0].id, "branch registered");
            success()
        }
        Err(StoreError::NotFound) => {
            Err(ApiError::NotFound(format!("no transaction with gid {gid}")))
        }
        Err(StoreError::Conflict { .. }) => Err(ApiError::Failure(format!(
            "no trans with gid: {gid} status: prepared found FAILURE"
        ))),
        Err(StoreError::BranchConflict(field)) => Err(ApiError::Conflict(format!(
            "branch {field} of {gid} is registered already"
        ))),
        Err(StoreError::KindConflict(actual)) => Err(kind_conflict(&gid, &actual, kind)),
        Err(StoreError::Limit { what, held }) => {
            let added: usize = rows.iter().map(|b| b.data.len()).sum();
            Err(if what == "rows" {
                s.limits.too_many_branches(held as usize + rows.len())
            } else {
                s.limits.too_many_bytes(held as usize + added)
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `{"gid"}`, plus an optional reason.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct GidBody {
    #[serde(deserialize_with = "nullable")]
    gid: String,
    #[serde(deserialize_with = "nullable")]
    rollback_reason: String,
}

async fn force_stop(State(s): State<AppState>, JsonBody(body): JsonBody<GidBody>) -> ApiResult {
    do_force_stop(&s, body).await
}

/// Ends any unfinished transaction as `failed`, taking its lease over so a
/// replica still driving it can no longer write.
pub(super) async fn do_force_stop(s: &AppState, body: GidBody) -> ApiResult {
    validate_gid(&body.gid, s.limits.max_gid_len)?;
    let engine = &s.engine;
    let reason = if body.rollback_reason.is_empty() {
        "force stopped".to_owned()
    } else {
        body.rollback_reason
    };
    // the status may move between the read and the write: try again then
    for _ in 0..5 {
        let t =
            engine.store.load(&body.gid).await?.ok_or_else(|| {
                ApiError::NotFound(format!("no transaction with gid {}", body.gid))
            })?;
        if t.status.is_final() {
            return Err(ApiError::Failure(format!(
                "global transaction force stop error. status: {}. error: FAILURE",
                t.status
            )));
        }
        let now = engine.now_ms();
        let fields = [("reason", reason.clone()), ("rollback_ms", now.to_string())];
        match engine
            .store
            .transition(
                &t.gid,
                None,
                t.status,
                GlobalStatus::Failed,
                now,
                None,
                &engine.owner,
                &fields,
            )
            .await
        {
            Ok(l) => {
                info!(gid = %t.gid, from = %t.status, "force stopped");
                super::trans::finished(&l.trans, now);
                return success();
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Ongoing(
        "the transaction keeps changing; force stop again".into(),
    ))
}

async fn reset_cron_time(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let num = |key: &str, default: u64| -> Result<u64, ApiError> {
        match q.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::BadRequest(format!("{key} must be a non-negative integer, got {v:?}"))
            }),
        }
    };
    let engine = &s.engine;
    let timeout_s = num("timeout", 3 * engine.policy.timeout_to_fail_s as u64)?;
    let limit = num("limit", 100)?.clamp(1, 10_000) as usize;
    let now = engine.now_ms();
    let floor = now.saturating_add(timeout_s.saturating_mul(1000));
    let (count, remaining) = engine.store.reset_due_after(floor, now, limit).await?;
    if count > 0 {
        engine.note_due(now);
    }
    Ok(Json(
        json!({"has_remaining": remaining, "succeed_count": count}),
    ))
}

async fn reset_next_cron_time(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<GidBody>,
) -> ApiResult {
    do_reset_next_cron_time(&s, body).await
}

/// Makes one unfinished transaction due now (dtm's has no effect on Redis;
/// ours reschedules it).
pub(super) async fn do_reset_next_cron_time(s: &AppState, body: GidBody) -> ApiResult {
    validate_gid(&body.gid, s.limits.max_gid_len)?;
    let engine = &s.engine;
    let store = &engine.store;
    let t = store
        .load(&body.gid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no transaction with gid {}", body.gid)))?;
    if t.status.is_final() {
        return Err(ApiError::Failure(format!(
            "transaction is {}, nothing to schedule. FAILURE",
            t.status
        )));
    }
    let now = engine.now_ms();
    let shard = store.keys().shard_of(&t.gid);
    store.reset_due(shard, &[t.gid], now, None).await?;
    engine.note_due(now);
    success()
}
