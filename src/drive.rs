//! Driving one leased transaction: the one place that sequences the
//! planner, the branch caller and the store.
//!
//! A pass runs while there is something to do now. Branch results are
//! written lazily: a pass writes before any change of global status (the
//! decision must be durable before anything acts on it), when it renews
//! its lease, and when it ends. A successful saga therefore costs one
//! create and one final write, whatever its step count.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use futures_util::future::join_all;
use tracing::{debug, warn};

use crate::domain::{
    after_check_back, next, plan_shaped, retry_at, settle, unfinished, AfterCheckBack,
    BranchStatus, Event, GlobalStatus, Outcome, Plan, Settled, Shape, Trans, Unfinished,
};
use crate::engine::Engine;
use crate::store::{Held, Record, Schedule, StoreError};
use crate::telemetry;

/// How a pass ended.
#[derive(Debug)]
pub enum DriveEnd {
    /// The transaction reached a final status.
    Finished,
    /// It is scheduled to be driven again later.
    Waiting,
    /// Nothing to do until a client acts.
    Idle,
    /// Another replica or an API call holds it now.
    LeaseLost,
    /// Redis failed; the lease will run out and the work resumes.
    StoreFailed(StoreError),
    /// The replica is shutting down; the lease was handed back.
    Stopped,
}

/// Why a pass stopped before it was done: the lease is gone, Redis
/// failed, or the replica is shutting down. Every other end is a
/// [`DriveEnd`] the pass reached normally.
#[derive(Debug)]
enum Interrupted {
    /// Another replica or an API call holds the transaction now.
    LeaseLost,
    /// Redis failed.
    StoreFailed(StoreError),
    /// The replica is shutting down; the lease was handed back.
    Stopped,
}

impl DriveEnd {
    /// Its name, for logs and spans.
    pub fn label(&self) -> &'static str {
        match self {
            DriveEnd::Finished => "finished",
            DriveEnd::Waiting => "waiting",
            DriveEnd::Idle => "idle",
            DriveEnd::LeaseLost => "lease_lost",
            DriveEnd::StoreFailed(_) => "store_failed",
            DriveEnd::Stopped => "stopped",
        }
    }
}

impl From<Interrupted> for DriveEnd {
    fn from(i: Interrupted) -> Self {
        match i {
            Interrupted::LeaseLost => DriveEnd::LeaseLost,
            Interrupted::StoreFailed(e) => DriveEnd::StoreFailed(e),
            Interrupted::Stopped => DriveEnd::Stopped,
        }
    }
}

type Step<T = ()> = Result<T, Interrupted>;

/// The lease a pass holds: its epoch, until when, and the branch rows
/// settled in memory and not yet written. Every write goes through it.
struct Lease {
    epoch: u64,
    until: u64,
    /// Branch rows settled in memory, not yet written.
    pending: Vec<(String, BranchStatus, BranchStatus)>,
}

