//! Creating, submitting, aborting and reading global transactions.

use std::time::Duration;

use tracing::info;

use super::{Service, ServiceError, ServiceResult};
use crate::domain::{
    build_new, decide, validate_gid, Command, GlobalStatus, NewTransInput, Outcome, Then, Trans,
    TransKind,
};
use crate::drive::{DriveEnd, DriveReport};
use crate::store::{Created, Move, StoreError};
use crate::{otel, telemetry};

/// A workflow client's final submit: the outcome it reached.
#[derive(Debug, Clone, Default)]
pub struct WorkflowOutcome {
    /// The workflow.
    pub gid: String,
    /// `status` (`succeed` or `failed`), `rollback_reason`, base64 `result`.
    pub req_extra: std::collections::BTreeMap<String, String>,
}

/// A 22-character random id (about 128 bits), like dtm's shortuuid.
pub fn new_gid() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (0..22)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// An `abort` call.
#[derive(Debug, Clone)]
pub struct Abort {
    /// The transaction.
    pub gid: String,
    /// The kind the call names; it must be the stored one.
    pub kind: TransKind,
    /// Recorded as the reason, when given.
    pub rollback_reason: String,
    /// Wait for the rollback pass.
    pub wait: bool,
}

impl Service {
    /// Resolves the `topic://` steps of a msg to their subscribers.
    async fn with_topics(&self, mut input: NewTransInput) -> ServiceResult<NewTransInput> {
        if input.kind == TransKind::Msg {
            let actions = input.steps.iter().map(|st| st.action.as_str());
            input.topics = self.resolve_topics(actions).await?;
        }
        Ok(input)
    }

    /// Every URL of a new transaction must be on the allow-list.
    fn check_urls(&self, t: &Trans) -> ServiceResult {
        self.check_allowed(&t.query_prepared)?;
        t.branches
            .iter()
            .try_for_each(|b| self.check_allowed(&b.url))
    }

    /// The first time a prepared transaction of `t`'s kind needs attention by
    /// itself: a msg is checked back, a tcc or xa aborted, a workflow called
    /// back, once it outlives its timeout; a saga waits for its submit.
    fn prepared_due(&self, t: &Trans, now: u64) -> Option<u64> {
        let timeout = if t.opts.timeout_to_fail > 0 {
            t.opts.timeout_to_fail
        } else {
            self.engine.policy.timeout_to_fail_s
        };
        match t.kind {
            TransKind::Saga => None,
            _ => Some(now.saturating_add((timeout as u64).saturating_mul(1000))),
        }
    }

    /// `prepare`: stores a prepared msg, tcc, xa or workflow (idempotent).
    pub async fn prepare(&self, input: NewTransInput) -> ServiceResult {
        let engine = &self.engine;
        let now = engine.now_ms();
        let input = self.with_topics(input).await?;
        let mut t = build_new(input, GlobalStatus::Prepared, now, &self.limits)?;
        t.trace = otel::current();
        self.check_urls(&t)?;
        let due = self.prepared_due(&t, now);
        t.next_ms = due;
        match engine.store.create_trans(&t, 0, due).await? {
            Created::New => {
                info!(gid = %t.gid, kind = %t.kind, "prepared");
                telemetry::trans_started(t.kind.as_str());
                if let Some(at) = due {
                    engine.note_due(&t.gid, at);
                }
                Ok(())
            }
            Created::Exists(GlobalStatus::Prepared, kind) if kind != t.kind => {
                Err(kind_conflict(&t.gid, kind, t.kind))
            }
            Created::Exists(GlobalStatus::Prepared, _) => Ok(()),
            Created::Exists(status, _) => Err(ServiceError::Failure(format!(
                "current status '{status}', cannot prepare. FAILURE"
            ))),
        }
    }

