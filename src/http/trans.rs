//! `/api/dtmsvr/*`: creating, submitting, aborting and reading global
//! transactions (contract §1).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::json::{
    branch_json, json_text, nullable, query_map, text_or_json, trans_json, JsonBody,
};
use super::{ApiError, AppState};
use crate::domain::{
    validate_gid, BranchInput, GlobalStatus, NewTransInput, TransKind, TransOptions,
};
use crate::service::{new_gid, Abort, WorkflowOutcome};
use crate::store::{Cursor, ListFilter};

/// The version dtm clients see; dtx's own follows it.
const DTM_VERSION: &str = "v1.19.0";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dtmsvr/version", get(version))
        .route("/api/dtmsvr/newGid", get(new_gid_route))
        .route("/api/dtmsvr/prepare", post(prepare))
        .route("/api/dtmsvr/submit", post(submit))
        .route("/api/dtmsvr/abort", post(abort))
        .route("/api/dtmsvr/query", get(query))
        .route("/api/dtmsvr/all", get(all))
        .route("/api/dtmsvr/prepareWorkflow", post(prepare_workflow))
}

pub(super) type ApiResult = Result<Json<Value>, ApiError>;

pub(super) fn success() -> ApiResult {
    Ok(Json(json!({"dtm_result": "SUCCESS"})))
}

/// The body of prepare, submit and abort (dtm's `TransGlobal`), accepted as
/// real clients send it: `null` anywhere, unknown keys ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TransBody {
    #[serde(deserialize_with = "nullable")]
    gid: String,
    #[serde(deserialize_with = "nullable")]
    trans_type: String,
    #[serde(deserialize_with = "nullable")]
    steps: Vec<BTreeMap<String, Value>>,
    #[serde(deserialize_with = "nullable")]
    payloads: Vec<Value>,
    #[serde(deserialize_with = "text_or_json")]
    custom_data: String,
    #[serde(deserialize_with = "nullable")]
    query_prepared: String,
    #[serde(deserialize_with = "nullable")]
    protocol: String,
    #[serde(deserialize_with = "nullable")]
    wait_result: bool,
    #[serde(deserialize_with = "nullable")]
    timeout_to_fail: i64,
    #[serde(deserialize_with = "nullable")]
    request_timeout: i64,
    #[serde(deserialize_with = "nullable")]
    retry_interval: i64,
    #[serde(deserialize_with = "nullable")]
    retry_limit: i64,
    #[serde(deserialize_with = "nullable")]
    branch_headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    concurrent: bool,
    #[serde(deserialize_with = "nullable")]
    rollback_reason: String,
    #[serde(deserialize_with = "nullable")]
    req_extra: BTreeMap<String, String>,
}

impl TransBody {
    pub(super) fn kind(&self) -> Result<TransKind, ApiError> {
        if self.trans_type.is_empty() {
            return Err(ApiError::BadRequest("trans_type is required".into()));
        }
        TransKind::parse(&self.trans_type).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown trans_type {:?}: use saga, msg, tcc, xa or workflow",
                self.trans_type
            ))
        })
    }

    fn into_input(self) -> Result<NewTransInput, ApiError> {
        let kind = self.kind()?;
        let text = |step: &BTreeMap<String, Value>, key: &str| -> Result<String, ApiError> {
            match step.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(ApiError::BadRequest(format!(
                    "steps[].{key} must be a string"
                ))),
            }
        };
        let mut steps = Vec::with_capacity(self.steps.len());
        let mut payloads: Vec<String> = self.payloads.into_iter().map(json_text).collect();
        let mut legacy = Vec::new();
        for step in &self.steps {
            steps.push(BranchInput {
                action: text(step, "action")?,
                compensate: text(step, "compensate")?,
            });
            // dtm < 1.10 carried the payload in the step itself
            let data = step.get("data").cloned().map(json_text).unwrap_or_default();
            if !data.is_empty() {
                legacy.push(data);
            }
        }
        payloads.extend(legacy);
        Ok(NewTransInput {
            gid: self.gid,
            kind,
            steps,
            payloads: payloads.into_iter().map(String::into_bytes).collect(),
            custom_data: self.custom_data,
            query_prepared: self.query_prepared,
            protocol: self.protocol,
            opts: TransOptions {
                wait_result: self.wait_result,
                timeout_to_fail: self.timeout_to_fail,
                request_timeout: self.request_timeout,
                retry_interval: self.retry_interval,
                retry_limit: self.retry_limit,
                branch_headers: self.branch_headers,
                concurrent: self.concurrent,
            },
            topics: BTreeMap::new(),
        })
    }
}

async fn version() -> Json<Value> {
    Json(json!({"version": DTM_VERSION, "dtx_version": env!("CARGO_PKG_VERSION")}))
}

async fn new_gid_route() -> Json<Value> {
    Json(json!({"gid": new_gid(), "dtm_result": "SUCCESS"}))
}

async fn prepare(State(s): State<AppState>, JsonBody(body): JsonBody<TransBody>) -> ApiResult {
    do_prepare(&s, body).await
}

