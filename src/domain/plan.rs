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
    /// Call the msg check-back URL, or the workflow resume callback.
    CheckBack,
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
        Plan::CheckBack
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
mod tests {
    use super::*;
    use crate::domain::{build_new, BranchInput, NewTransInput, RetryPolicy, TransOptions};

    const POLICY: Policy = Policy {
        retry: RetryPolicy {
            base_ms: 1000,
            max_ms: 60_000,
            jitter: 0.0,
        },
        timeout_to_fail_s: 35,
    };

    fn saga(steps: usize, custom: &str) -> Trans {
        build_new(
            NewTransInput {
                gid: "g".into(),
                kind: TransKind::Saga,
                steps: (0..steps)
                    .map(|i| BranchInput {
                        action: format!("http://s/a{i}"),
                        compensate: format!("http://s/c{i}"),
                    })
                    .collect(),
                payloads: vec!["{}".into(); steps],
                custom_data: custom.into(),
                query_prepared: String::new(),
                protocol: String::new(),
                opts: TransOptions::default(),
                topics: Default::default(),
            },
            GlobalStatus::Submitted,
            1_000,
            &crate::domain::build::TEST_LIMITS,
        )
        .unwrap()
    }

    fn urls(t: &Trans, p: &Plan) -> Vec<String> {
        match p {
            Plan::Call(idx) => idx.iter().map(|&i| t.branches[i].url.clone()).collect(),
            other => panic!("expected calls, got {other:?}"),
        }
    }

    /// Settle `outcome` on the row with `url` and apply any transition the
    /// planner asks for, as the driver does.
    fn step(t: &mut Trans, url: &str, outcome: Outcome) {
        let i = t.branches.iter().position(|b| b.url == url).unwrap();
        settle(t, i, &outcome);
        while let Plan::Transition { to, reason, .. } = plan(t, 2_000, &POLICY) {
            t.status = to;
            if let Some(r) = reason {
                t.reason = r;
            }
            if to.is_final() {
                break;
            }
        }
    }

    #[test]
    fn sequential_saga_runs_actions_in_order_then_succeeds() {
        let mut t = saga(2, "");
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/a0"]);
        step(&mut t, "http://s/a0", Outcome::Succeeded);
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/a1"]);
        step(&mut t, "http://s/a1", Outcome::Succeeded);
        assert_eq!(t.status, GlobalStatus::Succeed);
    }

    #[test]
    fn failed_action_compensates_itself_and_earlier_steps_in_reverse() {
        let mut t = saga(3, "");
        step(&mut t, "http://s/a0", Outcome::Succeeded);
        step(&mut t, "http://s/a1", Outcome::Failed("no money".into()));
        assert_eq!(t.status, GlobalStatus::Aborting);
        assert_eq!(t.reason, "no money");
        // step 3 never started: only steps 2 then 1 are compensated
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/c1"]);
        step(&mut t, "http://s/c1", Outcome::Succeeded);
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/c0"]);
        step(&mut t, "http://s/c0", Outcome::Succeeded);
        assert_eq!(t.status, GlobalStatus::Failed);
        let statuses: Vec<&str> = t.branches.iter().map(|b| b.status.as_str()).collect();
        assert_eq!(
            statuses,
            ["succeed", "succeed", "succeed", "failed", "prepared", "prepared"]
        );
    }