impl Lease {
    /// One `record` call for `t` carrying every pending row; a hold
    /// extends the lease.
    async fn record(
        &mut self,
        engine: &Engine,
        t: &Trans,
        status: Option<GlobalStatus>,
        fields: Vec<(&'static str, String)>,
        schedule: Schedule,
    ) -> Step {
        if matches!(schedule, Schedule::Release(_) | Schedule::Park) {
            telemetry::lease("released", 1);
        }
        let rec = Record {
            status,
            fields,
            branches: std::mem::take(&mut self.pending),
            schedule,
        };
        let now = engine.now_ms();
        match engine
            .store
            .record(
                &Held {
                    gid: &t.gid,
                    create_ms: t.create_ms,
                    epoch: self.epoch,
                    status: t.status,
                },
                engine.stamp(now),
                &rec,
            )
            .await
        {
            Ok(()) => {
                if let Schedule::Hold(until) = schedule {
                    self.until = until;
                }
                Ok(())
            }
            Err(StoreError::StaleEpoch(_) | StoreError::Conflict { .. } | StoreError::NotFound) => {
                debug!(gid = %t.gid, "lease lost; another replica or an API call owns the transaction");
                telemetry::lease("lost", 1);
                Err(Interrupted::LeaseLost)
            }
            Err(e @ StoreError::BranchConflict(_)) => {
                warn!(gid = %t.gid, error = %e, "stored branches disagree with this pass; leaving it to the next claim");
                Err(Interrupted::LeaseLost)
            }
            Err(e) => {
                // keep the rows so a report shows what was done
                self.pending = rec.branches;
                Err(Interrupted::StoreFailed(e))
            }
        }
    }

    /// Hands the lease back, due at `at`.
    async fn release(&mut self, engine: &Engine, t: &Trans, at: u64) -> Step {
        self.record(engine, t, None, Vec::new(), Schedule::Release(at))
            .await
    }

    /// Awaits `work` (branch calls) while keeping the lease: renews it
    /// before half of it is gone (first, if it already is), and on a hard
    /// stop hands it back and abandons the work. A draining replica starts
    /// no new work: it hands the lease back (due now) before the first
    /// poll, so a call it would abandon at the drain deadline, and another
    /// replica then repeat, is never made.
    async fn hold<F: Future>(&mut self, engine: &Engine, t: &Trans, work: F) -> Step<F::Output> {
        if engine.draining() {
            self.release(engine, t, engine.now_ms()).await?;
            return Err(Interrupted::Stopped);
        }
        let mut work = pin!(work);
        loop {
            let renew_at = self.until.saturating_sub(engine.lease_ms / 2);
            let now = engine.now_ms();
            if now >= renew_at {
                // never start or keep calling on a lease that is about to end
                let until = now + engine.lease_ms;
                self.record(engine, t, None, Vec::new(), Schedule::Hold(until))
                    .await?;
                continue;
            }
            tokio::select! {
                biased;
                _ = engine.hard_stop() => {
                    self.release(engine, t, engine.now_ms()).await?;
                    return Err(Interrupted::Stopped);
                }
                _ = engine.clock.sleep_until(renew_at) => {}
                out = &mut work => return Ok(out),
            }
        }
    }
}

/// What a pass did, for `wait_result` callers and logs.
#[derive(Debug)]
pub struct DriveReport {
    /// How it ended.
    pub end: DriveEnd,
    /// The transaction as this pass left it.
    pub trans: Trans,
    /// The last outcome that kept a branch from finishing, if any.
    pub last_error: Option<Outcome>,
}

struct Pass<'a> {
    engine: &'a Engine,
    t: Trans,
    lease: Lease,
    /// Rows that will not be called again in this pass (true: back off).
    deferred: HashMap<usize, bool>,
    /// What planning needs from the rows, worked out once.
    shape: Shape,
    /// Immediate retries used per saga action (retry_limit).
    retries: HashMap<usize, i64>,
    progressed: bool,
    last_error: Option<Outcome>,
    /// URL of the call that produced `last_error`.
    last_url: String,
    /// Branch row (`<branch_id>:<op>`) of that call.
    last_field: String,
}

/// Drives `t`, leased at `epoch` until `lease_until`, as far as it can go
/// now.
pub async fn drive(engine: &Engine, t: Trans, epoch: u64, lease_until: u64) -> DriveReport {
    let mut pass = Pass {
        engine,
        shape: Shape::of(&t),
        t,
        lease: Lease {
            epoch,
            until: lease_until,
            pending: Vec::new(),
        },
        deferred: HashMap::new(),
        retries: HashMap::new(),
        progressed: false,
        last_error: None,
        last_url: String::new(),
        last_field: String::new(),
    };
    let end = match pass.run().await {
        Ok(end) => end,
        Err(i) => i.into(),
    };
    if let DriveEnd::StoreFailed(e) = &end {
        warn!(gid = %pass.t.gid, error = %e, "store write failed; the transaction resumes when its lease runs out");
        engine.note_due(&pass.t.gid, pass.lease.until);
    }
    DriveReport {
        end,
        trans: pass.t,
        last_error: pass.last_error,
    }
}

/// How many planning rounds a pass runs before it yields to other tasks.
const YIELD_EVERY_ROUNDS: u32 = 8;

