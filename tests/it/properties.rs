//! Property tests against a real Redis and a real replica: random and
//! mutated input never panics and never writes when refused; random
//! sequences of API calls never break the transition table and never leave
//! an unfinished transaction unscheduled.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use dtx::domain::{next, Event, GlobalStatus, TransKind};

use crate::support::{prefix, test_settings, Branches, RedisServer, TestApp};

/// Waits until the replica drives nothing.
async fn settle(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.engine.active() > 0 {
        assert!(Instant::now() < deadline, "passes still run after 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,24}".prop_map(Value::String),
        Just(json!("http://127.0.0.1:1/x")),
        Just(json!("topic://t")),
        Just(json!("saga")),
        Just(json!("msg")),
        Just(json!("tcc")),
        Just(json!("workflow")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Fields a client sends, to mutate.
const FIELDS: &[&str] = &[
    "gid",
    "trans_type",
    "steps",
    "payloads",
    "custom_data",
    "query_prepared",
    "protocol",
    "branch_headers",
    "request_timeout",
    "timeout_to_fail",
    "retry_interval",
    "retry_limit",
    "wait_result",
    "concurrent",
    "branch_id",
    "op",
    "data",
    "confirm",
    "cancel",
    "url",
    "req_extra",
    "rollback_reason",
];

/// One request: a route and a body, from a valid template with up to
/// three fields replaced, dropped or added.
#[derive(Debug, Clone)]
struct Request {
    route: &'static str,
    body: Value,
    raw: Option<Vec<u8>>,
}

fn arb_request(branch: String) -> impl Strategy<Value = Request> {
    let routes = prop_oneof![
        Just("prepare"),
        Just("submit"),
        Just("abort"),
        Just("registerBranch"),
        Just("forceStop"),
        Just("prepareWorkflow"),
        Just("json-rpc"),
    ];
    let edits = proptest::collection::vec(
        (
            proptest::sample::select(FIELDS),
            proptest::option::of(arb_json()),
        ),
        0..3,
    );
    let raw = proptest::option::weighted(0.1, proptest::collection::vec(any::<u8>(), 0..64));
    (routes, edits, 0u32..4, raw).prop_map(move |(route, edits, g, raw)| {
        let mut body = json!({
            "gid": format!("prop-{g}"),
            "trans_type": "saga",
            "steps": [{"action": format!("{branch}/a"), "compensate": format!("{branch}/c")}],
            "payloads": ["{}"],
            "branch_id": "01",
            "confirm": format!("{branch}/cf"),
            "cancel": format!("{branch}/cn"),
            "data": "{}",
        });
        for (field, value) in edits {
            match value {
                Some(v) => body[field] = v,
                None => {
                    body.as_object_mut().unwrap().remove(field);
                }
            }
        }
        Request { route, body, raw }
    })
}

#[test]
fn random_and_mutated_input_never_panics_and_never_writes_when_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = RedisServer::start();
    let (app, b) = rt.block_on(async {
        let b = Branches::start().await;
        let mut settings = test_settings(&redis.url(), &prefix());
        settings.branch.allowed_hosts = b.base.trim_start_matches("http://").to_owned();
        (TestApp::spawn_with(settings).await, b)
    });
    let root = app.root();
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    let refused = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(&arb_request(b.base.clone()), |req| {
            rt.block_on(async {
                settle(&app).await;
                let before = redis.data_digest(&app.prefix);
                let send = if req.route == "json-rpc" {
                    let method = ["prepare", "submit", "abort", "registerBranch", "forceStop"]
                        [req.body.to_string().len() % 5];
                    app.http.post(format!("{root}/api/json-rpc")).json(
                        &json!({"jsonrpc": "2.0", "id": "1", "method": method, "params": req.body}),
                    )
                } else {
                    let r = app.http.post(format!("{}/{}", app.base, req.route));
                    match &req.raw {
                        Some(raw) => r.body(raw.clone()),
                        None => r.json(&req.body),
                    }
                };
                let r = send
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("no answer (a panic?): {e}")))?;
                let status = r.status().as_u16();
                let reply: Value = r.json().await.unwrap_or(Value::Null);
                prop_assert!(
                    status < 500,
                    "{} {:?}: {} {}",
                    req.route,
                    req,
                    status,
                    reply
                );
                let rpc_error = req.route == "json-rpc" && !reply["error"].is_null();
                if status != 200 || rpc_error {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    settle(&app).await;
                    prop_assert_eq!(
                        redis.data_digest(&app.prefix),
                        before,
                        "refused {:?} wrote: {}",
                        req,
                        reply
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    // most mutations are refused; the property must have looked at some
    let refused = refused.into_inner();
    eprintln!("mutated bodies: 300 cases, {refused} refused");
    assert!(refused > 50, "only {refused} refused cases");
    // query parameters of the GET routes
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    let routes = proptest::sample::select(
        &[
            "query",
            "all",
            "subscribe",
            "unsubscribe",
            "resetCronTime",
            "scanKV",
            "queryKV",
        ][..],
    );
    let pairs = proptest::collection::vec(
        (
            proptest::sample::select(
                &[
                    "gid", "limit", "position", "status", "topic", "url", "cat", "key", "k",
                    "remark",
                ][..],
            ),
            "\\PC{0,20}",
        ),
        0..4,
    );
    runner
        .run(&(routes, pairs), |(route, pairs)| {
            rt.block_on(async {
                settle(&app).await;
                let before = redis.data_digest(&app.prefix);
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
                    .finish();
                let r = app
                    .http
                    .get(format!("{}/{route}?{query}", app.base))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
                let status = r.status().as_u16();
                prop_assert!(status < 500, "{} {}: {}", route, query, status);
                if status != 200 {
                    prop_assert_eq!(
                        redis.data_digest(&app.prefix),
                        before,
                        "refused {} {} wrote",
                        route,
                        query
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    drop(app);
}

/// The statuses a `kind` transaction in `from` can reach by any events.
fn reachable(kind: TransKind, from: GlobalStatus) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::from([from.as_str()]);
    let mut todo = vec![from];
    while let Some(s) = todo.pop() {
        for e in Event::ALL {
            if let Ok(to) = next(kind, s, e) {
                if seen.insert(to.as_str()) {
                    todo.push(to);
                }
            }
        }
    }
    seen
}

/// One API call of the stateful test.
#[derive(Debug, Clone)]
enum Call {
    Prepare(usize, TransKind),
    Submit(usize, TransKind),
    Abort(usize, TransKind),
    Register(usize, TransKind),
    ForceStop(usize),
}

fn arb_calls() -> impl Strategy<Value = Vec<Call>> {
    let kind = proptest::sample::select(&TransKind::ALL[..]);
    let gid = 0usize..3;
    let call = prop_oneof![
        (gid.clone(), kind.clone()).prop_map(|(g, k)| Call::Prepare(g, k)),
        (gid.clone(), kind.clone()).prop_map(|(g, k)| Call::Submit(g, k)),
        (gid.clone(), kind.clone()).prop_map(|(g, k)| Call::Abort(g, k)),
        (gid.clone(), kind).prop_map(|(g, k)| Call::Register(g, k)),
        gid.prop_map(Call::ForceStop),
    ];
    proptest::collection::vec(call, 1..12)
}

#[test]
fn random_call_sequences_keep_the_table_and_the_schedule() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = RedisServer::start();
    let (app, b) = rt.block_on(async {
        let b = Branches::start().await;
        (TestApp::spawn(&redis).await, b)
    });
    let store = &app.engine.store;
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let round = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&arb_calls(), |calls| {
            let round = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let gids: Vec<String> = (0..3).map(|i| format!("seq{round}-{i}")).collect();
            rt.block_on(async {
                let mut seen: HashMap<usize, (TransKind, GlobalStatus)> = HashMap::new();
                for call in &calls {
                    let (route, body) = match call {
                        Call::Prepare(g, k) => ("prepare", json!({"gid": gids[*g], "trans_type": k.as_str(),
                            "query_prepared": b.url("qp"), "steps": [{"action": b.url("a")}], "payloads": ["{}"]})),
                        Call::Submit(g, TransKind::Workflow) => ("submit", json!({"gid": gids[*g],
                            "trans_type": "workflow", "req_extra": {"status": "succeed"}})),
                        Call::Submit(g, k) => ("submit", json!({"gid": gids[*g], "trans_type": k.as_str(),
                            "query_prepared": b.url("qp"),
                            "steps": [{"action": b.url("a"), "compensate": b.url("c")}], "payloads": ["{}"]})),
                        Call::Abort(g, k) => ("abort", json!({"gid": gids[*g], "trans_type": k.as_str()})),
                        Call::Register(g, k) => ("registerBranch", json!({"gid": gids[*g], "trans_type": k.as_str(),
                            "branch_id": "01", "op": "action", "status": "succeed", "url": b.url("x"),
                            "confirm": b.url("cf"), "cancel": b.url("cn"), "data": "{}"})),
                        Call::ForceStop(g) => ("forceStop", json!({"gid": gids[*g]})),
                    };
                    let (status, reply) = app.post(route, &body).await;
                    prop_assert!(status < 500, "{:?}: {} {}", call, status, reply);
                    // every gid moved only along the table
                    for (i, g) in gids.iter().enumerate() {
                        let Some(t) = store.load(g).await.unwrap() else { continue };
                        if let Some((kind, before)) = seen.get(&i) {
                            prop_assert_eq!(*kind, t.kind, "{} changed kind", g);
                            prop_assert!(
                                reachable(t.kind, *before).contains(t.status.as_str()),
                                "{} went from {} to {} ({:?})", g, before, t.status, calls
                            );
                        }
                        seen.insert(i, (t.kind, t.status));
                    }
                }
                settle(&app).await;
                // nothing unfinished is left without a due entry
                for g in &gids {
                    let Some(t) = store.load(g).await.unwrap() else { continue };
                    // a prepared saga waits for its submit, unscheduled, by design
                    let waits = t.kind == TransKind::Saga && t.status == GlobalStatus::Prepared;
                    if !t.status.is_final() && !waits {
                        let due: Option<f64> = redis::cmd("ZSCORE")
                            .arg(store.keys().due(store.keys().shard_of(g)))
                            .arg(g)
                            .query(&mut redis.conn())
                            .unwrap();
                        prop_assert!(due.is_some(), "{} is {} {} with no due entry ({:?})", g, t.kind, t.status, calls);
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    drop(app);
}
