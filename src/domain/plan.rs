//! The planner: given a transaction and the time, what to do next.

use super::transition::{next, Event};
use super::{BranchStatus, GlobalStatus, Op, Policy, Trans, TransKind};

/// The outcome of one branch call, as the caller classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The branch answered SUCCESS.
    Succeeded,
    /// The branch answered FAILURE; the text says what it replied.
    Failed(String),
    /// The branch answered ONGOING: ask again later.
    Ongoing,
    /// No usable answer (transport error, timeout, other status): the
    /// branch may or may not have run. Never taken as a failure.
    Unknown(String),
}

/// What to do next with a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Call these branches (indices into `Trans::branches`), concurrently.
    Call(Vec<usize>),
    /// Call the msg check-back URL; [`after_check_back`] says what its
    /// answer means.
    CheckBack,
    /// Call the workflow's resume callback with this request. Whatever it
    /// answers, look again after a backoff: the client submits the outcome
    /// itself.
    Resume(Resume),
    /// Move to a new status.
    Transition {
        /// The event that causes it.
        event: Event,
        /// The new status.
        to: GlobalStatus,
        /// The reason to record, if any.
        reason: Option<String>,
    },
    /// Nothing to do before this time (ms).
    WaitUntil(u64),
    /// Nothing to do until a client acts.
    Idle,
}

/// The request that calls a quiet workflow back: dtm posts the
/// workflow's initial input to its `query_prepared` URL under the
/// workflow's name, both kept in `custom_data` (`{"name", "data"}`, data
/// base64).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// The workflow's name, sent as `op`.
    pub op: String,
    /// The initial input, decoded; empty means a GET.
    pub body: Vec<u8>,
}

impl Resume {
    /// The resume request of workflow `t`. `data` comes in both forms real
    /// clients send: a base64 string (Go's `[]byte`) or a JSON array of
    /// byte values. Unreadable `custom_data` gives an empty request (a GET
    /// without a name), as dtm does; an unreadable `data` alone keeps the
    /// name.
    pub fn of(t: &Trans) -> Self {
        use base64::Engine as _;
        use serde_json::Value;
        let custom: Value = serde_json::from_str(&t.custom_data).unwrap_or_default();
        let bytes = match &custom["data"] {
            Value::String(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .unwrap_or_default(),
            Value::Array(items) => items
                .iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Self {
            op: custom["name"].as_str().unwrap_or_default().to_owned(),
            body: bytes,
        }
    }
}

/// What a msg check-back's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCheckBack {
    /// The answer decides: this event moves the transaction on.
    Move(Event),
    /// No decision yet: ask again later, after a backoff (`true`, no usable
    /// answer) or after the base interval (`false`, ONGOING).
    Retry {
        /// Whether the retry backs off.
        backoff: bool,
    },
}

/// The meaning of the check-back answer `outcome`: SUCCESS submits the
/// msg, FAILURE fails it, anything else asks again.
pub fn after_check_back(outcome: &Outcome) -> AfterCheckBack {
    match outcome {
        Outcome::Succeeded => AfterCheckBack::Move(Event::CheckBackConfirmed),
        Outcome::Failed(_) => AfterCheckBack::Move(Event::CheckBackRefused),
        Outcome::Ongoing => AfterCheckBack::Retry { backoff: false },
        Outcome::Unknown(_) => AfterCheckBack::Retry { backoff: true },
    }
}

/// What became of a branch after its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The row moved to this status.
    Done(BranchStatus),
    /// The row stays `prepared`; call it again later, after a backoff
    /// (`true`, an error) or after the base interval (`false`, ONGOING).
    Later {
        /// Whether the retry backs off.
        backoff: bool,
    },
}

