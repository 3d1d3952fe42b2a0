//! The one error type of the crate. FAILURE, ONGOING and duplicate requests
//! are variants of their own, so callers match on them instead of parsing
//! text (contract §2).

/// Everything that can go wrong in a client call, a barrier or a branch
/// handler.
///
/// The first three variants carry the meaning of dtm's result codes:
/// [`Error::Failure`] is `FAILURE` (HTTP 409), [`Error::Ongoing`] is
/// `ONGOING` (HTTP 425) and [`Error::Duplicated`] is the barrier's answer to
/// a repeated msg operation. In an axum handler every variant answers with
/// its status code (see [`crate::axum`]).
///
/// ```
/// use dtx_client::Error;
/// let e = Error::failure("insufficient balance");
/// assert!(e.is_failure());
/// assert!(!Error::Ongoing("later".into()).is_failure());
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `FAILURE`: the operation failed for good and will not succeed if
    /// retried. A saga action or msg check-back answering it rolls back.
    #[error("{0} FAILURE")]
    Failure(String),
    /// `ONGOING`: not finished yet; ask again later.
    #[error("{0} ONGOING")]
    Ongoing(String),
    /// The barrier saw this msg operation before (`DUPLICATED`): the check-back
    /// already ran, so the local transaction must not commit.
    #[error("DUPLICATED")]
    Duplicated,
    /// The coordinator or a branch answered with another status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The reply body, as text.
        body: String,
    },
    /// The request could not be sent or its reply not read.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// A database error from the local transaction or the barrier.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A Redis error from the Redis barrier.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// JSON that could not be encoded or decoded.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The coordinator answered a gRPC call with this status (not ABORTED,
    /// which is [`Error::Failure`], nor FAILED_PRECONDITION, which is
    /// [`Error::Ongoing`]).
    #[error("gRPC {0}")]
    Grpc(String),
    /// Any other error, described by its text. Branch handlers answer it
    /// with 500, which the coordinator retries.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A [`Error::Failure`] with this reason.
    ///
    /// ```
    /// let e = dtx_client::Error::failure("refused");
    /// assert_eq!(e.to_string(), "refused FAILURE");
    /// ```
    pub fn failure(reason: impl Into<String>) -> Self {
        Self::Failure(reason.into())
    }

    /// An [`Error::Other`] with this text: an error worth retrying.
    ///
    /// ```
    /// let e = dtx_client::Error::other("db down");
    /// assert!(!e.is_failure());
    /// ```
    pub fn other(text: impl Into<String>) -> Self {
        Self::Other(text.into())
    }

    /// Whether this is a FAILURE.
    ///
    /// ```
    /// assert!(dtx_client::Error::failure("x").is_failure());
    /// ```
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failure(_))
    }

    /// Whether this is an ONGOING.
    ///
    /// ```
    /// assert!(dtx_client::Error::Ongoing(String::new()).is_ongoing());
    /// ```
    pub fn is_ongoing(&self) -> bool {
        matches!(self, Self::Ongoing(_))
    }

    /// Reads a reply of the coordinator or of a branch the way dtm does
    /// (contract §2.2): 425 or a body mentioning `ONGOING` is ongoing, 409 or
    /// a body mentioning `FAILURE` is a failure, another non-200 status is an
    /// error, and 200 is success.
    ///
    /// ```
    /// use dtx_client::Error;
    /// assert!(Error::from_reply(200, "{\"dtm_result\":\"SUCCESS\"}").is_ok());
    /// assert!(Error::from_reply(409, "no").unwrap_err().is_failure());
    /// assert!(Error::from_reply(200, "{\"dtm_result\":\"FAILURE\"}").unwrap_err().is_failure());
    /// assert!(Error::from_reply(425, "").unwrap_err().is_ongoing());
    /// ```
    pub fn from_reply(status: u16, body: &str) -> Result<(), Self> {
        if status == 425 || body.contains("ONGOING") {
            let m = message_of(body);
            return Err(Self::Ongoing(
                m.strip_suffix(" ONGOING").unwrap_or(&m).to_owned(),
            ));
        }
        if status == 409 || body.contains("FAILURE") {
            let m = message_of(body);
            return Err(Self::Failure(
                m.strip_suffix(" FAILURE").unwrap_or(&m).to_owned(),
            ));
        }
        if status != 200 {
            return Err(Self::Status {
                status,
                body: body.to_owned(),
            });
        }
        Ok(())
    }
}

/// The `message` of a JSON error body, else the body itself.
fn message_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

/// Result alias of this crate.
///
/// ```
/// fn check(amount: i64) -> dtx_client::Result<()> {
///     if amount < 0 { return Err(dtx_client::Error::failure("negative")); }
///     Ok(())
/// }
/// assert!(check(-1).is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
