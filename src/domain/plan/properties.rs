//! Property tests of `src/domain/plan.rs`.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

use super::tests::POLICY;

/// A concurrent saga of `deps.len()` steps; step i depends on the
/// steps in `deps[i]` (all lower, so there is no cycle).
fn saga(deps: &[Vec<usize>]) -> Trans {
    let orders: serde_json::Map<String, serde_json::Value> = deps
        .iter()
        .enumerate()
        .map(|(i, d)| (i.to_string(), serde_json::json!(d)))
        .collect();
    let custom = serde_json::json!({"concurrent": true, "orders": orders}).to_string();
    super::tests::saga(deps.len(), &custom)
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
