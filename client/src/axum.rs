//! axum helpers for branch handlers: [`BranchParams`] extracts what the
//! coordinator puts in a branch request's query, and [`Error`] and
//! [`Success`] answer with the status codes of contract §2.2, so a handler
//! is a few lines:
//!
//! ```no_run
//! use axum::{routing::post, Json, Router};
//! use dtx_client::axum::{BranchParams, Success};
//!
//! async fn trans_in(params: BranchParams, Json(body): Json<serde_json::Value>) -> dtx_client::Result<Success> {
//!     if body["amount"].as_i64() == Some(10) {
//!         return Err(dtx_client::Error::failure("refused"));
//!     }
//!     println!("{} {} {}", params.gid, params.branch_id, params.op);
//!     Ok(Success)
//! }
//! let app: Router = Router::new().route("/trans-in", post(trans_in));
//! ```

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::barrier::BranchBarrier;
use crate::error::Error;

/// The query parameters of a branch request: `gid`, `trans_type`,
/// `branch_id` and `op` (all required). As an axum extractor it rejects a
/// request missing any of them with `400`.
///
/// ```
/// let p = dtx_client::axum::BranchParams {
///     gid: "g".into(), trans_type: "tcc".into(), branch_id: "01".into(), op: "try".into(),
/// };
/// assert_eq!(p.barrier().op(), "try");
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct BranchParams {
    /// Global transaction id.
    pub gid: String,
    /// `saga`, `msg`, `tcc`, `xa` or `workflow`.
    pub trans_type: String,
    /// Branch id within the transaction.
    pub branch_id: String,
    /// `action`, `compensate`, `try`, `confirm`, `cancel`, `commit`,
    /// `rollback` or `msg`.
    pub op: String,
}

impl BranchParams {
    /// The barrier of this request, on the default table.
    ///
    /// ```
    /// # let p = dtx_client::axum::BranchParams { gid: "g".into(), trans_type: "saga".into(), branch_id: "01".into(), op: "action".into() };
    /// assert_eq!(p.barrier().gid(), "g");
    /// ```
    pub fn barrier(&self) -> BranchBarrier {
        BranchBarrier::new(&self.trans_type, &self.gid, &self.branch_id, &self.op)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BranchParams {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<BranchParams>::from_request_parts(parts, state).await {
            Ok(Query(p)) if !p.gid.is_empty() && !p.op.is_empty() => Ok(p),
            Ok(_) => Err(bad_request("gid and op must not be empty")),
            Err(e) => Err(bad_request(&e.body_text())),
        }
    }
}

pub(crate) fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "message": message }))).into_response()
}

/// A successful branch reply: `200 {"dtm_result":"SUCCESS"}`.
///
/// ```
/// use axum::response::IntoResponse;
/// assert_eq!(dtx_client::axum::Success.into_response().status(), 200);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Success;

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        Json(json!({ "dtm_result": "SUCCESS" })).into_response()
    }
}

/// Answers a branch request with the status the coordinator reads
/// (contract §2.2): [`Error::Failure`] is `409 {"dtm_result":"FAILURE"}`,
/// [`Error::Ongoing`] is `425 {"dtm_result":"ONGOING"}`, and every other
/// error is `500 {"message"}` (retried by the coordinator).
///
/// ```
/// use axum::response::IntoResponse;
/// assert_eq!(dtx_client::Error::failure("no").into_response().status(), 409);
/// assert_eq!(dtx_client::Error::Ongoing("later".into()).into_response().status(), 425);
/// assert_eq!(dtx_client::Error::other("db down").into_response().status(), 500);
/// ```
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Failure(m) => (
                StatusCode::CONFLICT,
                Json(json!({ "dtm_result": "FAILURE", "message": m })),
            )
                .into_response(),
            Error::Ongoing(m) => (
                StatusCode::TOO_EARLY,
                Json(json!({ "dtm_result": "ONGOING", "message": m })),
            )
                .into_response(),
            other => (
                StatusCode::INTERNAL_SERVER_ERROR,
                // The coordinator reads FAILURE or ONGOING anywhere in a body
                // as that result (contract §2.2); this one is neither.
                Json(json!({ "message": other
                    .to_string()
                    .replace("FAILURE", "failure")
                    .replace("ONGOING", "ongoing") })),
            )
                .into_response(),
        }
    }
}