    #[test]
    fn unknown_outcome_is_never_a_failure_and_gets_compensated_on_timeout() {
        let mut t = saga(2, "");
        t.opts.timeout_to_fail = 5;
        step(&mut t, "http://s/a0", Outcome::Succeeded);
        let i = t
            .branches
            .iter()
            .position(|b| b.url == "http://s/a1")
            .unwrap();
        assert_eq!(
            settle(&mut t, i, &Outcome::Unknown("timeout".into())),
            Settled::Later { backoff: true }
        );
        assert_eq!(t.status, GlobalStatus::Submitted);
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/a1"]);
        // after the timeout, the action whose outcome is unknown is compensated first
        match plan(&t, 6_000, &POLICY) {
            Plan::Transition { to, reason, .. } => {
                assert_eq!(to, GlobalStatus::Aborting);
                assert_eq!(reason.as_deref(), Some("Timeout after 5 seconds"));
                t.status = to;
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(urls(&t, &plan(&t, 6_000, &POLICY)), ["http://s/c1"]);
    }

    #[test]
    fn a_saga_whose_actions_all_succeeded_is_not_timed_out() {
        let mut t = saga(1, "");
        t.opts.timeout_to_fail = 1;
        let i = t
            .branches
            .iter()
            .position(|b| b.url == "http://s/a0")
            .unwrap();
        settle(&mut t, i, &Outcome::Succeeded);
        match plan(&t, 60_000, &POLICY) {
            Plan::Transition { to, .. } => assert_eq!(to, GlobalStatus::Succeed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn concurrent_saga_honours_orders_both_ways() {
        let mut t = saga(3, r#"{"concurrent":true,"orders":{"2":[0,1]}}"#);
        assert_eq!(
            urls(&t, &plan(&t, 2_000, &POLICY)),
            ["http://s/a0", "http://s/a1"]
        );
        step(&mut t, "http://s/a0", Outcome::Succeeded);
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/a1"]);
        step(&mut t, "http://s/a1", Outcome::Succeeded);
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/a2"]);
        step(&mut t, "http://s/a2", Outcome::Failed("x".into()));
        // step 2 depends on 0 and 1: it is rolled back before them
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/c2"]);
        step(&mut t, "http://s/c2", Outcome::Succeeded);
        assert_eq!(
            urls(&t, &plan(&t, 2_000, &POLICY)),
            ["http://s/c1", "http://s/c0"]
        );
    }

    #[test]
    fn concurrent_order_failure_before_dependent_starts() {
        // TestSagaConRollbackOrder: the second step waits on the first,
        // which fails: the second never runs and is not compensated
        let mut t = saga(2, r#"{"concurrent":true,"orders":{"1":[0]}}"#);
        step(&mut t, "http://s/a0", Outcome::Failed("x".into()));
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/c0"]);
        step(&mut t, "http://s/c0", Outcome::Succeeded);
        assert_eq!(t.status, GlobalStatus::Failed);
        let statuses: Vec<&str> = t.branches.iter().map(|b| b.status.as_str()).collect();
        assert_eq!(statuses, ["succeed", "failed", "prepared", "prepared"]);
    }

    #[test]
    fn compensation_failure_is_retried_not_final() {
        let mut t = saga(1, "");
        step(&mut t, "http://s/a0", Outcome::Failed("x".into()));
        let i = t
            .branches
            .iter()
            .position(|b| b.url == "http://s/c0")
            .unwrap();
        assert_eq!(
            settle(&mut t, i, &Outcome::Failed("nope".into())),
            Settled::Later { backoff: true }
        );
        assert_eq!(t.status, GlobalStatus::Aborting);
        assert_eq!(urls(&t, &plan(&t, 2_000, &POLICY)), ["http://s/c0"]);
    }

    #[test]
    fn ongoing_waits_without_backoff() {
        let mut t = saga(1, "");
        assert_eq!(
            settle(&mut t, 1, &Outcome::Ongoing),
            Settled::Later { backoff: false }
        );
        assert_eq!(t.branches[1].status, BranchStatus::Prepared);
    }

    fn msg(steps: usize, status: GlobalStatus) -> Trans {
        build_new(
            NewTransInput {
                gid: "m".into(),
                kind: TransKind::Msg,
                steps: (0..steps)
                    .map(|i| BranchInput {
                        action: format!("http://s/a{i}"),
                        compensate: String::new(),
                    })
                    .collect(),
                payloads: vec!["{}".into(); steps],
                custom_data: String::new(),
                query_prepared: "http://s/qp".into(),
                protocol: String::new(),
                opts: TransOptions::default(),
                topics: Default::default(),
            },
            status,
            1_000,
            &crate::domain::build::TEST_LIMITS,
        )
        .unwrap()
    }

    #[test]
    fn saga_actions_spend_their_retry_limit_then_give_up() {
        let mut t = saga(2, "");
        let action = t.branches.iter().position(|b| b.op == Op::Action).unwrap();
        let compensate = t
            .branches
            .iter()
            .position(|b| b.op == Op::Compensate)
            .unwrap();
        assert_eq!(unfinished(&t, action, 0), Unfinished::Later, "no limit set");
        t.opts.retry_limit = 2;
        assert_eq!(unfinished(&t, action, 0), Unfinished::RetryNow);
        assert_eq!(unfinished(&t, action, 1), Unfinished::RetryNow);
        assert!(
            matches!(unfinished(&t, action, 2), Unfinished::GiveUp(r) if r.contains("RetryLimit: 2"))
        );
        // compensations are never given up on
        assert_eq!(unfinished(&t, compensate, 5), Unfinished::Later);
    }

    #[test]
    fn a_saga_timeout_comes_before_a_longer_backoff() {
        let mut t = saga(1, "");
        assert_eq!(retry_at(&t, 2_000, 5_000), 7_000);
        // created at 1 000 with a 3 s timeout: looked at again at 4 000
        t.opts.timeout_to_fail = 3;
        assert_eq!(retry_at(&t, 2_000, 5_000), 4_000);
        assert_eq!(retry_at(&t, 2_000, 1_000), 3_000, "the backoff is sooner");
        // past the deadline: at once, never in the past
        assert_eq!(retry_at(&t, 9_000, 5_000), 9_000);
        // aborting: the timeout no longer matters
        t.status = GlobalStatus::Aborting;
        assert_eq!(retry_at(&t, 2_000, 5_000), 7_000);
    }

    #[test]
    fn prepared_msg_is_checked_back_after_its_timeout() {
        let mut t = msg(1, GlobalStatus::Prepared);
        assert_eq!(plan(&t, 2_000, &POLICY), Plan::WaitUntil(36_000));
        assert_eq!(plan(&t, 36_000, &POLICY), Plan::CheckBack);
        t.opts.timeout_to_fail = 2;
        assert_eq!(plan(&t, 3_000, &POLICY), Plan::CheckBack);
    }

    #[test]
    fn submitted_msg_waits_for_delay_then_runs_in_order() {
        let mut t = msg(2, GlobalStatus::Submitted);
        t.custom_data = r#"{"delay":10}"#.into();
        assert_eq!(plan(&t, 2_000, &POLICY), Plan::WaitUntil(11_000));
        assert_eq!(urls(&t, &plan(&t, 11_000, &POLICY)), ["http://s/a0"]);
        t.opts.concurrent = true;
        assert_eq!(
            urls(&t, &plan(&t, 11_000, &POLICY)),
            ["http://s/a0", "http://s/a1"]
        );
        // FAILURE from a msg action is retried, not final
        assert_eq!(
            settle(&mut t, 0, &Outcome::Failed("x".into())),
            Settled::Later { backoff: true }
        );
        t.custom_data.clear(); // step() plans at 2 s, before the delay ends
        step(&mut t, "http://s/a0", Outcome::Succeeded);
        step(&mut t, "http://s/a1", Outcome::Succeeded);
        assert_eq!(t.status, GlobalStatus::Succeed);
    }

    #[test]
    fn prepared_workflow_is_called_back_after_its_timeout() {
        let mut t = msg(0, GlobalStatus::Prepared);
        t.kind = TransKind::Workflow;
        assert_eq!(plan(&t, 2_000, &POLICY), Plan::WaitUntil(36_000));
        assert_eq!(plan(&t, 40_000, &POLICY), Plan::CheckBack);
        t.status = GlobalStatus::Succeed;
        assert_eq!(plan(&t, 40_000, &POLICY), Plan::Idle);
    }

    #[test]
    fn prepared_saga_and_finished_transactions_are_idle() {
        let mut t = saga(1, "");
        t.status = GlobalStatus::Prepared;
        assert_eq!(plan(&t, 2_000, &POLICY), Plan::Idle);
        t.status = GlobalStatus::Succeed;
        assert_eq!(plan(&t, 2_000, &POLICY), Plan::Idle);
    }
}

#[cfg(test)]
mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::{build_new, BranchInput, NewTransInput, RetryPolicy, TransOptions};

    const POLICY: Policy = Policy {
        retry: RetryPolicy {
            base_ms: 1000,
            max_ms: 60_000,
            jitter: 0.0,
        },
        timeout_to_fail_s: 35,
    };

    /// A concurrent saga of `deps.len()` steps; step i depends on the
    /// steps in `deps[i]` (all lower, so there is no cycle).
    fn saga(deps: &[Vec<usize>]) -> Trans {
        let orders: serde_json::Map<String, serde_json::Value> = deps
            .iter()
            .enumerate()
            .map(|(i, d)| (i.to_string(), serde_json::json!(d)))
            .collect();
        build_new(
            NewTransInput {
                gid: "p".into(),
                kind: TransKind::Saga,
                steps: (0..deps.len())
                    .map(|i| BranchInput {
                        action: format!("http://s/a{i}"),
                        compensate: format!("http://s/c{i}"),
                    })
                    .collect(),
                payloads: vec!["{}".into(); deps.len()],
                custom_data: serde_json::json!({"concurrent": true, "orders": orders}).to_string(),
                query_prepared: String::new(),
                protocol: String::new(),
                opts: TransOptions::default(),
                topics: Default::default(),
            },
            GlobalStatus::Submitted,
            1_000,
            &crate::domain::build::TEST_LIMITS,
        )
        .unwrap()
    }

    fn arb_saga() -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1usize..10).prop_flat_map(|n| {
            (0..n)
                .map(|i| proptest::collection::vec(0..i.max(1), 0..=i.min(3)))
                .collect::<Vec<_>>()
                .prop_map(|deps| {
                    deps.into_iter()
                        .enumerate()
                        // step 0 has no lower step to depend on
                        .map(|(i, d)| if i == 0 { Vec::new() } else { d })
                        .collect()
                })
        })
    }

    /// 0: success, 1: FAILURE, 2: no usable answer.
    fn outcome(code: u8) -> Outcome {
        match code % 3 {
            0 => Outcome::Succeeded,
            1 => Outcome::Failed("no".into()),
            _ => Outcome::Unknown("later".into()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Driving a random concurrent saga with random answers: every
        /// action starts after the actions it depends on succeeded, every
        /// compensation after those of the steps that depend on it, no row
        /// twice in one round, and it ends.
        #[test]
        fn random_sagas_follow_their_orders(
            deps in arb_saga(),
            answers in proptest::collection::vec(any::<u8>(), 64),
        ) {
            let mut t = saga(&deps);
            let n = deps.len();
            let row = |t: &Trans, op: Op, i: usize| {
                t.branches.iter().position(|b| b.op == op && b.seq as usize / 2 == i).unwrap()
            };
            let mut calls = 0usize;
            let mut attempts: HashMap<usize, usize> = HashMap::new();
            let mut rounds = 0;
            while !t.status.is_final() {
                rounds += 1;
                prop_assert!(rounds < 500, "no end after 500 rounds");
                match plan(&t, 2_000, &POLICY) {
                    Plan::Call(rows) => {
                        let mut seen = rows.clone();
                        seen.sort_unstable();
                        seen.dedup();
                        prop_assert_eq!(seen.len(), rows.len(), "a row twice in one round");
                        for &r in &rows {
                            let b = &t.branches[r];
                            let step = b.seq as usize / 2;
                            prop_assert_eq!(b.status, BranchStatus::Prepared);
                            if b.op == Op::Action {
                                prop_assert_eq!(t.status, GlobalStatus::Submitted);
                                for &d in &deps[step] {
                                    let a = row(&t, Op::Action, d);
                                    prop_assert_eq!(t.branches[a].status, BranchStatus::Succeed);
                                }
                            } else {
                                prop_assert_eq!(t.status, GlobalStatus::Aborting);
                                // the steps depending on this one are rolled back
                                for j in (0..n).filter(|&j| deps[j].contains(&step)) {
                                    let a = t.branches[row(&t, Op::Action, j)].status;
                                    let c = t.branches[row(&t, Op::Compensate, j)].status;
                                    prop_assert!(
                                        a == BranchStatus::Prepared || c == BranchStatus::Succeed,
                                        "compensation {} before that of {}", step, j
                                    );
                                }
                            }
                        }
                        for &r in &rows {
                            let tries = attempts.entry(r).or_default();
                            *tries += 1;
                            // a branch answers at last; compensations never fail
                            let mut o = outcome(answers[calls % answers.len()]);
                            if *tries > 3 || (t.branches[r].op == Op::Compensate && matches!(o, Outcome::Failed(_))) {
                                o = Outcome::Succeeded;
                            }
                            calls += 1;
                            settle(&mut t, r, &o);
                        }
                    }
                    Plan::Transition { to, reason, .. } => {
                        t.status = to;
                        if let Some(r) = reason {
                            t.reason = r;
                        }
                    }
                    other => prop_assert!(false, "unexpected plan {:?}", other),
                }
            }
        }
    }
}
