//! How a branch's reply becomes an [`Outcome`] (contract §2.2): HTTP
//! status and body, and the JSON-RPC reply inside a 2xx.

use crate::domain::Outcome;

/// Longest part of a branch reply kept as a failure reason, bytes.
pub(super) const MAX_REASON: usize = 1024;

/// A JSON-RPC reply that passed the HTTP rules: its `error` member decides
/// (-32901 FAILURE, -32902 ONGOING, anything else an error to retry).
/// dtm compares these codes wrongly and never sees them; dtx does.
pub fn classify_rpc(url: &str, body: &str) -> Outcome {
    let reply: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return Outcome::Unknown(format!("url:{url} answered no JSON-RPC reply")),
    };
    match reply.get("error") {
        None | Some(serde_json::Value::Null) => Outcome::Succeeded,
        Some(e) => {
            let message = e
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default();
            match e.get("code").and_then(serde_json::Value::as_i64) {
                Some(-32901) => Outcome::Failed(format!(
                    "url:{url} return failed: {} FAILURE",
                    truncate(message)
                )),
                Some(-32902) => Outcome::Ongoing,
                _ => Outcome::Unknown(format!(
                    "url:{url} json-rpc error: {}",
                    truncate(&e.to_string())
                )),
            }
        }
    }
}

/// Classifies a branch reply, in the order of contract §2.2: 425 or a body
/// mentioning ONGOING is ongoing; 409 or a body mentioning FAILURE is a
/// failure; any other status outside 2xx is an unknown outcome; 2xx is
/// success (dtm's client counts any status below 400 as no error).
pub fn classify(url: &str, status: u16, body: &str) -> Outcome {
    #[cfg(feature = "self-check")]
    if status == 500 && crate::self_check::error_is_failure() {
        return Outcome::Failed(format!("url:{url} status 500 (self-check) FAILURE"));
    }
    if status == 425 || body.contains("ONGOING") {
        Outcome::Ongoing
    } else if status == 409 || body.contains("FAILURE") {
        Outcome::Failed(format!(
            "url:{url} return failed: {} FAILURE",
            truncate(body.trim())
        ))
    } else if (200..300).contains(&status) {
        Outcome::Succeeded
    } else {
        Outcome::Unknown(format!(
            "url:{url} status {status}: {}",
            truncate(body.trim())
        ))
    }
}

/// `s` cut to [`MAX_REASON`] bytes, on a character boundary.
pub(super) fn truncate(s: &str) -> &str {
    if s.len() <= MAX_REASON {
        return s;
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
