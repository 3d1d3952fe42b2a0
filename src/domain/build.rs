//! Validating a new transaction and building its branch rows.

use std::collections::BTreeMap;

use super::{Branch, BranchStatus, GlobalStatus, Op, SagaCustom, Trans, TransKind, TransOptions};

/// Input that cannot become a transaction; the message says why, for the
/// client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

fn invalid(msg: impl Into<String>) -> ValidationError {
    ValidationError(msg.into())
}

/// One step as a client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchInput {
    /// Forward URL.
    pub action: String,
    /// saga compensation URL.
    pub compensate: String,
}

/// Everything a client sent to create a transaction, already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransInput {
    /// Global id.
    pub gid: String,
    /// Kind.
    pub kind: TransKind,
    /// Steps (saga, msg).
    pub steps: Vec<BranchInput>,
    /// One body per step, in step order: bytes, as clients over gRPC send
    /// them (JSON text over HTTP).
    pub payloads: Vec<Vec<u8>>,
    /// Kind-specific JSON text.
    pub custom_data: String,
    /// msg check-back or workflow resume URL.
    pub query_prepared: String,
    /// `""`, `http`, `grpc` or `json-rpc`.
    pub protocol: String,
    /// Options.
    pub opts: TransOptions,
    /// Subscriber URLs of the topics named by `topic://` msg steps.
    pub topics: BTreeMap<String, Vec<String>>,
}

/// Most steps in one saga or msg (each is one or two branch rows).
pub const MAX_STEPS: usize = 1000;

/// Longest duration a client may give in seconds (10 years): larger values
/// could only overflow the time arithmetic.
pub const MAX_SECONDS: i64 = 315_360_000;

/// Most immediate retries a saga may ask for.
pub const MAX_RETRY_LIMIT: i64 = 1000;

/// What one transaction may hold; each bound has a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest gid, bytes (`store.max_gid_len`).
    pub max_gid_len: usize,
    /// Most branch rows, after topic fan-out and with registered branches
    /// (`trans.max_branches`).
    pub max_branches: usize,
    /// Most payload bytes over all branch rows (`trans.max_payload_bytes`).
    pub max_payload_bytes: usize,
}

impl Limits {
    /// The message for a transaction over the branch-row bound.
    pub fn too_many_branches(&self, rows: usize) -> ValidationError {
        invalid(format!(
            "{rows} branch rows: a transaction holds at most {} (trans.max_branches, DTX_TRANS_MAX_BRANCHES)",
            self.max_branches
        ))
    }

    /// The message for a transaction over the payload bound.
    pub fn too_many_bytes(&self, bytes: usize) -> ValidationError {
        invalid(format!(
            "{bytes} payload bytes over all branch rows: a transaction holds at most {} (trans.max_payload_bytes, DTX_TRANS_MAX_PAYLOAD_BYTES)",
            self.max_payload_bytes
        ))
    }
}

/// The default limits, for unit tests.
#[cfg(test)]
pub(crate) const TEST_LIMITS: Limits = Limits {
    max_gid_len: 128,
    max_branches: 2000,
    max_payload_bytes: 2 << 20,
};

/// A validated transaction, ready to store.
pub type NewTrans = Trans;

/// Checks a gid: non-empty, at most `max_len` bytes, no control characters
/// and no `;` (dtm strips those; we refuse them).
pub fn validate_gid(gid: &str, max_len: usize) -> Result<(), ValidationError> {
    if gid.is_empty() {
        return Err(invalid("gid is required"));
    }
    if gid.len() > max_len {
        return Err(invalid(format!(
            "gid is {} bytes long, the limit is {max_len}",
            gid.len()
        )));
    }
    if gid.chars().any(|c| c.is_control() || c == ';') {
        return Err(invalid("gid must not contain control characters or ';'"));
    }
    Ok(())
}

/// Checks a client-chosen branch id: non-empty, at most 128 bytes, no
/// control characters and no `:` (it separates the id from the op in the
/// store).
pub fn validate_branch_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(invalid("branch_id is required"));
    }
    if id.len() > 128 {
        return Err(invalid("branch_id is longer than 128 bytes"));
    }
    if id.chars().any(|c| c.is_control() || c == ':') {
        return Err(invalid(
            "branch_id must not contain control characters or ':'",
        ));
    }
    Ok(())
}