/// Applies the outcome of calling branch `idx` to `t` and says what became
/// of the row.
pub fn settle(t: &mut Trans, idx: usize, outcome: &Outcome) -> Settled {
    let saga_action = t.kind == TransKind::Saga && t.branches[idx].op == Op::Action;
    match outcome {
        Outcome::Succeeded => {
            t.branches[idx].status = BranchStatus::Succeed;
            Settled::Done(BranchStatus::Succeed)
        }
        Outcome::Failed(reason) if saga_action => {
            t.branches[idx].status = BranchStatus::Failed;
            if t.reason.is_empty() {
                t.reason = reason.clone();
            }
            Settled::Done(BranchStatus::Failed)
        }
        // FAILURE is final only for a saga action: everywhere else the
        // global decision is taken and the branch must eventually succeed.
        Outcome::Failed(_) | Outcome::Unknown(_) => Settled::Later { backoff: true },
        Outcome::Ongoing => Settled::Later { backoff: false },
    }
}

/// What planning a transaction needs from its rows and `custom_data`,
/// worked out once per pass (parsing a saga's orders on every round made a
/// padded saga cost seconds of CPU).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// The action and compensation rows of each saga step, in step order.
    steps: Vec<SagaStep>,
    /// Saga actions run concurrently, subject to `deps`.
    concurrent: bool,
    /// For each saga step, the steps whose actions must succeed first.
    deps: Vec<Vec<usize>>,
    /// For each saga step, the steps that wait on it.
    dependents: Vec<Vec<usize>>,
}

impl Shape {
    /// The shape of `t` (empty for every kind but saga).
    pub fn of(t: &Trans) -> Self {
        if t.kind != TransKind::Saga {
            return Self::default();
        }
        let steps = saga_steps(t);
        let custom = t.saga_custom();
        let n = steps.len();
        let mut deps = vec![Vec::new(); n];
        let mut dependents = vec![Vec::new(); n];
        for (&step, on) in &custom.orders {
            for &d in on.iter().filter(|&&d| d < n && step < n) {
                deps[step].push(d);
                dependents[d].push(step);
            }
        }
        Self {
            steps,
            concurrent: custom.concurrent,
            deps,
            dependents,
        }
    }
}

/// What to do next with `t` at `now_ms`.
pub fn plan(t: &Trans, now_ms: u64, policy: &Policy) -> Plan {
    plan_shaped(t, &Shape::of(t), now_ms, policy)
}

/// [`plan`] with the shape of `t` worked out already; linear in the rows
/// and the saga's order edges.
pub fn plan_shaped(t: &Trans, shape: &Shape, now_ms: u64, policy: &Policy) -> Plan {
    if t.status.is_final() {
        return Plan::Idle;
    }
    match t.kind {
        TransKind::Saga => plan_saga(t, shape, now_ms),
        TransKind::Msg => plan_msg(t, now_ms, policy),
        TransKind::Tcc => plan_two_phase(t, now_ms, policy, Op::Confirm, Op::Cancel, true),
        TransKind::Xa => plan_two_phase(t, now_ms, policy, Op::Commit, Op::Rollback, false),
        TransKind::Workflow => plan_workflow(t, now_ms, policy),
    }
}

/// A prepared workflow whose client went quiet past its timeout is called
/// back to resume; the client submits the outcome itself.
fn plan_workflow(t: &Trans, now_ms: u64, policy: &Policy) -> Plan {
    if t.status != GlobalStatus::Prepared {
        return Plan::Idle;
    }
    let deadline = prepared_deadline(t, policy);
    if now_ms >= deadline {
        Plan::Resume(Resume::of(t))
    } else {
        Plan::WaitUntil(deadline)
    }
}

fn transition(t: &Trans, event: Event, reason: Option<String>) -> Plan {
    match next(t.kind, t.status, event) {
        Ok(to) => Plan::Transition { event, to, reason },
        // the planner only emits events the table allows for the status it
        // checked; anything else means "nothing to do"
        Err(_) => Plan::Idle,
    }
}

fn timeout_reason(t: &Trans) -> String {
    // dtm prints the transaction's own value, 0 when the default applied
    format!("Timeout after {} seconds", t.opts.timeout_to_fail)
}

/// The action and compensation rows of one saga step.
#[derive(Debug, Clone)]
struct SagaStep {
    action: usize,
    compensate: usize,
}

