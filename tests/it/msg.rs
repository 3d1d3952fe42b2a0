//! 2-phase message scenarios (contract §3.6).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{gid, Branches, RedisServer, Reply, TestApp};

fn msg_body(g: &str, b: &Branches) -> Value {
    json!({
        "gid": g,
        "trans_type": "msg",
        "steps": [{"action": b.url("m1")}, {"action": b.url("m2")}],
        "payloads": ["{\"amount\":30}", "{\"amount\":30}"],
        "query_prepared": b.url("qp"),
    })
}

#[tokio::test]
async fn msg_prepare_then_submit_runs_actions_in_order() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("msg-ok");
    assert_eq!(app.post("prepare", &msg_body(&g, &b)).await.0, 200);
    // a second prepare is idempotent
    assert_eq!(app.post("prepare", &msg_body(&g, &b)).await.0, 200);
    assert_eq!(app.status(&g).await, "prepared");
    // submit keeps the branches stored at prepare, whatever it carries
    let mut submit = msg_body(&g, &b);
    submit["steps"] = json!([{"action": b.url("other")}]);
    submit["payloads"] = json!(["{}"]);
    assert_eq!(app.post("submit", &submit).await.0, 200);
    app.wait_status(&g, "succeed", 5).await;
    assert_eq!(b.paths_for(&g), ["m1", "m2"]);
    assert_eq!(app.branch_statuses(&g).await, ["succeed", "succeed"]);
    // prepare after submit is refused
    let (status, reply) = app.post("prepare", &msg_body(&g, &b)).await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        "current status 'succeed', cannot prepare. FAILURE"
    );
}

#[tokio::test]
async fn msg_submit_without_prepare_and_concurrent() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("m1", &[Reply::Slow(300)]);
    b.script("m2", &[Reply::Slow(300)]);
    let g = gid("msg-con");
    let mut body = msg_body(&g, &b);
    body["concurrent"] = json!(true);
    body["wait_result"] = json!(true);
    assert_eq!(app.post("submit", &body).await.0, 200);
    assert_eq!(app.status(&g).await, "succeed");
    // the second call arrived before the first (300 ms) answered
    let calls: Vec<_> = b
        .calls()
        .into_iter()
        .filter(|c| c.query["gid"] == g)
        .collect();
    assert!(
        calls[1].at - calls[0].at < Duration::from_millis(250),
        "calls did not overlap"
    );
}

#[tokio::test]
async fn msg_abort_fails_a_prepared_msg_and_nothing_runs() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("msg-abort");
    app.post("prepare", &msg_body(&g, &b)).await;
    let (status, _) = app
        .post("abort", &json!({"gid": g, "trans_type": "msg"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.status(&g).await, "failed");
    let (status, reply) = app
        .post("abort", &json!({"gid": g, "trans_type": "msg"}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(reply["dtm_result"], "FAILURE");
    let (status, reply) = app.post("submit", &msg_body(&g, &b)).await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        "current status 'failed', cannot sumbmit. FAILURE"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.paths_for(&g).is_empty());
}

#[tokio::test]
async fn prepared_msg_is_checked_back_after_its_timeout() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("qp", &[Reply::Ongoing, Reply::Success]);
    let g = gid("msg-checkback");
    let mut body = msg_body(&g, &b);
    body["timeout_to_fail"] = json!(1);
    let created = Instant::now();
    app.post("prepare", &body).await;
    app.wait_status(&g, "succeed", 8).await;
    assert_eq!(b.paths_for(&g), ["qp", "qp", "m1", "m2"]);
    let calls = b.calls();
    let check = calls.iter().find(|c| c.path == "qp").unwrap();
    assert!(
        check.at - created >= Duration::from_millis(950),
        "checked back too early"
    );
    assert_eq!(check.method, "GET");
    assert_eq!(check.query["branch_id"], "00");
    assert_eq!(check.query["op"], "msg");
    assert_eq!(check.query["trans_type"], "msg");
}

#[tokio::test]
async fn check_back_failure_fails_the_msg_without_running_actions() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("qp", &[Reply::Error, Reply::Failure]);
    let g = gid("msg-checkback-fail");
    let mut body = msg_body(&g, &b);
    body["timeout_to_fail"] = json!(1);
    app.post("prepare", &body).await;
    app.wait_status(&g, "failed", 8).await;
    assert_eq!(b.paths_for(&g), ["qp", "qp"]);
    assert_eq!(app.branch_statuses(&g).await, ["prepared", "prepared"]);
}

#[tokio::test]
async fn msg_delay_holds_actions_back() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("msg-delay");
    let mut body = msg_body(&g, &b);
    body["custom_data"] = json!("{\"delay\":1}");
    let submitted = Instant::now();
    app.post("submit", &body).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.paths_for(&g).is_empty(), "ran before its delay");
    assert_eq!(app.branch_statuses(&g).await, ["prepared", "prepared"]);
    app.wait_status(&g, "succeed", 5).await;
    let first = b.calls().into_iter().find(|c| c.query["gid"] == g).unwrap();
    assert!(first.at - submitted >= Duration::from_millis(950));
    // picked up within about the delay, not a multi-second poll
    assert!(
        first.at - submitted < Duration::from_millis(1600),
        "{:?}",
        first.at - submitted
    );
}

#[tokio::test]
async fn msg_action_failure_is_retried_until_success() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("m1", &[Reply::Failure, Reply::Failure]);
    let g = gid("msg-retry");
    let mut body = msg_body(&g, &b);
    body["wait_result"] = json!(true);
    // with wait_result the FAILURE is reported, but the msg goes on
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 409, "{reply}");
    app.wait_status(&g, "succeed", 5).await;
    assert_eq!(b.paths_for(&g), ["m1", "m1", "m1", "m2"]);
}

#[tokio::test]
async fn a_slow_check_back_keeps_its_lease_and_runs_once() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    // slower than the 2 s lease of the test settings
    b.script("qp", &[Reply::Slow(2600)]);
    let g = gid("msg-slow-check");
    let mut body = msg_body(&g, &b);
    body["timeout_to_fail"] = json!(1);
    app.post("prepare", &body).await;
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(b.paths_for(&g), ["qp", "m1", "m2"]);
}

#[tokio::test]
async fn a_workflow_submit_cannot_finish_a_msg() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("msg-not-wf");
    app.post("prepare", &msg_body(&g, &b)).await;
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "workflow", "req_extra": {"status": "succeed"}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(app.status(&g).await, "prepared");
}
