//! Why a use case did not do what was asked, in terms every transport
//! maps to its own replies (HTTP statuses, JSON-RPC codes, gRPC codes).

use crate::domain::ValidationError;
use crate::store::StoreError;

/// The outcome of a refused or failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The input is malformed or invalid; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// No such transaction or topic.
    #[error("{0}")]
    NotFound(String),
    /// A conflict that is not a business FAILURE (a branch registered
    /// twice, a URL subscribed twice).
    #[error("{0}")]
    Conflict(String),
    /// dtm's FAILURE: the transaction cannot take this call, or it failed.
    #[error("{0}")]
    Failure(String),
    /// dtm's ONGOING: try again later.
    #[error("{0}")]
    Ongoing(String),
    /// A branch answered with an error while the caller waited.
    #[error("{0}")]
    Branch(String),
    /// Redis is away.
    #[error("{0}")]
    Unavailable(String),
    /// Redis took too long: a write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    /// Anything else; the detail is for the log, not the client.
    #[error("{0}")]
    Internal(String),
}

impl From<ValidationError> for ServiceError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e.0)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                Self::Unavailable(format!("storage is unavailable, retry later ({m})"))
            }
            StoreError::Timeout(m) => Self::Timeout(format!(
                "Redis did not answer within redis.response_timeout_ms ({m}); a write may have been applied: repeat the call, which is safe"
            )),
            StoreError::NotFound => Self::NotFound("no such transaction".into()),
            e @ StoreError::NotReplicated { .. } => Self::Unavailable(format!(
                "written to the Redis primary but {e}: it is driven on, and would be lost only if the primary failed now; repeat the call, which is safe"
            )),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The result of a use case.
pub type ServiceResult<T = ()> = Result<T, ServiceError>;
