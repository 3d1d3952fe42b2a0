//! `/api/json-rpc`: the same operations as the HTTP API over JSON-RPC 2.0
//! (contract §1.6). Replies are always HTTP 200; errors travel in `error`.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::ops::{do_force_stop, do_register_branch, do_reset_next_cron_time};
use super::trans::{do_abort, do_prepare, do_prepare_workflow, do_submit};
use super::{ApiError, AppState};
use crate::service::new_gid;

/// Error codes of the JSON-RPC replies.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INTERNAL: i64 = -32603;
/// dtm's FAILURE.
pub(crate) const FAILURE: i64 = -32901;
/// dtm's ONGOING (dtm defines it but never sends it; dtx does).
pub(crate) const ONGOING: i64 = -32902;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/json-rpc", post(json_rpc))
}

fn reply(id: Value, result: Result<Value, (i64, String)>) -> Json<Value> {
    Json(match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "error": null, "result": r}),
        // dtm sends `{}` as the result of a failed call; clients ignore it
        Err((code, message)) => json!({
            "jsonrpc": "2.0", "id": id,
            "error": {"code": code, "message": message},
            "result": {},
        }),
    })
}

fn params<T: serde::de::DeserializeOwned>(p: Value) -> Result<T, ApiError> {
    serde_json::from_value(p).map_err(|e| ApiError::BadRequest(format!("bad params: {e}")))
}

async fn dispatch(s: &AppState, method: &str, p: Value) -> Option<Result<Value, ApiError>> {
    let r = match method {
        "newGid" => Ok(json!({"gid": new_gid()})),
        "prepare" => run(params(p), |b| do_prepare(s, b)).await,
        "submit" => run(params(p), |b| do_submit(s, b)).await,
        "abort" => run(params(p), |b| do_abort(s, b)).await,
        "prepareWorkflow" => run(params(p), |b| do_prepare_workflow(s, b)).await,
        "registerBranch" => run(params(p), |b| do_register_branch(s, b)).await,
        "forceStop" => run(params(p), |b| do_force_stop(s, b)).await,
        "resetNextCronTime" => run(params(p), |b| do_reset_next_cron_time(s, b)).await,
        _ => return None,
    };
    Some(r)
}

async fn run<T, F, Fut>(input: Result<T, ApiError>, op: F) -> Result<Value, ApiError>
where
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = Result<Json<Value>, ApiError>>,
{
    op(input?).await.map(|Json(v)| v)
}

async fn json_rpc(State(s): State<AppState>, body: Bytes) -> Json<Value> {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return reply(Value::Null, Err((PARSE_ERROR, "Parse error".into())));
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::String(s) => !s.is_empty(),
        Value::Number(_) => true,
        _ => false,
    };
    if !id_ok || req.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return reply(id, Err((INVALID_REQUEST, "Invalid Request".into())));
    }
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let p = req.get("params").cloned().unwrap_or(Value::Null);
    match dispatch(&s, method, p).await {
        None => reply(
            id,
            Err((METHOD_NOT_FOUND, format!("method not found: {method}"))),
        ),
        Some(Ok(v)) => reply(id, Ok(v)),
        Some(Err(e)) => {
            let code = match e {
                ApiError::Failure(_) => FAILURE,
                ApiError::Ongoing(_) => ONGOING,
                _ => INTERNAL,
            };
            reply(id, Err((code, e.public_message())))
        }
    }
}
