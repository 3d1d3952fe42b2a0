//! `/api/dtmsvr/*`: creating, submitting, aborting and reading global
//! transactions (contract §1).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::json::{
    branch_json, json_text, nullable, query_map, text_or_json, trans_json, JsonBody,
};
use super::{ApiError, AppState};
use crate::domain::{
    build_new, next, validate_gid, BranchInput, Event, GlobalStatus, NewTransInput, Outcome, Trans,
    TransKind, TransOptions,
};
use crate::drive::{DriveEnd, DriveReport};
use crate::store::{Created, Cursor, ListFilter, StoreError};
use crate::telemetry;

/// The version dtm clients see; dtx's own follows it.
const DTM_VERSION: &str = "v1.19.0";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dtmsvr/version", get(version))
        .route("/api/dtmsvr/newGid", get(new_gid))
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
            payloads,
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

/// A 22-character random id (about 128 bits), like dtm's shortuuid.
pub(super) fn gen_gid() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (0..22)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

async fn new_gid() -> Json<Value> {
    Json(json!({"gid": gen_gid(), "dtm_result": "SUCCESS"}))
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

/// Resolves the `topic://` steps of a msg to their subscribers.
async fn with_topics(s: &AppState, mut input: NewTransInput) -> Result<NewTransInput, ApiError> {
    if input.kind == TransKind::Msg {
        let actions = input.steps.iter().map(|st| st.action.as_str());
        input.topics = super::kv::resolve_topics(&s.engine.store, actions).await?;
    }
    Ok(input)
}

/// Every URL of a new transaction must be on the allow-list.
fn check_urls(s: &AppState, t: &Trans) -> Result<(), ApiError> {
    s.check_allowed(&t.query_prepared)?;
    t.branches.iter().try_for_each(|b| s.check_allowed(&b.url))
}

/// Counts a transaction an API call finished.
pub(super) fn finished(t: &Trans, now: u64) {
    let age = Duration::from_millis(now.saturating_sub(t.create_ms));
    telemetry::trans_finished(t.kind.as_str(), t.status.as_str(), age);
}

/// The first time a prepared transaction of `t`'s kind needs attention by
/// itself: a msg is checked back, a tcc or xa aborted, a workflow called
/// back, once it outlives its timeout; a saga waits for its submit.
fn prepared_due(s: &AppState, t: &Trans, now: u64) -> Option<u64> {
    let timeout = if t.opts.timeout_to_fail > 0 {
        t.opts.timeout_to_fail
    } else {
        s.engine.policy.timeout_to_fail_s
    };
    match t.kind {
        TransKind::Saga => None,
        _ => Some(now.saturating_add((timeout as u64).saturating_mul(1000))),
    }
}

pub(super) async fn do_prepare(s: &AppState, body: TransBody) -> ApiResult {
    let engine = &s.engine;
    let now = engine.now_ms();
    let input = with_topics(s, body.into_input()?).await?;
    let mut t = build_new(input, GlobalStatus::Prepared, now, &s.limits)?;
    check_urls(s, &t)?;
    let due = prepared_due(s, &t, now);
    t.next_ms = due;
    match engine.store.create_trans(&t, 0, due).await? {
        Created::New => {
            info!(gid = %t.gid, kind = %t.kind, "prepared");
            telemetry::trans_started(t.kind.as_str());
            if let Some(at) = due {
                engine.note_due(at);
            }
            success()
        }
        Created::Exists(GlobalStatus::Prepared, kind) if kind != t.kind => {
            Err(kind_conflict(&t.gid, kind.as_str(), t.kind))
        }
        Created::Exists(GlobalStatus::Prepared, _) => success(),
        Created::Exists(status, _) => Err(ApiError::Failure(format!(
            "current status '{status}', cannot prepare. FAILURE"
        ))),
    }
}

pub(super) async fn do_submit(s: &AppState, body: TransBody) -> ApiResult {
    if body.trans_type == TransKind::Workflow.as_str() {
        return submit_workflow(s, body).await;
    }
    let engine = &s.engine;
    let now = engine.now_ms();
    let input = with_topics(s, body.into_input()?).await?;
    let mut t = build_new(input, GlobalStatus::Submitted, now, &s.limits)?;
    check_urls(s, &t)?;
    let wait = t.opts.wait_result;
    let lease_until = now + engine.lease_ms;
    // msg, tcc and xa are usually prepared first: take that one over
    // before trying to create (one script instead of two)
    if t.kind != TransKind::Saga {
        match take_prepared(s, &t.gid, t.kind, now, lease_until).await {
            Ok(pass) => return if wait { report(pass.await) } else { success() },
            Err(StoreError::NotFound) => {}
            Err(StoreError::KindConflict(actual)) => {
                return Err(kind_conflict(&t.gid, &actual, t.kind))
            }
            Err(StoreError::Conflict { actual, .. }) => {
                return resubmitted(s, &t.gid, &actual, t.kind, wait).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    t.owner = engine.owner.clone();
    t.next_ms = Some(lease_until);
    let pass = match engine.store.create_trans(&t, 1, Some(lease_until)).await? {
        Created::New => {
            info!(gid = %t.gid, kind = %t.kind, "submitted");
            telemetry::trans_started(t.kind.as_str());
            engine.spawn_drive(t, 1, lease_until)
        }
        // a status the submit accepts, on another kind
        Created::Exists(GlobalStatus::Prepared | GlobalStatus::Submitted, kind)
            if kind != t.kind =>
        {
            return Err(kind_conflict(&t.gid, kind.as_str(), t.kind))
        }
        Created::Exists(GlobalStatus::Prepared, _) => {
            match take_prepared(s, &t.gid, t.kind, now, lease_until).await {
                Ok(pass) => pass,
                Err(StoreError::KindConflict(actual)) => {
                    return Err(kind_conflict(&t.gid, &actual, t.kind))
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    return resubmitted(s, &t.gid, &actual, t.kind, wait).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        Created::Exists(status, _) => {
            return resubmitted(s, &t.gid, status.as_str(), t.kind, wait).await
        }
    };
    if wait {
        report(pass.await)
    } else {
        success()
    }
}

/// Moves the prepared transaction `gid` to submitted, taking its lease,
/// and starts driving it.
async fn take_prepared(
    s: &AppState,
    gid: &str,
    kind: TransKind,
    now: u64,
    lease_until: u64,
) -> Result<tokio::task::JoinHandle<DriveReport>, StoreError> {
    let engine = &s.engine;
    let leased = engine
        .store
        .transition(
            gid,
            Some(kind),
            GlobalStatus::Prepared,
            GlobalStatus::Submitted,
            now,
            Some(lease_until),
            &engine.owner,
            &[],
        )
        .await?;
    info!(gid = %gid, "prepared transaction submitted");
    Ok(engine.spawn_drive(leased.trans, leased.epoch, lease_until))
}

/// Longest a repeated `wait_result` submit waits for the replica driving
/// the transaction.
const RESUBMIT_WAIT: Duration = Duration::from_secs(10);

/// A call naming another `trans_type` than the one `gid` was created with.
pub(super) fn kind_conflict(gid: &str, stored: &str, named: TransKind) -> ApiError {
    ApiError::BadRequest(format!(
        "{gid} is a {stored} transaction, not {named}: trans_type must match the stored one"
    ))
}

/// A submit for a gid that already moved past `prepared`.
async fn resubmitted(
    s: &AppState,
    gid: &str,
    status: &str,
    kind: TransKind,
    wait: bool,
) -> ApiResult {
    if status != GlobalStatus::Submitted.as_str() {
        return Err(ApiError::Failure(format!(
            "current status '{status}', cannot sumbmit. FAILURE"
        )));
    }
    match s.engine.store.status(gid).await? {
        Some((_, stored, _)) if stored != kind => {
            return Err(kind_conflict(gid, stored.as_str(), kind))
        }
        Some(_) => {}
        None => return Err(ApiError::NotFound(format!("no transaction with gid {gid}"))),
    }
    // already submitted: dtm processes it again at once; we make it due
    // now unless a replica is driving it this moment
    if !wait {
        let store = &s.engine.store;
        let now = s.engine.now_ms();
        if store
            .reset_due(store.keys().shard_of(gid), &[gid.to_owned()], now, None)
            .await?
            > 0
        {
            s.engine.note_due(now);
        }
        return success();
    }
    // the replica driving it may be another one: read the status only,
    // backing off from 50 ms to 1 s, for at most RESUBMIT_WAIT
    let deadline = tokio::time::Instant::now() + RESUBMIT_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        match s.engine.store.status(gid).await? {
            Some((GlobalStatus::Succeed, ..)) => return success(),
            Some((status, _, reason))
                if status.is_final() || tokio::time::Instant::now() + pause > deadline =>
            {
                return Err(failure_for(&reason))
            }
            Some(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            None => return Err(ApiError::NotFound(format!("no transaction with gid {gid}"))),
        }
    }
}

/// A workflow client's final submit: `req_extra` carries the outcome it
/// reached (`status`, `rollback_reason`, base64 `result`).
async fn submit_workflow(s: &AppState, body: TransBody) -> ApiResult {
    validate_gid(&body.gid, s.limits.max_gid_len)?;
    let extra = &body.req_extra;
    let (event, time_field) = match extra.get("status").map(String::as_str) {
        Some("succeed") => (Event::ClientSucceeded, "finish_ms"),
        Some("failed") => (Event::ClientFailed, "rollback_ms"),
        other => {
            return Err(ApiError::BadRequest(format!(
                "workflow submit needs req_extra.status succeed or failed, got {other:?}"
            )))
        }
    };
    let engine = &s.engine;
    let now = engine.now_ms();
    let mut fields = vec![(time_field, now.to_string())];
    for (key, field) in [("rollback_reason", "reason"), ("result", "result")] {
        if let Some(v) = extra.get(key).filter(|v| !v.is_empty()) {
            fields.push((field, v.clone()));
        }
    }
    let to = next(TransKind::Workflow, GlobalStatus::Prepared, event)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    match engine
        .store
        .transition(
            &body.gid,
            Some(TransKind::Workflow),
            GlobalStatus::Prepared,
            to,
            now,
            None,
            &engine.owner,
            &fields,
        )
        .await
    {
        Ok(l) => {
            info!(gid = %body.gid, status = %to, "workflow submitted");
            finished(&l.trans, now);
            success()
        }
        Err(StoreError::KindConflict(actual)) => {
            Err(kind_conflict(&body.gid, &actual, TransKind::Workflow))
        }
        Err(StoreError::Conflict { actual, .. }) => Err(ApiError::Failure(format!(
            "current status '{actual}', cannot sumbmit. FAILURE"
        ))),
        Err(StoreError::NotFound) => Err(ApiError::NotFound(format!(
            "no transaction with gid {}",
            body.gid
        ))),
        Err(e) => Err(e.into()),
    }
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
    let engine = &s.engine;
    let now = engine.now_ms();
    let mut t = build_new(body.into_input()?, GlobalStatus::Prepared, now, &s.limits)?;
    check_urls(s, &t)?;
    let due = prepared_due(s, &t, now);
    t.next_ms = due;
    match engine.store.create_trans(&t, 0, due).await? {
        Created::New => {
            info!(gid = %t.gid, "workflow prepared");
            telemetry::trans_started(t.kind.as_str());
            if let Some(at) = due {
                engine.note_due(at);
            }
        }
        Created::Exists(GlobalStatus::Prepared, kind) if kind != TransKind::Workflow => {
            return Err(kind_conflict(&t.gid, kind.as_str(), TransKind::Workflow))
        }
        Created::Exists(..) => {}
    }
    let t =
        engine.store.load(&t.gid).await?.ok_or_else(|| {
            ApiError::Unavailable("the workflow expired while it was read".into())
        })?;
    Ok(Json(json!({
        "transaction": trans_json(&t),
        "progresses": t.branches.iter().map(|b| branch_json(&t, b)).collect::<Vec<_>>(),
    })))
}

fn not_success(t: &Trans) -> ApiError {
    failure_for(&t.reason)
}

/// The FAILURE reply of a transaction that did not succeed, for `reason`.
fn failure_for(reason: &str) -> ApiError {
    if reason.is_empty() {
        ApiError::Failure("wait result not return success: FAILURE".into())
    } else if reason.ends_with("FAILURE") {
        // a branch's failure text already says so
        ApiError::Failure(reason.to_owned())
    } else {
        ApiError::Failure(format!("{reason} FAILURE"))
    }
}

/// The `wait_result` reply of a pass (contract §3.10).
pub(super) fn report(joined: Result<DriveReport, tokio::task::JoinError>) -> ApiResult {
    let r = joined.map_err(|e| ApiError::Internal(format!("transaction pass died: {e}")))?;
    if let DriveEnd::StoreFailed(e) = r.end {
        return Err(e.into());
    }
    if r.trans.status == GlobalStatus::Succeed {
        return success();
    }
    // saga rounds return no error of their own; the other kinds report the
    // branch error that stopped them
    if r.trans.kind != TransKind::Saga && !r.trans.status.is_final() {
        match r.last_error {
            Some(Outcome::Unknown(e)) => return Err(ApiError::Branch(e)),
            Some(Outcome::Failed(e)) => return Err(ApiError::Failure(e)),
            Some(Outcome::Ongoing) if r.trans.kind != TransKind::Msg => {
                return Err(ApiError::Ongoing("ONGOING".into()))
            }
            _ => {}
        }
    }
    Err(not_success(&r.trans))
}

pub(super) async fn do_abort(s: &AppState, body: TransBody) -> ApiResult {
    validate_gid(&body.gid, s.limits.max_gid_len)?;
    let requested = body.kind()?;
    let engine = &s.engine;
    let t = engine
        .store
        .load(&body.gid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no transaction with gid {}", body.gid)))?;
    let now = engine.now_ms();
    let refuse = || {
        Err(ApiError::Failure(format!(
            "trans type: '{}' current status '{}', cannot abort. FAILURE",
            body.trans_type, t.status
        )))
    };
    // the kind of a gid never changes; the script checks it again
    if requested != t.kind {
        return refuse();
    }
    if t.kind == TransKind::Msg && t.status == GlobalStatus::Prepared {
        let fields = [("rollback_ms", now.to_string())];
        return match engine
            .store
            .transition(
                &t.gid,
                Some(t.kind),
                t.status,
                GlobalStatus::Failed,
                now,
                None,
                &engine.owner,
                &fields,
            )
            .await
        {
            Ok(l) => {
                info!(gid = %t.gid, "msg aborted");
                finished(&l.trans, now);
                success()
            }
            Err(StoreError::Conflict { .. } | StoreError::KindConflict(_)) => refuse(),
            Err(e) => Err(e.into()),
        };
    }
    let two_phase = matches!(t.kind, TransKind::Tcc | TransKind::Xa);
    if !two_phase || !matches!(t.status, GlobalStatus::Prepared | GlobalStatus::Aborting) {
        return refuse();
    }
    let lease_until = now + engine.lease_ms;
    let mut fields = Vec::new();
    if !body.rollback_reason.is_empty() {
        fields.push(("reason", body.rollback_reason.clone()));
    }
    let leased = match engine
        .store
        .transition(
            &t.gid,
            Some(t.kind),
            t.status,
            GlobalStatus::Aborting,
            now,
            Some(lease_until),
            &engine.owner,
            &fields,
        )
        .await
    {
        Ok(l) => l,
        Err(StoreError::Conflict { .. } | StoreError::KindConflict(_)) => return refuse(),
        Err(e) => return Err(e.into()),
    };
    info!(gid = %t.gid, "aborting");
    let pass = engine.spawn_drive(leased.trans, leased.epoch, lease_until);
    if body.wait_result {
        report(pass.await)
    } else {
        success()
    }
}

async fn query(State(s): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query_map(raw.as_deref());
    let gid = q.get("gid").map(String::as_str).unwrap_or_default();
    if gid.is_empty() {
        return Err(ApiError::BadRequest("no gid specified".into()));
    }
    validate_gid(gid, s.limits.max_gid_len)?;
    Ok(Json(match s.engine.store.load(gid).await? {
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
    let store = &s.engine.store;
    if let Some(gid) = q.get("gid").filter(|g| !g.is_empty()) {
        validate_gid(gid, s.limits.max_gid_len)?;
        // dtm answers `null` rather than `[]` when the gid is unknown
        let found = store.load(gid).await?.map(|t| vec![trans_json(&t)]);
        return Ok(Json(json!({"transactions": found, "next_position": ""})));
    }
    let limit: usize = parse_num(&q, "limit")?.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
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
    let (page, next) = store.list(&filter, after, limit).await?;
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
        let a = gen_gid();
        assert_eq!(a.len(), 22);
        assert_ne!(a, gen_gid());
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
        assert_eq!(input.payloads, ["{\"x\":1}"]);
        assert_eq!(input.opts.request_timeout, 8);
        assert_eq!(input.custom_data, "");
    }
}