async fn submit(State(s): State<AppState>, JsonBody(body): JsonBody<TransBody>) -> ApiResult {
    do_submit(&s, body).await
}

async fn abort(State(s): State<AppState>, JsonBody(body): JsonBody<TransBody>) -> ApiResult {
    do_abort(&s, body).await
}

pub(super) async fn do_prepare(s: &AppState, body: TransBody) -> ApiResult {
    s.service.prepare(body.into_input()?).await?;
    success()
}

pub(super) async fn do_submit(s: &AppState, body: TransBody) -> ApiResult {
    if body.trans_type == TransKind::Workflow.as_str() {
        // a workflow client's final submit carries its outcome in req_extra
        let outcome = WorkflowOutcome {
            gid: body.gid,
            req_extra: body.req_extra,
        };
        s.service.submit_workflow(outcome).await?;
    } else {
        s.service.submit(body.into_input()?).await?;
    }
    success()
}

pub(super) async fn do_abort(s: &AppState, body: TransBody) -> ApiResult {
    validate_gid(&body.gid, s.service.limits.max_gid_len)?;
    let call = Abort {
        kind: body.kind()?,
        gid: body.gid,
        rollback_reason: body.rollback_reason,
        wait: body.wait_result,
    };
    s.service.abort(call).await?;
    success()
}

/// `prepareWorkflow`: creates a prepared workflow, or returns the existing
/// one, with the progress recorded so far.
async fn prepare_workflow(
    State(s): State<AppState>,
    JsonBody(body): JsonBody<TransBody>,
) -> ApiResult {
    do_prepare_workflow(&s, body).await
}

pub(super) async fn do_prepare_workflow(s: &AppState, body: TransBody) -> ApiResult {
    if body.kind()? != TransKind::Workflow {
        return Err(ApiError::BadRequest(
            "prepareWorkflow needs trans_type workflow".into(),
        ));
    }
    let t = s.service.prepare_workflow(body.into_input()?).await?;
    Ok(Json(json!({
        "transaction": trans_json(&t),
        "progresses": t.branches.iter().map(|b| branch_json(&t, b)).collect::<Vec<_>>(),
    })))
}

async fn query(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let gid = q.get("gid").map(String::as_str).unwrap_or_default();
    if gid.is_empty() {
        return Err(ApiError::BadRequest("no gid specified".into()));
    }
    Ok(Json(match s.service.query(gid).await? {
        Some(t) => json!({
            "transaction": trans_json(&t),
            "branches": t.branches.iter().map(|b| branch_json(&t, b)).collect::<Vec<_>>(),
        }),
        None => json!({"transaction": null, "branches": []}),
    }))
}

fn parse_num<T: std::str::FromStr>(
    q: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ApiError> {
    match q.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("{key} must be a non-negative integer, got {v:?}"))
        }),
    }
}

async fn all(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let _store = &s.engine.store;
    if let Some(gid) = q.get("gid").filter(|g| !g.is_empty()) {
        // dtm answers `null` rather than `[]` when the gid is unknown
        let found = s.service.query(gid).await?.map(|t| vec![trans_json(&t)]);
        return Ok(Json(json!({"transactions": found, "next_position": ""})));
    }
    let limit: usize = parse_num(&q, "limit")?.unwrap_or(100);
    let status = match q.get("status").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            GlobalStatus::parse(v)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown status {v:?}")))?,
        ),
    };
    let kind = match q.get("transType").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            TransKind::parse(v)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown transType {v:?}")))?,
        ),
    };
    let filter = ListFilter {
        status,
        kind,
        created_from_ms: parse_num(&q, "createTimeStart")?,
        created_to_ms: parse_num(&q, "createTimeEnd")?,
    };
    let after = match q.get("position").filter(|v| !v.is_empty()) {
        None => None,
        Some(p) => Some(Cursor::decode(p).ok_or_else(|| {
            ApiError::BadRequest(format!("position {p:?} is not a cursor from this API"))
        })?),
    };
    let (page, next) = s.service.list(&filter, after, limit).await?;
    Ok(Json(json!({
        "transactions": page.iter().map(trans_json).collect::<Vec<_>>(),
        "next_position": next.map(|c| c.encode()).unwrap_or_default(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gids_are_22_chars_and_differ() {
        let a = new_gid();
        assert_eq!(a.len(), 22);
        assert_ne!(a, new_gid());
    }

    #[test]
    fn bodies_accept_nulls_unknown_keys_and_legacy_data() {
        let body: TransBody = serde_json::from_str(
            r#"{"gid":"g","trans_type":"saga","custom_data":null,"query_prepared":null,
                "protocol":null,"passthrough_headers":[],"request_timeout":8,
                "steps":[{"action":"http://a","compensate":"http://c","data":"{\"x\":1}"}]}"#,
        )
        .unwrap();
        let input = body.into_input().unwrap();
        assert_eq!(input.payloads, [b"{\"x\":1}"]);
        assert_eq!(input.opts.request_timeout, 8);
        assert_eq!(input.custom_data, "");
    }
}
