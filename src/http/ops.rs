//! `/api/dtmsvr/*` routes beyond create/submit/abort/read: branch
//! registration (tcc, xa, workflow) and the operator's levers.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::{nullable, query_map, JsonBody};
use super::trans::{success, ApiResult};
use super::{ApiError, AppState};
use crate::domain::{validate_gid, TransKind};
use crate::service::RegisterBranch;

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
    validate_gid(&gid, s.service.limits.max_gid_len)?;
    let trans_type = fields
        .get("trans_type")
        .map(String::as_str)
        .unwrap_or_default();
    let kind = TransKind::parse(trans_type)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown trans_type {trans_type:?}")))?;
    s.service
        .register_branch(RegisterBranch {
            gid,
            kind,
            fields,
            data: None,
        })
        .await?;
    success()
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

/// Ends any unfinished transaction as `failed`.
pub(super) async fn do_force_stop(s: &AppState, body: GidBody) -> ApiResult {
    s.service
        .force_stop(&body.gid, &body.rollback_reason)
        .await?;
    success()
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
    let timeout_s = num("timeout", 3 * s.engine.policy.timeout_to_fail_s as u64)?;
    let limit = num("limit", 100)?.clamp(1, 10_000) as usize;
    let (count, remaining) = s.service.reset_cron_time(timeout_s, limit).await?;
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

/// Makes one unfinished transaction due now.
pub(super) async fn do_reset_next_cron_time(s: &AppState, body: GidBody) -> ApiResult {
    s.service.reset_next_cron_time(&body.gid).await?;
    success()
}