    /// `submit`: creates and drives a saga, or submits a prepared msg, tcc or
    /// xa; waits for the pass with `wait_result`. A workflow's submit is
    /// [`Service::submit_workflow`].
    pub async fn submit(&self, input: NewTransInput) -> ServiceResult {
        if input.kind == TransKind::Workflow {
            return Err(ServiceError::Invalid(
                "a workflow is submitted with the outcome its client reached (req_extra.status)"
                    .into(),
            ));
        }
        let engine = &self.engine;
        let now = engine.now_ms();
        let input = self.with_topics(input).await?;
        let mut t = build_new(input, GlobalStatus::Submitted, now, &self.limits)?;
        t.trace = otel::current();
        self.check_urls(&t)?;
        let wait = t.opts.wait_result;
        let lease_until = now + engine.lease_ms;
        // msg, tcc and xa are usually prepared first: take that one over
        // before trying to create (one script instead of two)
        if t.kind != TransKind::Saga {
            match self.take_prepared(&t, now, lease_until).await {
                Ok(pass) => return if wait { report(pass.await) } else { Ok(()) },
                Err(StoreError::NotFound) => {}
                Err(StoreError::KindConflict(actual)) => {
                    return Err(kind_conflict(&t.gid, actual, t.kind))
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    return self.resubmitted(&t.gid, actual, t.kind, wait).await
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
                return Err(kind_conflict(&t.gid, kind, t.kind))
            }
            Created::Exists(GlobalStatus::Prepared, _) => {
                match self.take_prepared(&t, now, lease_until).await {
                    Ok(pass) => pass,
                    Err(StoreError::KindConflict(actual)) => {
                        return Err(kind_conflict(&t.gid, actual, t.kind))
                    }
                    Err(StoreError::Conflict { actual, .. }) => {
                        return self.resubmitted(&t.gid, actual, t.kind, wait).await
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Created::Exists(status, _) => {
                return self.resubmitted(&t.gid, status, t.kind, wait).await
            }
        };
        if wait {
            report(pass.await)
        } else {
            Ok(())
        }
    }

    /// Moves the prepared transaction of `submitted`'s gid to submitted,
    /// taking its lease, and starts driving it. The submit's trace context,
    /// when it has one, replaces the prepare's: what follows is its doing.
    async fn take_prepared(
        &self,
        submitted: &Trans,
        now: u64,
        lease_until: u64,
    ) -> Result<tokio::task::JoinHandle<DriveReport>, StoreError> {
        let engine = &self.engine;
        let (gid, kind) = (submitted.gid.as_str(), submitted.kind);
        let fields: Vec<_> = submitted
            .trace
            .iter()
            .map(|trace| ("trace", trace.encode()))
            .collect();
        // the decision for a prepared one (submit refuses workflows, the one
        // kind the table does not submit)
        let to = decide(kind, GlobalStatus::Prepared, Command::Submit(kind))
            .map_err(|r| StoreError::Redis(format!("submit of a prepared {kind}: {r:?}")))?
            .to;
        let leased = engine
            .store
            .transition(
                &Move {
                    gid,
                    kind: Some(kind),
                    from: GlobalStatus::Prepared,
                    to,
                    hold_until_ms: Some(lease_until),
                    fields: &fields,
                },
                engine.stamp(now),
            )
            .await?;
        info!(gid = %gid, "prepared transaction submitted");
        Ok(engine.spawn_drive(leased.trans, leased.epoch, lease_until))
    }

    /// A submit for a gid that already moved past `prepared`.
    async fn resubmitted(
        &self,
        gid: &str,
        status: GlobalStatus,
        kind: TransKind,
        wait: bool,
    ) -> ServiceResult {
        if status != GlobalStatus::Submitted {
            return Err(ServiceError::Failure(format!(
                "current status '{status}', cannot sumbmit. FAILURE"
            )));
        }
        match self.engine.store.status(gid).await? {
            Some((_, stored, _)) if stored != kind => return Err(kind_conflict(gid, stored, kind)),
            Some(_) => {}
            None => {
                return Err(ServiceError::NotFound(format!(
                    "no transaction with gid {gid}"
                )))
            }
        }
        // already submitted: dtm processes it again at once; we make it due
        // now unless a replica is driving it this moment
        if !wait {
            let store = &self.engine.store;
            let now = self.engine.now_ms();
            if store
                .reset_due(store.keys().shard_of(gid), &[gid.to_owned()], now, None)
                .await?
                > 0
            {
                self.engine.note_due(gid, now);
            }
            return Ok(());
        }
        // a pass on this replica wakes the waiter when it ends; one on
        // another replica is seen by reading the status only, backing off
        // from 50 ms to 1 s, for at most RESUBMIT_WAIT
        let deadline = tokio::time::Instant::now() + RESUBMIT_WAIT;
        let mut pause = Duration::from_millis(50);
        let woken = self.engine.watch(gid);
        loop {
            let ended = woken.notified();
            let mut ended = std::pin::pin!(ended);
            // registered before the read, so an end in between is not missed
            ended.as_mut().enable();
            match self.engine.store.status(gid).await? {
                Some((GlobalStatus::Succeed, ..)) => return Ok(()),
                Some((status, _, reason))
                    if status.is_final() || tokio::time::Instant::now() + pause > deadline =>
                {
                    return Err(failure_for(&reason))
                }
                Some(_) => {
                    tokio::select! {
                        () = ended => {}
                        () = tokio::time::sleep(pause) => {
                            pause = (pause * 2).min(Duration::from_secs(1));
                        }
                    }
                }
                None => {
                    return Err(ServiceError::NotFound(format!(
                        "no transaction with gid {gid}"
                    )))
                }
            }
        }
    }

    /// A workflow client's final submit: `req_extra` carries the outcome it
    /// reached (`status`, `rollback_reason`, base64 `result`).
    /// A workflow client's final submit, with the outcome it reached.
    pub async fn submit_workflow(&self, body: WorkflowOutcome) -> ServiceResult {
        validate_gid(&body.gid, self.limits.max_gid_len)?;
        let extra = &body.req_extra;
        let (succeeded, time_field) = match extra.get("status").map(String::as_str) {
            Some("succeed") => (true, "finish_ms"),
            Some("failed") => (false, "rollback_ms"),
            other => {
                return Err(ServiceError::Invalid(format!(
                    "workflow submit needs req_extra.status succeed or failed, got {other:?}"
                )))
            }
        };
        let engine = &self.engine;
        let now = engine.now_ms();
        let mut fields = vec![(time_field, now.to_string())];
        for (key, field) in [("rollback_reason", "reason"), ("result", "result")] {
            if let Some(v) = extra.get(key).filter(|v| !v.is_empty()) {
                fields.push((field, v.clone()));
            }
        }
        // the store checks the expected status and kind atomically
        let outcome = Command::WorkflowOutcome { succeeded };
        let to = decide(TransKind::Workflow, GlobalStatus::Prepared, outcome)
            .map_err(|r| ServiceError::Internal(format!("workflow outcome: {r:?}")))?
            .to;
        match engine
            .store
            .transition(
                &Move {
                    gid: &body.gid,
                    kind: Some(TransKind::Workflow),
                    from: GlobalStatus::Prepared,
                    to,
                    hold_until_ms: None,
                    fields: &fields,
                },
                engine.stamp(now),
            )
            .await
        {
            Ok(l) => {
                info!(gid = %body.gid, status = %to, "workflow submitted");
                finished(&l.trans, now);
                Ok(())
            }
            Err(StoreError::KindConflict(actual)) => {
                Err(kind_conflict(&body.gid, actual, TransKind::Workflow))
            }
            Err(StoreError::Conflict { actual, .. }) => Err(ServiceError::Failure(format!(
                "current status '{actual}', cannot sumbmit. FAILURE"
            ))),
            Err(StoreError::NotFound) => Err(ServiceError::NotFound(format!(
                "no transaction with gid {}",
                body.gid
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// `prepareWorkflow`: creates a prepared workflow, or returns the existing
    /// one, with the progress recorded so far.
    pub async fn prepare_workflow(&self, input: NewTransInput) -> ServiceResult<Trans> {
        if input.kind != TransKind::Workflow {
            return Err(ServiceError::Invalid(
                "prepareWorkflow needs trans_type workflow".into(),
            ));
        }
        let engine = &self.engine;
        let now = engine.now_ms();
        let mut t = build_new(input, GlobalStatus::Prepared, now, &self.limits)?;
        t.trace = otel::current();
        self.check_urls(&t)?;
        let due = self.prepared_due(&t, now);
        t.next_ms = due;
        match engine.store.create_trans(&t, 0, due).await? {
            Created::New => {
                info!(gid = %t.gid, "workflow prepared");
                telemetry::trans_started(t.kind.as_str());
                if let Some(at) = due {
                    engine.note_due(&t.gid, at);
                }
            }
            Created::Exists(GlobalStatus::Prepared, kind) if kind != TransKind::Workflow => {
                return Err(kind_conflict(&t.gid, kind, TransKind::Workflow))
            }
            Created::Exists(..) => {}
        }
        let t = engine.store.load(&t.gid).await?.ok_or_else(|| {
            ServiceError::Unavailable("the workflow expired while it was read".into())
        })?;
        Ok(t)
    }

    /// `abort`: fails a prepared msg, or rolls back a prepared or aborting tcc
    /// or xa; waits for the pass with `wait`.
    pub async fn abort(&self, body: Abort) -> ServiceResult {
        validate_gid(&body.gid, self.limits.max_gid_len)?;
        let requested = body.kind;
        let engine = &self.engine;
        let t = engine.store.load(&body.gid).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("no transaction with gid {}", body.gid))
        })?;
        let now = engine.now_ms();
        let refuse = || {
            Err(ServiceError::Failure(format!(
                "trans type: '{}' current status '{}', cannot abort. FAILURE",
                body.kind, t.status
            )))
        };
        // the table decides: a prepared msg fails at once, a tcc or xa
        // rolls back; anything else, or another kind, cannot be aborted
        // (the script checks status and kind again)
        let Ok(d) = decide(t.kind, t.status, Command::Abort(requested)) else {
            return refuse();
        };
        let to = d.to;
        if d.then == Then::Finish {
            let fields = [("rollback_ms", now.to_string())];
            return match engine
                .store
                .transition(
                    &Move {
                        gid: &t.gid,
                        kind: Some(t.kind),
                        from: d.expected,
                        to,
                        hold_until_ms: None,
                        fields: &fields,
                    },
                    engine.stamp(now),
                )
                .await
            {
                Ok(l) => {
                    info!(gid = %t.gid, status = %to, "aborted");
                    finished(&l.trans, now);
                    Ok(())
                }
                Err(StoreError::Conflict { .. } | StoreError::KindConflict(_)) => refuse(),
                Err(e) => Err(e.into()),
            };
        }
        let lease_until = now + engine.lease_ms;
        let mut fields = Vec::new();
        if !body.rollback_reason.is_empty() {
            fields.push(("reason", body.rollback_reason.clone()));
        }
        let leased = match engine
            .store
            .transition(
                &Move {
                    gid: &t.gid,
                    kind: Some(t.kind),
                    from: d.expected,
                    to,
                    hold_until_ms: Some(lease_until),
                    fields: &fields,
                },
                engine.stamp(now),
            )
            .await
        {
            Ok(l) => l,
            Err(StoreError::Conflict { .. } | StoreError::KindConflict(_)) => return refuse(),
            Err(e) => return Err(e.into()),
        };
        info!(gid = %t.gid, "aborting");
        let pass = engine.spawn_drive(leased.trans, leased.epoch, lease_until);
        if body.wait {
            report(pass.await)
        } else {
            Ok(())
        }
    }
}

/// Counts a transaction an API call finished.
pub(crate) fn finished(t: &Trans, now: u64) {
    let age = Duration::from_millis(now.saturating_sub(t.create_ms));
    telemetry::trans_finished(t.kind.as_str(), t.status.as_str(), age);
}

/// Longest a repeated `wait_result` submit waits for the replica driving
/// the transaction.
const RESUBMIT_WAIT: Duration = Duration::from_secs(10);

/// A call naming another `trans_type` than the one `gid` was created with.
pub(crate) fn kind_conflict(gid: &str, stored: TransKind, named: TransKind) -> ServiceError {
    ServiceError::Invalid(format!(
        "{gid} is a {stored} transaction, not {named}: trans_type must match the stored one"
    ))
}

fn not_success(t: &Trans) -> ServiceError {
    failure_for(&t.reason)
}

/// The FAILURE reply of a transaction that did not succeed, for `reason`.
fn failure_for(reason: &str) -> ServiceError {
    if reason.is_empty() {
        ServiceError::Failure("wait result not return success: FAILURE".into())
    } else if reason.ends_with("FAILURE") {
        // a branch's failure text already says so
        ServiceError::Failure(reason.to_owned())
    } else {
        ServiceError::Failure(format!("{reason} FAILURE"))
    }
}

/// The `wait_result` reply of a pass (contract §3.10).
pub(crate) fn report(joined: Result<DriveReport, tokio::task::JoinError>) -> ServiceResult {
    let r = joined.map_err(|e| ServiceError::Internal(format!("transaction pass died: {e}")))?;
    if let DriveEnd::StoreFailed(e) = r.end {
        return Err(e.into());
    }
    if r.trans.status == GlobalStatus::Succeed {
        return Ok(());
    }
    // saga rounds return no error of their own; the other kinds report the
    // branch error that stopped them
    if r.trans.kind != TransKind::Saga && !r.trans.status.is_final() {
        match r.last_error {
            Some(Outcome::Unknown(e)) => return Err(ServiceError::Branch(e)),
            Some(Outcome::Failed(e)) => return Err(ServiceError::Failure(e)),
            Some(Outcome::Ongoing) if r.trans.kind != TransKind::Msg => {
                return Err(ServiceError::Ongoing("ONGOING".into()))
            }
            _ => {}
        }
    }
    Err(not_success(&r.trans))
}