fn saga_steps(t: &Trans) -> Vec<SagaStep> {
    // build_new numbers step i's rows 2i (compensate) and 2i + 1 (action)
    let n = t.branches.len() / 2;
    let mut action = vec![None; n];
    let mut compensate = vec![None; n];
    for (i, b) in t.branches.iter().enumerate() {
        let step = b.seq as usize / 2;
        match b.op {
            Op::Action if step < n => action[step] = Some(i),
            Op::Compensate if step < n => compensate[step] = Some(i),
            _ => {}
        }
    }
    action
        .into_iter()
        .zip(compensate)
        .filter_map(|(a, c)| {
            Some(SagaStep {
                action: a?,
                compensate: c?,
            })
        })
        .collect()
}

fn plan_saga(t: &Trans, shape: &Shape, now_ms: u64) -> Plan {
    let steps = &shape.steps;
    let status = |i: usize| t.branches[steps[i].action].status;
    // whether step i's action may start: its prerequisites succeeded
    let ready = |i: usize| {
        if shape.concurrent {
            shape.deps[i]
                .iter()
                .all(|&d| status(d) == BranchStatus::Succeed)
        } else {
            i == 0 || status(i - 1) == BranchStatus::Succeed
        }
    };
    match t.status {
        GlobalStatus::Prepared => Plan::Idle,
        GlobalStatus::Submitted => {
            // one look at every action
            let (mut all_done, mut any_failed) = (true, false);
            for i in 0..steps.len() {
                match status(i) {
                    BranchStatus::Succeed => {}
                    BranchStatus::Failed => (all_done, any_failed) = (false, true),
                    BranchStatus::Prepared => all_done = false,
                }
            }
            // all done wins over a timeout that passed meanwhile (as in dtm)
            if all_done {
                return transition(t, Event::Completed, None);
            }
            if any_failed {
                let reason = if t.reason.is_empty() {
                    "fail message lost".to_owned()
                } else {
                    t.reason.clone()
                };
                return transition(t, Event::ActionFailed, Some(reason));
            }
            let timeout = t.opts.timeout_to_fail;
            if timeout > 0 && now_ms >= deadline(t.create_ms, timeout) {
                return transition(t, Event::TimedOut, Some(timeout_reason(t)));
            }
            let runnable: Vec<usize> = (0..steps.len())
                .filter(|&i| status(i) == BranchStatus::Prepared && ready(i))
                .map(|i| steps[i].action)
                .collect();
            if runnable.is_empty() {
                transition(t, Event::Completed, None)
            } else {
                Plan::Call(runnable)
            }
        }
        GlobalStatus::Aborting => {
            // an action that ran, failed, or may have started needs its
            // compensation; one whose prerequisites never succeeded does not
            let needs = |i: usize| status(i) != BranchStatus::Prepared || ready(i);
            let n = steps.len();
            let rolled_back: Vec<bool> = (0..n)
                .map(|i| {
                    !needs(i) || t.branches[steps[i].compensate].status == BranchStatus::Succeed
                })
                .collect();
            if rolled_back.iter().all(|&r| r) {
                return transition(t, Event::RolledBack, None);
            }
            // a compensation waits for those of the steps that depended on it
            let deps_rolled_back = |i: usize| {
                if shape.concurrent {
                    shape.dependents[i].iter().all(|&j| rolled_back[j])
                } else {
                    i + 1 == n || rolled_back[i + 1]
                }
            };
            let runnable: Vec<usize> = (0..n)
                .rev()
                .filter(|&i| !rolled_back[i] && deps_rolled_back(i))
                .map(|i| steps[i].compensate)
                .collect();
            Plan::Call(runnable)
        }
        GlobalStatus::Succeed | GlobalStatus::Failed => Plan::Idle,
    }
}

/// What becomes of a branch row that did not finish, given the immediate
/// retries its pass already used on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfinished {
    /// Call it again in this pass (a saga action within `retry_limit`).
    RetryNow,
    /// Call it again in a later pass.
    Later,
    /// A saga action used up `retry_limit`: roll the saga back with this
    /// reason.
    GiveUp(String),
}