/// The rows a `registerBranch` call adds to a prepared `kind` transaction,
/// from the flat string map clients send (contract §3.3).
pub fn build_registered(
    kind: TransKind,
    fields: &BTreeMap<String, String>,
    now_ms: u64,
) -> Result<Vec<Branch>, ValidationError> {
    let data = fields.get("data").map(String::as_bytes).unwrap_or_default();
    build_registered_with(kind, fields, data, now_ms)
}

/// [`build_registered`] with the row data given apart, as bytes (gRPC's
/// `BusiPayload`); `fields["data"]` is then not read.
pub fn build_registered_with(
    kind: TransKind,
    fields: &BTreeMap<String, String>,
    data: &[u8],
    now_ms: u64,
) -> Result<Vec<Branch>, ValidationError> {
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let id = get("branch_id").to_owned();
    validate_branch_id(&id)?;
    let pair = |first: (Op, &str), second: (Op, &str)| -> Result<Vec<Branch>, ValidationError> {
        validate_url(first.1)?;
        validate_url(second.1)?;
        Ok(vec![
            row(id.clone(), first.0, first.1, data, 0, now_ms),
            row(id.clone(), second.0, second.1, data, 0, now_ms),
        ])
    };
    match kind {
        TransKind::Tcc => pair((Op::Cancel, get("cancel")), (Op::Confirm, get("confirm"))),
        TransKind::Xa => pair((Op::Rollback, get("url")), (Op::Commit, get("url"))),
        TransKind::Workflow => {
            let op = match Op::parse(get("op")) {
                Some(op @ (Op::Action | Op::Commit | Op::Rollback | Op::Business)) => op,
                _ => {
                    return Err(invalid(format!(
                        "workflow op {:?} must be action, commit, rollback or business",
                        get("op")
                    )))
                }
            };
            let status = match get("status") {
                "succeed" => BranchStatus::Succeed,
                "failed" => BranchStatus::Failed,
                other => {
                    return Err(invalid(format!(
                        "workflow branch status {other:?} must be succeed or failed"
                    )))
                }
            };
            let mut b = row(id, op, "", data, 0, now_ms);
            b.status = status;
            Ok(vec![b])
        }
        TransKind::Saga | TransKind::Msg => Err(invalid(format!(
            "registerBranch is for tcc, xa and workflow, not {kind}"
        ))),
    }
}

/// Headers a client may not set on branch calls: they frame the message
/// or steer the connection, so they belong to dtx's HTTP client.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
];

/// Checks one `branch_headers` entry: a valid header, and none that frames
/// the request or steers the connection (`Host`, `Content-Length`,
/// `Transfer-Encoding`, `Connection`, `TE`, `Trailer`, `Upgrade`,
/// `Keep-Alive`, `Proxy-*`).
pub(crate) fn validate_branch_header(name: &str, value: &str) -> Result<(), ValidationError> {
    if name.is_empty()
        || name.chars().any(|c| c.is_control() || c == ':' || c == ' ')
        || value.chars().any(char::is_control)
    {
        return Err(invalid(format!(
            "branch header {name:?} is not a valid header"
        )));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return Err(invalid(format!(
            "branch header {name:?} frames the request or steers the connection; dtx sets it itself"
        )));
    }
    Ok(())
}

/// Checks a branch URL: empty (success without a call), `http(s)://`,
/// gRPC `[grpc://|grpcs://]host:port/package.Service/Method`, or
/// `etcd://`.
pub fn validate_url(url: &str) -> Result<(), ValidationError> {
    if url.is_empty() {
        return Ok(());
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(format!(
            "branch url {url:?} contains spaces or control characters"
        )));
    }
    if super::plain_http(url).is_some() {
        return Ok(());
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return match url::Url::parse(url) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
            _ => Err(invalid(format!(
                "branch url {url:?} is not a valid http url"
            ))),
        };
    }
    if url.starts_with("etcd://") {
        return super::EtcdTarget::parse(url).map(|_| ()).map_err(invalid);
    }
    if super::GrpcTarget::parse(url).is_ok() {
        return Ok(());
    }
    Err(invalid(format!(
        "branch url {url:?} must be empty, http(s)://..., [grpc://|grpcs://]host:port/package.Service/Method or etcd://host:port/service-key/package.Service/Method"
    )))
}

