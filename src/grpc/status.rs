//! The gRPC side of errors and tokens: contract §2.6 (FAILURE → Aborted,
//! ONGOING → FailedPrecondition) and the HTTP API's bearer tokens read
//! from `authorization` metadata.

use tonic::{Code, Request, Status};

use crate::access::{Access, Auth};
use crate::service::ServiceError;

/// The status a client gets for `e`.
pub(super) fn status(e: ServiceError) -> Status {
    let code = match &e {
        ServiceError::Failure(_) => Code::Aborted,
        ServiceError::Ongoing(_) => Code::FailedPrecondition,
        ServiceError::Invalid(_) => Code::InvalidArgument,
        ServiceError::NotFound(_) => Code::NotFound,
        ServiceError::Conflict(_) => Code::AlreadyExists,
        ServiceError::Branch(_) => Code::Unknown,
        ServiceError::Unavailable(_) => Code::Unavailable,
        ServiceError::Timeout(_) => Code::DeadlineExceeded,
        ServiceError::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// Lets a call through when tokens are off or its token has full access
/// (every `dtmgimp.Dtm` method writes, `NewGid` aside, which needs no
/// Redis either way).
pub(super) fn authorize(auth: &Auth, req: Request<()>) -> Result<Request<()>, Status> {
    if !auth.enabled() {
        return Ok(req);
    }
    let token = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    match auth.access(token) {
        Access::Full => Ok(req),
        Access::Read => Err(Status::permission_denied("this token may only read")),
        Access::None if token.is_empty() => Err(Status::unauthenticated(
            "missing token: send authorization: Bearer <token> metadata",
        )),
        Access::None => Err(Status::unauthenticated("unknown token")),
    }
}
