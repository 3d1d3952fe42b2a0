//! Unit tests of `src/domain/plan.rs`.

use super::*;
use crate::domain::{build_new, BranchInput, NewTransInput, RetryPolicy, TransOptions};

pub(super) const POLICY: Policy = Policy {
    retry: RetryPolicy {
        base_ms: 1000,
        max_ms: 60_000,
        jitter: 0.0,
    },
    timeout_to_fail_s: 35,
};

pub(super) fn saga(steps: usize, custom: &str) -> Trans {
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
    // dtm's workflow custom_data: the name, and the input in base64
    t.custom_data = r#"{"name":"wf-transfer","data":"eyJhbW91bnQiOjMwfQ=="}"#.into();
    assert_eq!(
        plan(&t, 40_000, &POLICY),
        Plan::Resume(Resume {
            op: "wf-transfer".into(),
            body: br#"{"amount":30}"#.to_vec(),
        })
    );
    // the same input as a JSON array of byte values (one published client)
    t.custom_data = r#"{"name":"wf-transfer","data":[123,34,97,34,58,49,125]}"#.into();
    assert_eq!(
        plan(&t, 40_000, &POLICY),
        Plan::Resume(Resume {
            op: "wf-transfer".into(),
            body: br#"{"a":1}"#.to_vec(),
        })
    );
    // data that is neither keeps the name
    t.custom_data = r#"{"name":"wf-transfer","data":[300]}"#.into();
    assert_eq!(
        plan(&t, 40_000, &POLICY),
        Plan::Resume(Resume {
            op: "wf-transfer".into(),
            body: Vec::new(),
        })
    );
    // unreadable custom_data: a GET with no name, as dtm sends it
    t.custom_data = "not json".into();
    assert_eq!(plan(&t, 40_000, &POLICY), Plan::Resume(Resume::default()));
    t.status = GlobalStatus::Succeed;
    assert_eq!(plan(&t, 40_000, &POLICY), Plan::Idle);
}

#[test]
fn a_check_back_answer_decides_a_msg_or_asks_again() {
    let cases = [
        (
            Outcome::Succeeded,
            AfterCheckBack::Move(Event::CheckBackConfirmed),
        ),
        (
            Outcome::Failed("no".into()),
            AfterCheckBack::Move(Event::CheckBackRefused),
        ),
        (Outcome::Ongoing, AfterCheckBack::Retry { backoff: false }),
        (
            Outcome::Unknown("reset".into()),
            AfterCheckBack::Retry { backoff: true },
        ),
    ];
    for (outcome, want) in cases {
        assert_eq!(after_check_back(&outcome), want, "{outcome:?}");
    }
    // and the events it gives are the table's for a prepared msg
    for event in [Event::CheckBackConfirmed, Event::CheckBackRefused] {
        assert!(next(TransKind::Msg, GlobalStatus::Prepared, event).is_ok());
    }
}

#[test]
fn prepared_saga_and_finished_transactions_are_idle() {
    let mut t = saga(1, "");
    t.status = GlobalStatus::Prepared;
    assert_eq!(plan(&t, 2_000, &POLICY), Plan::Idle);
    t.status = GlobalStatus::Succeed;
    assert_eq!(plan(&t, 2_000, &POLICY), Plan::Idle);
}
