//! Request parsing that answers in dtm's error shape: bodies, query
//! strings, and the wire format of transactions in replies.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};

use super::ApiError;
use crate::domain::{Branch, BranchStatus, Trans};

/// A JSON body; malformed JSON is a 400 and an oversized body a 413, both
/// with a JSON message.
pub(super) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge("request body is over the size limit".into())
            } else {
                ApiError::BadRequest(format!("cannot read request body: {}", e.body_text()))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
    }
}

/// Parses a raw query string into a map (last value wins).
pub(super) fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// `null` reads as the type's default (Go's decoder does the same).
pub(super) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string field that some clients send as JSON instead of JSON text:
/// strings pass through, `null` is empty, anything else is serialised.
pub(super) fn text_or_json<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(json_text(Value::deserialize(d)?))
}

/// The JSON text of a value that should have been a string.
pub(super) fn json_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// RFC 3339 in UTC with milliseconds, as Go's time parsing accepts.
pub(super) fn rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A transaction as dtm's `TransGlobalStore` JSON.
pub(super) fn trans_json(t: &Trans) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(0));
    m.insert("create_time".into(), json!(rfc3339(t.create_ms)));
    m.insert("update_time".into(), json!(rfc3339(t.update_ms)));
    m.insert("concurrent".into(), json!(t.opts.concurrent));
    m.insert("gid".into(), json!(t.gid));
    m.insert("trans_type".into(), json!(t.kind.as_str()));
    m.insert("status".into(), json!(t.status.as_str()));
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            m.insert(k.into(), json!(v));
        }
    };
    put("query_prepared", &t.query_prepared);
    put(
        "protocol",
        if t.protocol.is_empty() {
            "http"
        } else {
            &t.protocol
        },
    );
    put("custom_data", &t.custom_data);
    put("rollback_reason", &t.reason);
    put("result", &t.result);
    put("owner", &t.owner);
    // dtx's own: what the console shows for a transaction that keeps failing
    put("last_error", &t.last_error);
    put("last_branch", &t.last_branch);
    if let Some(ms) = t.finish_ms {
        m.insert("finish_time".into(), json!(rfc3339(ms)));
    }
    if let Some(ms) = t.rollback_ms {
        m.insert("rollback_time".into(), json!(rfc3339(ms)));
    }
    if let Some(ms) = t.next_ms {
        m.insert("next_cron_time".into(), json!(rfc3339(ms)));
    }
    // dtm's options JSON, plus the inline copies its Redis store shows
    m.insert(
        "options".into(),
        json!(serde_json::to_string(&t.opts).unwrap_or_default()),
    );
    let o = &t.opts;
    for (k, v) in [
        ("timeout_to_fail", o.timeout_to_fail),
        ("request_timeout", o.request_timeout),
        ("retry_interval", o.retry_interval),
        ("retry_limit", o.retry_limit),
        ("retry_count", i64::from(t.attempt)),
    ] {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    }
    if o.wait_result {
        m.insert("wait_result".into(), json!(true));
    }
    if !o.branch_headers.is_empty() {
        m.insert("branch_headers".into(), json!(o.branch_headers));
    }
    if let Some((steps, payloads)) = steps_of(t) {
        m.insert("steps".into(), json!(steps));
        m.insert("payloads".into(), json!(payloads));
    }
    Value::Object(m)
}

/// `steps` and `payloads` as a client sent them.
type StepsAndPayloads = (Vec<Map<String, Value>>, Vec<String>);

/// saga and msg: the steps and payloads a client sent, rebuilt from the
/// rows (nothing is stored twice).
fn steps_of(t: &Trans) -> Option<StepsAndPayloads> {
    use crate::domain::{Op, TransKind};
    if !matches!(t.kind, TransKind::Saga | TransKind::Msg) || t.branches.is_empty() {
        return None;
    }
    let mut steps: Vec<(String, Map<String, Value>, String)> = Vec::new();
    for b in &t.branches {
        if !matches!(b.op, Op::Action | Op::Compensate) {
            continue;
        }
        let i = match steps.iter().position(|(id, _, _)| *id == b.id) {
            Some(i) => i,
            None => {
                steps.push((b.id.clone(), Map::new(), payload_text(t, &b.data)));
                steps.len() - 1
            }
        };
        steps[i].1.insert(b.op.as_str().into(), json!(b.url));
    }
    let payloads = steps.iter().map(|(_, _, p)| p.clone()).collect();
    Some((steps.into_iter().map(|(_, s, _)| s).collect(), payloads))
}

/// A payload as JSON text: the text a client sent over HTTP, base64 of the
/// bytes of a transaction created over gRPC (proto bytes are rarely text).
pub(super) fn payload_text(t: &Trans, data: &[u8]) -> String {
    use base64::Engine as _;
    match (t.protocol.as_str(), std::str::from_utf8(data)) {
        ("grpc", _) | (_, Err(_)) => base64::engine::general_purpose::STANDARD.encode(data),
        (_, Ok(text)) => text.to_owned(),
    }
}

/// A branch row as dtm's `TransBranchStore` JSON.
pub(super) fn branch_json(t: &Trans, b: &Branch) -> Value {
    use base64::Engine as _;
    let mut v = json!({
        "id": 0,
        "create_time": rfc3339(t.create_ms),
        "update_time": rfc3339(b.update_ms),
        "gid": t.gid,
        "url": b.url,
        "bin_data": base64::engine::general_purpose::STANDARD.encode(&b.data),
        "branch_id": b.id,
        "op": b.op.as_str(),
        "status": b.status.as_str(),
    });
    match b.status {
        BranchStatus::Succeed => v["finish_time"] = json!(rfc3339(b.update_ms)),
        BranchStatus::Failed => v["rollback_time"] = json!(rfc3339(b.update_ms)),
        BranchStatus::Prepared => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_311_845_007), "2026-11-22T01:44:05.007Z");
    }

    #[test]
    fn text_fields_accept_null_and_json() {
        assert_eq!(json_text(Value::Null), "");
        assert_eq!(json_text(json!("x")), "x");
        assert_eq!(json_text(json!({"a":1})), "{\"a\":1}");
    }
}
