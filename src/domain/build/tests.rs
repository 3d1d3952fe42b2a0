//! Unit tests of `src/domain/build.rs`.

use super::*;

const LIMITS: Limits = TEST_LIMITS;

fn input(kind: TransKind, steps: usize, payloads: usize) -> NewTransInput {
    NewTransInput {
        gid: "g1".into(),
        kind,
        steps: (0..steps)
            .map(|i| BranchInput {
                action: format!("http://svc/a{i}"),
                compensate: format!("http://svc/c{i}"),
            })
            .collect(),
        payloads: (0..payloads)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect(),
        custom_data: String::new(),
        query_prepared: String::new(),
        protocol: String::new(),
        opts: TransOptions::default(),
        topics: BTreeMap::new(),
    }
}

#[test]
fn saga_rows_follow_dtm_storage_order() {
    let t = build_new(
        input(TransKind::Saga, 2, 2),
        GlobalStatus::Submitted,
        5,
        &LIMITS,
    )
    .unwrap();
    let got: Vec<(String, Op, u32)> = t
        .branches
        .iter()
        .map(|b| (b.field(), b.op, b.seq))
        .collect();
    assert_eq!(
        got,
        [
            ("01:compensate".to_string(), Op::Compensate, 0),
            ("01:action".to_string(), Op::Action, 1),
            ("02:compensate".to_string(), Op::Compensate, 2),
            ("02:action".to_string(), Op::Action, 3),
        ]
    );
    assert_eq!(t.branches[1].data, b"{\"n\":0}");
    assert_eq!(t.branches[1].url, "http://svc/a0");
}

#[test]
fn payload_count_must_match_steps() {
    let err = build_new(
        input(TransKind::Saga, 2, 1),
        GlobalStatus::Submitted,
        5,
        &LIMITS,
    )
    .unwrap_err();
    assert!(err.0.contains("1 payloads for 2 steps"), "{err}");
}

#[test]
fn numbers_are_bounded() {
    let mut i = input(TransKind::Saga, 1, 1);
    i.opts.timeout_to_fail = i64::MAX;
    assert!(build_new(i, GlobalStatus::Submitted, 5, &LIMITS).is_err());
    let mut i = input(TransKind::Saga, 1, 1);
    i.opts.retry_interval = MAX_SECONDS + 1;
    assert!(build_new(i, GlobalStatus::Submitted, 5, &LIMITS).is_err());
    let mut i = input(TransKind::Saga, 1, 1);
    i.opts.retry_limit = MAX_RETRY_LIMIT + 1;
    assert!(build_new(i, GlobalStatus::Submitted, 5, &LIMITS).is_err());
    let i = input(TransKind::Saga, MAX_STEPS + 1, MAX_STEPS + 1);
    assert!(build_new(i, GlobalStatus::Submitted, 5, &LIMITS).is_err());
    let mut i = input(TransKind::Msg, 1, 1);
    i.custom_data = format!("{{\"delay\":{}}}", i64::MAX);
    assert!(build_new(i.clone(), GlobalStatus::Submitted, 5, &LIMITS).is_err());
    i.custom_data = "{\"delay\":-1}".into();
    assert!(build_new(i.clone(), GlobalStatus::Submitted, 5, &LIMITS).is_err());
    i.custom_data = "{\"delay\":10}".into();
    assert!(build_new(i, GlobalStatus::Submitted, 5, &LIMITS).is_ok());
}

#[test]
fn gid_rules() {
    assert!(validate_gid("", 10).is_err());
    assert!(validate_gid("abc", 2).is_err());
    assert!(validate_gid("a;b", 10).is_err());
    assert!(validate_gid("a\nb", 10).is_err());
    assert!(validate_gid("a-b_c.d", 10).is_ok());
}