impl Pass<'_> {
    async fn run(&mut self) -> Step<DriveEnd> {
        let mut rounds = 0u32;
        loop {
            if self.engine.stopping() {
                let now = self.engine.now_ms();
                self.lease.release(self.engine, &self.t, now).await?;
                return Ok(DriveEnd::Stopped);
            }
            // rounds without I/O (empty URLs) must still let others run:
            // yield every few rounds, not on each (a 2-step saga takes 3)
            rounds += 1;
            if rounds.is_multiple_of(YIELD_EVERY_ROUNDS) {
                tokio::task::yield_now().await;
            }
            let now = self.engine.now_ms();
            match plan_shaped(&self.t, &self.shape, now, &self.engine.policy) {
                Plan::Call(rows) => {
                    let calls: Vec<usize> = rows
                        .into_iter()
                        .filter(|i| !self.deferred.contains_key(i))
                        .collect();
                    if calls.is_empty() {
                        let backoff = self.deferred.values().any(|b| *b);
                        return self.wait_for_retry(backoff).await;
                    }
                    if let Some(reason) = self.call(&calls).await? {
                        let event = Event::RetryLimitExceeded;
                        if !self.change_status(event, Some(reason)).await? {
                            return Ok(DriveEnd::Idle);
                        }
                    }
                }
                Plan::Resume(resume) => {
                    // boxed, as the check-back below: a call inlined here
                    // would enlarge every pass's future, msg or not
                    let callback = Box::pin(self.engine.caller.workflow_callback(&self.t, &resume));
                    let outcome = self.lease.hold(self.engine, &self.t, callback).await?;
                    debug!(gid = %self.t.gid, outcome = ?outcome, "workflow called back");
                    self.unanswered(outcome, self.t.query_prepared.clone(), "00:callback");
                    return self.wait_for_retry(true).await;
                }
                Plan::CheckBack => {
                    let check = Box::pin(self.engine.caller.check_back(&self.t));
                    let outcome = self.lease.hold(self.engine, &self.t, check).await?;
                    match after_check_back(&outcome) {
                        AfterCheckBack::Move(event) => {
                            if !self.change_status(event, None).await? {
                                return Ok(DriveEnd::Idle);
                            }
                        }
                        AfterCheckBack::Retry { backoff } => {
                            self.unanswered(outcome, self.t.query_prepared.clone(), "00:msg");
                            return self.wait_for_retry(backoff).await;
                        }
                    }
                }
                Plan::Transition { event, reason, .. } => {
                    if !self.change_status(event, reason).await? {
                        return Ok(DriveEnd::Idle);
                    }
                }
                Plan::WaitUntil(at) => {
                    self.lease.release(self.engine, &self.t, at).await?;
                    self.engine.note_due(&self.t.gid, at);
                    return Ok(DriveEnd::Waiting);
                }
                Plan::Idle => {
                    if self.t.status.is_final() {
                        return Ok(DriveEnd::Finished);
                    }
                    self.lease
                        .record(self.engine, &self.t, None, Vec::new(), Schedule::Park)
                        .await?;
                    return Ok(DriveEnd::Idle);
                }
            }
            if self.t.status.is_final() {
                return Ok(DriveEnd::Finished);
            }
        }
    }

    /// Keeps what a call that settled nothing answered, for the error
    /// recorded at the end of the pass.
    fn unanswered(&mut self, outcome: Outcome, url: String, field: &str) {
        self.last_error = Some(outcome);
        self.last_url = url;
        self.last_field = field.to_owned();
    }

    /// Calls `rows` concurrently, renewing the lease while they run, and
    /// settles their outcomes. Returns a reason when a saga action used up
    /// its `retry_limit`.
    async fn call(&mut self, rows: &[usize]) -> Step<Option<String>> {
        let outcomes = {
            let t = &self.t;
            let caller = &self.engine.caller;
            let calls = join_all(rows.iter().map(|&i| caller.call_branch(t, &t.branches[i])));
            self.lease.hold(self.engine, t, calls).await?
        };
        let mut give_up = None;
        for (&i, outcome) in rows.iter().zip(outcomes) {
            let field = self.t.branches[i].field();
            match settle(&mut self.t, i, &outcome) {
                Settled::Done(status) => {
                    debug!(gid = %self.t.gid, branch = %field, status = status.as_str(), "branch settled");
                    self.lease
                        .pending
                        .push((field, BranchStatus::Prepared, status));
                    self.progressed = true;
                }
                Settled::Later { backoff } => {
                    debug!(gid = %self.t.gid, branch = %field, outcome = ?outcome, "branch not done");
                    self.unanswered(outcome.clone(), self.t.branches[i].url.clone(), &field);
                    let used = self.retries.entry(i).or_insert(0);
                    match unfinished(&self.t, i, *used) {
                        Unfinished::RetryNow => {
                            *used += 1;
                            continue;
                        }
                        Unfinished::GiveUp(reason) => give_up = Some(reason),
                        Unfinished::Later => {}
                    }
                    self.deferred.insert(i, backoff);
                }
            }
        }
        Ok(give_up)
    }

    /// Records a change of global status (with every pending row) before
    /// anything acts on it.
    /// Returns false, writing nothing, for an event the table does not
    /// allow in the current status (the planner never asks for one).
    async fn change_status(&mut self, event: Event, reason: Option<String>) -> Step<bool> {
        let Ok(to) = next(self.t.kind, self.t.status, event) else {
            debug!(gid = %self.t.gid, ?event, status = %self.t.status, "event not in the table; the pass ends");
            return Ok(false);
        };
        let now = self.engine.now_ms();
        let mut fields = vec![("attempt", "0".to_owned())];
        if let Some(r) = &reason {
            fields.push(("reason", r.clone()));
        }
        let schedule = match to {
            GlobalStatus::Succeed => {
                fields.push(("finish_ms", now.to_string()));
                Schedule::Finish
            }
            GlobalStatus::Failed => {
                fields.push(("rollback_ms", now.to_string()));
                Schedule::Finish
            }
            _ => Schedule::Hold(now + self.engine.lease_ms),
        };
        self.lease
            .record(self.engine, &self.t, Some(to), fields, schedule)
            .await?;
        if to.is_final() {
            let age = Duration::from_millis(now.saturating_sub(self.t.create_ms));
            telemetry::trans_finished(self.t.kind.as_str(), to.as_str(), age);
        }
        self.t.status = to;
        self.t.attempt = 0;
        if let Some(r) = reason {
            self.t.reason = r;
        }
        match to {
            GlobalStatus::Succeed => self.t.finish_ms = Some(now),
            GlobalStatus::Failed => self.t.rollback_ms = Some(now),
            _ => {}
        }
        // a new phase: rows deferred in the old one no longer matter
        self.deferred.clear();
        Ok(true)
    }

    /// Ends the pass with rows still to do: due again after a backoff (an
    /// error) or the base interval (ONGOING).
    async fn wait_for_retry(&mut self, backoff: bool) -> Step<DriveEnd> {
        let policy = &self.engine.policy.retry;
        let interval = self.t.opts.retry_interval;
        let delay = if backoff {
            self.t.attempt = if self.progressed {
                1
            } else {
                self.t.attempt + 1
            };
            policy.delay_ms(interval, self.t.attempt, fastrand::f64())
        } else {
            self.t.attempt = 0;
            policy.base_for(interval)
        };
        let at = retry_at(&self.t, self.engine.now_ms(), delay);
        let mut fields = vec![("attempt", self.t.attempt.to_string())];
        if let Some(error) = self.last_error_text() {
            // what the console shows for a transaction that keeps retrying
            fields.push(("last_error", error));
            fields.push(("last_branch", self.last_field.clone()));
        }
        self.lease
            .record(self.engine, &self.t, None, fields, Schedule::Release(at))
            .await?;
        self.engine.note_due(&self.t.gid, at);
        self.maybe_alert(backoff);
        Ok(DriveEnd::Waiting)
    }

    /// The last outcome that kept a branch from finishing, as text.
    fn last_error_text(&self) -> Option<String> {
        self.last_error.as_ref().map(|o| match o {
            Outcome::Failed(e) | Outcome::Unknown(e) => e.clone(),
            Outcome::Ongoing => "ONGOING".to_owned(),
            Outcome::Succeeded => String::new(),
        })
    }

    /// Posts to the alert webhook once the transaction has failed
    /// `alert.retry_limit` attempts in a row (and on every failure after).
    fn maybe_alert(&self, backoff: bool) {
        let alert = &self.engine.alert;
        if !backoff || alert.webhook_url.is_empty() || self.t.attempt < alert.retry_limit {
            return;
        }
        let error = self.last_error_text().unwrap_or_default();
        let post = self.engine.caller.alert(
            &alert.webhook_url,
            serde_json::json!({
                "gid": self.t.gid,
                "status": self.t.status.as_str(),
                "branch": self.last_url,
                "error": error,
                "retry_count": self.t.attempt,
            }),
        );
        // tracked, so a drain waits for alerts on their way out
        self.engine.spawn_background(post);
    }
}