/// Parses a saga's `custom_data`; `steps` bounds the indices in `orders`.
pub(crate) fn parse_saga_custom(raw: &str, steps: usize) -> Result<SagaCustom, ValidationError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        concurrent: Option<bool>,
        #[serde(default)]
        orders: Option<BTreeMap<String, Vec<usize>>>,
    }
    if raw.trim().is_empty() {
        return Ok(SagaCustom::default());
    }
    let parsed: Raw = serde_json::from_str(raw)
        .map_err(|e| invalid(format!("custom_data is not valid saga options: {e}")))?;
    let mut orders = BTreeMap::new();
    for (key, deps) in parsed.orders.unwrap_or_default() {
        let step: usize = key.parse().map_err(|_| {
            invalid(format!(
                "custom_data.orders key {key:?} is not a step index"
            ))
        })?;
        if step >= steps || deps.iter().any(|d| *d >= steps) {
            return Err(invalid(format!(
                "custom_data.orders refers to a step beyond the {steps} steps"
            )));
        }
        // a dependency named twice is one dependency
        let mut deps = deps;
        deps.sort_unstable();
        deps.dedup();
        orders.insert(step, deps);
    }
    let custom = SagaCustom {
        concurrent: parsed.concurrent.unwrap_or(false),
        orders,
    };
    if has_cycle(&custom.orders, steps) {
        return Err(invalid("custom_data.orders has a cycle"));
    }
    Ok(custom)
}

fn has_cycle(orders: &BTreeMap<usize, Vec<usize>>, steps: usize) -> bool {
    // 0 = unvisited, 1 = on the stack, 2 = done
    fn visit(n: usize, orders: &BTreeMap<usize, Vec<usize>>, mark: &mut [u8]) -> bool {
        match mark[n] {
            1 => return true,
            2 => return false,
            _ => {}
        }
        mark[n] = 1;
        for &d in orders.get(&n).map(Vec::as_slice).unwrap_or_default() {
            if visit(d, orders, mark) {
                return true;
            }
        }
        mark[n] = 2;
        false
    }
    let mut mark = vec![0u8; steps];
    (0..steps).any(|n| visit(n, orders, &mut mark))
}

/// Validates `input` and builds the transaction in `status`, created at
/// `now_ms`, with every branch row it starts with.
pub fn build_new(
    input: NewTransInput,
    status: GlobalStatus,
    now_ms: u64,
    limits: &Limits,
) -> Result<NewTrans, ValidationError> {
    validate_gid(&input.gid, limits.max_gid_len)?;
    if !matches!(input.protocol.as_str(), "" | "http" | "grpc" | "json-rpc") {
        return Err(invalid(format!(
            "protocol {:?} must be http, grpc or json-rpc",
            input.protocol
        )));
    }
    validate_url(&input.query_prepared)?;
    for (name, value, max) in [
        ("timeout_to_fail", input.opts.timeout_to_fail, MAX_SECONDS),
        ("request_timeout", input.opts.request_timeout, MAX_SECONDS),
        ("retry_interval", input.opts.retry_interval, MAX_SECONDS),
        ("retry_limit", input.opts.retry_limit, MAX_RETRY_LIMIT),
    ] {
        if value < 0 {
            return Err(invalid(format!("{name} must not be negative")));
        }
        if value > max {
            return Err(invalid(format!("{name} must be at most {max}")));
        }
    }
    if input.steps.len() > MAX_STEPS {
        return Err(invalid(format!(
            "{} steps: a transaction has at most {MAX_STEPS}",
            input.steps.len()
        )));
    }
    for (name, value) in &input.opts.branch_headers {
        validate_branch_header(name, value)?;
    }
    let branches = match input.kind {
        TransKind::Saga => saga_branches(&input, now_ms)?,
        TransKind::Msg => msg_branches(&input, now_ms, limits)?,
        TransKind::Tcc | TransKind::Xa | TransKind::Workflow => Vec::new(),
    };
    if branches.len() > limits.max_branches {
        return Err(limits.too_many_branches(branches.len()));
    }
    let bytes: usize = branches.iter().map(|b| b.data.len()).sum();
    if bytes > limits.max_payload_bytes {
        return Err(limits.too_many_bytes(bytes));
    }
    if input.kind == TransKind::Msg && !input.custom_data.trim().is_empty() {
        let custom: serde_json::Value = serde_json::from_str(&input.custom_data)
            .map_err(|e| invalid(format!("custom_data is not JSON: {e}")))?;
        if let Some(delay) = custom.get("delay") {
            if !delay
                .as_i64()
                .is_some_and(|d| (0..=MAX_SECONDS).contains(&d))
            {
                return Err(invalid(format!(
                    "custom_data.delay must be 0 to {MAX_SECONDS} seconds"
                )));
            }
        }
    }
    Ok(Trans {
        gid: input.gid,
        kind: input.kind,
        status,
        create_ms: now_ms,
        update_ms: now_ms,
        finish_ms: None,
        rollback_ms: None,
        next_ms: None,
        attempt: 0,
        reason: String::new(),
        opts: input.opts,
        custom_data: input.custom_data,
        query_prepared: input.query_prepared,
        protocol: input.protocol,
        result: String::new(),
        owner: String::new(),
        last_error: String::new(),
        last_branch: String::new(),
        trace: None,
        branches,
    })
}