#[test]
fn url_rules() {
    for ok in [
        "",
        "http://localhost:8081/api/busi/TransOut",
        "https://x.example/a?b=c",
        "localhost:58081/busi.Busi/TransOut",
        // go-zero's discovery targets are branch URLs now
        "etcd://h:2379/svc/pkg.Svc/M",
        "grpc://localhost:58081/busi.Busi/TransOut",
        "grpcs://busi.example:443/busi.Busi/TransOut",
    ] {
        assert!(validate_url(ok).is_ok(), "{ok}");
    }
    for bad in [
        "ftp://x/y",
        "http://",
        "not a url",
        "localhost:8081",
        "etcd://h:2379/svc",
        "grpcs://h:443",
        "grpc://h:1/TransOut",
        "http://x/\ty",
    ] {
        assert!(validate_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn saga_orders_are_checked() {
    let mut i = input(TransKind::Saga, 2, 2);
    i.custom_data = r#"{"concurrent":true,"orders":{"1":[0]}}"#.into();
    let t = build_new(i.clone(), GlobalStatus::Submitted, 5, &LIMITS).unwrap();
    assert_eq!(t.saga_custom().orders.get(&1), Some(&vec![0]));
    // a dependency named many times is one
    i.custom_data = r#"{"concurrent":true,"orders":{"1":[0,0,0,0]}}"#.into();
    let t = build_new(i.clone(), GlobalStatus::Submitted, 5, &LIMITS).unwrap();
    assert_eq!(t.saga_custom().orders.get(&1), Some(&vec![0]));
    i.custom_data = r#"{"concurrent":true,"orders":{"1":[5]}}"#.into();
    assert!(build_new(i.clone(), GlobalStatus::Submitted, 5, &LIMITS).is_err());
    i.custom_data = r#"{"concurrent":true,"orders":{"1":[0],"0":[1]}}"#.into();
    assert!(build_new(i.clone(), GlobalStatus::Submitted, 5, &LIMITS)
        .unwrap_err()
        .0
        .contains("cycle"));
    i.custom_data = "{".into();
    assert!(build_new(i, GlobalStatus::Submitted, 5, &LIMITS).is_err());
}

#[test]
fn registered_rows_per_kind() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let tcc = build_registered(
        TransKind::Tcc,
        &map(&[
            ("branch_id", "01"),
            ("confirm", "http://s/c"),
            ("cancel", "http://s/x"),
            ("data", "{}"),
        ]),
        7,
    )
    .unwrap();
    let got: Vec<(String, &str, &str)> = tcc
        .iter()
        .map(|b| {
            let data = std::str::from_utf8(&b.data).unwrap();
            (b.field(), b.url.as_str(), data)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("01:cancel".to_string(), "http://s/x", "{}"),
            ("01:confirm".to_string(), "http://s/c", "{}")
        ]
    );
    let xa = build_registered(
        TransKind::Xa,
        &map(&[("branch_id", "02"), ("url", "http://s/xa")]),
        7,
    )
    .unwrap();
    assert_eq!(xa[0].field(), "02:rollback");
    assert_eq!(xa[1].url, "http://s/xa");
    let wf = build_registered(
        TransKind::Workflow,
        &map(&[
            ("branch_id", "01"),
            ("op", "action"),
            ("status", "failed"),
            ("data", "boom"),
        ]),
        7,
    )
    .unwrap();
    assert_eq!(wf[0].status, BranchStatus::Failed);
    for bad in [
        map(&[("branch_id", "")]),
        map(&[("branch_id", "a:b"), ("confirm", ""), ("cancel", "")]),
        map(&[("branch_id", "01"), ("confirm", "ftp://x"), ("cancel", "")]),
    ] {
        assert!(
            build_registered(TransKind::Tcc, &bad, 7).is_err(),
            "{bad:?}"
        );
    }
    assert!(build_registered(TransKind::Saga, &map(&[("branch_id", "01")]), 7).is_err());
    assert!(build_registered(
        TransKind::Workflow,
        &map(&[("branch_id", "01"), ("op", "try"), ("status", "succeed")]),
        7
    )
    .is_err());
}

#[test]
fn msg_rows_and_topics() {
    let t = build_new(
        input(TransKind::Msg, 2, 2),
        GlobalStatus::Prepared,
        5,
        &LIMITS,
    )
    .unwrap();
    let fields: Vec<String> = t.branches.iter().map(Branch::field).collect();
    assert_eq!(fields, ["01:action", "02:action"]);
    let mut i = input(TransKind::Msg, 2, 2);
    i.steps[0].action = "topic://orders".into();
    assert!(build_new(i.clone(), GlobalStatus::Prepared, 5, &LIMITS)
        .unwrap_err()
        .0
        .contains("topic not found"));
    i.topics.insert(
        "orders".into(),
        vec!["http://s/x".into(), "http://s/y".into()],
    );
    let t = build_new(i.clone(), GlobalStatus::Prepared, 5, &LIMITS).unwrap();
    let got: Vec<(String, &str, u32)> = t
        .branches
        .iter()
        .map(|b| (b.field(), b.url.as_str(), b.seq))
        .collect();
    assert_eq!(
        got,
        [
            ("01-01:action".to_string(), "http://s/x", 0),
            ("01-02:action".to_string(), "http://s/y", 1),
            ("02:action".to_string(), "http://svc/a1", 2),
        ]
    );
    i.topics.insert("orders".into(), vec!["http://s/x".into()]);
    let t = build_new(i, GlobalStatus::Prepared, 5, &LIMITS).unwrap();
    assert_eq!(t.branches[0].field(), "01:action");
}
