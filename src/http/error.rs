//! The only place that maps errors to HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use crate::domain::ValidationError;
use crate::service::ServiceError;
use crate::store::StoreError;

/// An error reply, in dtm's shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid. Returns `400 Bad Request`
    /// `{"message"}` (dtm answers 500 here).
    #[error("{0}")]
    BadRequest(String),
    /// Refused before any work: a cross-site request. Returns
    /// `403 Forbidden` `{"message"}`.
    #[error("{0}")]
    Forbidden(String),
    /// No such transaction or route. Returns `404 Not Found` `{"message"}`.
    #[error("{0}")]
    NotFound(String),
    /// Wrong method for the route. Returns `405 Method Not Allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over the size limit. Returns `413 Payload Too Large`.
    #[error("{0}")]
    TooLarge(String),
    /// A conflict that is not a business FAILURE (a branch registered
    /// twice). Returns `409 Conflict` `{"message"}`.
    #[error("{0}")]
    Conflict(String),
    /// dtm's FAILURE. Returns `409 Conflict`
    /// `{"dtm_result":"FAILURE","message"}`.
    #[error("{0}")]
    Failure(String),
    /// dtm's ONGOING. Returns `425 Too Early`
    /// `{"dtm_result":"ONGOING","message"}`.
    #[error("{0}")]
    Ongoing(String),
    /// A branch answered with an error while the caller waited
    /// (`wait_result`). Returns `500 Internal Server Error` `{"message"}`
    /// with the branch's error, as dtm does.
    #[error("{0}")]
    Branch(String),
    /// Redis took too long: the outcome of a write is unknown. Returns
    /// `504 Gateway Timeout` `{"message"}`.
    #[error("{0}")]
    Timeout(String),
    /// Redis is away. Returns `503 Service Unavailable` `{"message"}`.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else. Returns `500 Internal Server Error` `{"message"}`;
    /// the detail is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

/// Every use-case outcome has its HTTP reply.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Self::BadRequest(m),
            ServiceError::NotFound(m) => Self::NotFound(m),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::Failure(m) => Self::Failure(m),
            ServiceError::Ongoing(m) => Self::Ongoing(m),
            ServiceError::Branch(m) => Self::Branch(m),
            ServiceError::Unavailable(m) => Self::Unavailable(m),
            ServiceError::Timeout(m) => Self::Timeout(m),
            ServiceError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl ApiError {
    /// The message a client may see: an internal error's detail is logged
    /// here and replaced, whatever the transport.
    pub(crate) fn public_message(&self) -> String {
        match self {
            Self::Internal(m) => {
                error!(error = %m, "internal error");
                INTERNAL_MESSAGE.to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// What a client is told of an internal error.
const INTERNAL_MESSAGE: &str = "internal error; see the dtx log";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"message": m})),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, json!({"message": m})),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, json!({"message": m})),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"message": "method not allowed"}),
            ),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, json!({"message": m})),
            Self::Conflict(m) => (StatusCode::CONFLICT, json!({"message": m})),
            Self::Failure(m) => (
                StatusCode::CONFLICT,
                json!({"dtm_result": "FAILURE", "message": m}),
            ),
            Self::Ongoing(m) => (
                StatusCode::TOO_EARLY,
                json!({"dtm_result": "ONGOING", "message": m}),
            ),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, json!({"message": m})),
            Self::Timeout(m) => (StatusCode::GATEWAY_TIMEOUT, json!({"message": m})),
            Self::Branch(m) => (StatusCode::INTERNAL_SERVER_ERROR, json!({"message": m})),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": self.public_message()}),
            ),
        };
        (status, Json(body)).into_response()
    }
}