fn check_payloads(input: &NewTransInput) -> Result<(), ValidationError> {
    if input.payloads.len() != input.steps.len() {
        return Err(invalid(format!(
            "{} payloads for {} steps: give one payload per step",
            input.payloads.len(),
            input.steps.len()
        )));
    }
    Ok(())
}

fn row(id: String, op: Op, url: &str, data: &[u8], seq: usize, now_ms: u64) -> Branch {
    Branch {
        id,
        op,
        url: url.to_owned(),
        data: data.to_vec(),
        status: BranchStatus::Prepared,
        seq: seq as u32,
        update_ms: now_ms,
    }
}

fn saga_branches(input: &NewTransInput, now_ms: u64) -> Result<Vec<Branch>, ValidationError> {
    check_payloads(input)?;
    parse_saga_custom(&input.custom_data, input.steps.len())?;
    let mut rows = Vec::with_capacity(input.steps.len() * 2);
    for (i, (step, payload)) in input.steps.iter().zip(&input.payloads).enumerate() {
        validate_url(&step.action)?;
        validate_url(&step.compensate)?;
        let id = format!("{:02}", i + 1);
        rows.push(row(
            id.clone(),
            Op::Compensate,
            &step.compensate,
            payload,
            2 * i,
            now_ms,
        ));
        rows.push(row(
            id,
            Op::Action,
            &step.action,
            payload,
            2 * i + 1,
            now_ms,
        ));
    }
    Ok(rows)
}

fn msg_branches(
    input: &NewTransInput,
    now_ms: u64,
    limits: &Limits,
) -> Result<Vec<Branch>, ValidationError> {
    check_payloads(input)?;
    // topic fan-out multiplies the rows: refuse before building them all
    let (mut rows_wanted, mut bytes_wanted) = (0usize, 0usize);
    for (step, payload) in input.steps.iter().zip(&input.payloads) {
        let n = match step.action.strip_prefix("topic://") {
            Some(topic) => input.topics.get(topic).map_or(0, Vec::len),
            None => 1,
        };
        rows_wanted = rows_wanted.saturating_add(n);
        bytes_wanted = bytes_wanted.saturating_add(n.saturating_mul(payload.len()));
    }
    if rows_wanted > limits.max_branches {
        return Err(limits.too_many_branches(rows_wanted));
    }
    if bytes_wanted > limits.max_payload_bytes {
        return Err(limits.too_many_bytes(bytes_wanted));
    }
    let mut rows = Vec::with_capacity(rows_wanted);
    for (i, (step, payload)) in input.steps.iter().zip(&input.payloads).enumerate() {
        let id = format!("{:02}", i + 1);
        let Some(topic) = step.action.strip_prefix("topic://") else {
            validate_url(&step.action)?;
            rows.push(row(
                id,
                Op::Action,
                &step.action,
                payload,
                rows.len(),
                now_ms,
            ));
            continue;
        };
        // one row per subscriber: 01-01, 01-02, ... (plain 01 for one)
        let urls = input
            .topics
            .get(topic)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid(format!("topic not found: {topic}")))?;
        for (j, url) in urls.iter().enumerate() {
            let sub_id = if urls.len() == 1 {
                id.clone()
            } else {
                format!("{id}-{:02}", j + 1)
            };
            rows.push(row(sub_id, Op::Action, url, payload, rows.len(), now_ms));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