/// The retry budget of row `idx` of `t` after `used` immediate retries in
/// this pass: only a saga action with a `retry_limit` is retried at once,
/// and past the limit the saga gives up.
pub fn unfinished(t: &Trans, idx: usize, used: i64) -> Unfinished {
    let limit = t.opts.retry_limit;
    let saga_action = t.kind == TransKind::Saga && t.branches[idx].op == Op::Action;
    if !saga_action || limit <= 0 {
        Unfinished::Later
    } else if used < limit {
        Unfinished::RetryNow
    } else {
        Unfinished::GiveUp(format!(
            "RetryCount is greater than RetryLimit, RetryLimit: {limit}"
        ))
    }
}

/// When a pass that ends with rows still to do, at `now_ms`, after a
/// `delay_ms` backoff, looks at `t` again: a submitted saga with a timeout
/// is looked at again when it times out, if that comes first (once
/// aborting, the timeout no longer matters).
pub fn retry_at(t: &Trans, now_ms: u64, delay_ms: u64) -> u64 {
    let mut at = now_ms.saturating_add(delay_ms);
    if t.kind == TransKind::Saga
        && t.status == GlobalStatus::Submitted
        && t.opts.timeout_to_fail > 0
    {
        at = at.min(deadline(t.create_ms, t.opts.timeout_to_fail));
    }
    at.max(now_ms)
}

/// `timeout_s` seconds after `start_ms`, saturating.
pub fn deadline(start_ms: u64, timeout_s: i64) -> u64 {
    start_ms.saturating_add((timeout_s.max(0) as u64).saturating_mul(1000))
}

fn prepared_deadline(t: &Trans, policy: &Policy) -> u64 {
    let timeout = if t.opts.timeout_to_fail > 0 {
        t.opts.timeout_to_fail
    } else {
        policy.timeout_to_fail_s
    };
    deadline(t.create_ms, timeout)
}

fn plan_msg(t: &Trans, now_ms: u64, policy: &Policy) -> Plan {
    match t.status {
        GlobalStatus::Prepared => {
            let deadline = prepared_deadline(t, policy);
            if now_ms >= deadline {
                Plan::CheckBack
            } else {
                Plan::WaitUntil(deadline)
            }
        }
        GlobalStatus::Submitted => {
            let start = t.create_ms.saturating_add(t.msg_delay_ms());
            if now_ms < start {
                return Plan::WaitUntil(start);
            }
            let mut pending: Vec<usize> = (0..t.branches.len())
                .filter(|&i| {
                    t.branches[i].op == Op::Action && t.branches[i].status == BranchStatus::Prepared
                })
                .collect();
            pending.sort_by_key(|&i| t.branches[i].seq);
            if pending.is_empty() {
                transition(t, Event::Completed, None)
            } else if t.opts.concurrent {
                Plan::Call(pending)
            } else {
                Plan::Call(vec![pending[0]])
            }
        }
        _ => Plan::Idle,
    }
}

/// tcc and xa: phase two walks the rows of one op, one at a time; tcc from
/// the last registered to the first, xa in registration order.
fn plan_two_phase(
    t: &Trans,
    now_ms: u64,
    policy: &Policy,
    commit: Op,
    rollback: Op,
    last_first: bool,
) -> Plan {
    let (op, done) = match t.status {
        GlobalStatus::Prepared => {
            let deadline = prepared_deadline(t, policy);
            return if now_ms >= deadline {
                transition(t, Event::TimedOut, Some(timeout_reason(t)))
            } else {
                Plan::WaitUntil(deadline)
            };
        }
        GlobalStatus::Submitted => (commit, Event::Completed),
        GlobalStatus::Aborting => (rollback, Event::RolledBack),
        _ => return Plan::Idle,
    };
    let mut pending: Vec<usize> = (0..t.branches.len())
        .filter(|&i| t.branches[i].op == op && t.branches[i].status == BranchStatus::Prepared)
        .collect();
    pending.sort_by_key(|&i| t.branches[i].seq);
    let first = if last_first {
        pending.last()
    } else {
        pending.first()
    };
    match first {
        Some(&i) => Plan::Call(vec![i]),
        None => transition(t, done, None),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
