//! TCC (contract §3.7) and XA (§3.8): the client prepares, registers
//! branches (calling try or the XA action itself), then submits or aborts.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{gid, Branches, RedisServer, Reply, TestApp};

async fn register_tcc(app: &TestApp, g: &str, id: &str, b: &Branches, n: &str) -> (u16, Value) {
    app.post(
        "registerBranch",
        &json!({
            "gid": g, "trans_type": "tcc", "branch_id": id, "status": "prepared",
            "data": format!("{{\"n\":\"{n}\"}}"),
            "confirm": b.url(&format!("confirm{n}")), "cancel": b.url(&format!("cancel{n}")),
        }),
    )
    .await
}

#[tokio::test]
async fn tcc_confirms_from_the_last_registered_branch_to_the_first() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("tcc-ok");
    assert_eq!(
        app.post("prepare", &json!({"gid": g, "trans_type": "tcc"}))
            .await
            .0,
        200
    );
    assert_eq!(register_tcc(&app, &g, "01", &b, "1").await.0, 200);
    // nested branch ids, and the old alias
    let (status, _) = app
        .post(
            "registerTccBranch",
            &json!({"gid": g, "trans_type": "tcc", "branch_id": "0101",
                    "data": "{\"n\":\"2\"}", "confirm": b.url("confirm2"), "cancel": b.url("cancel2")}),
        )
        .await;
    assert_eq!(status, 200);
    // the same branch twice is refused
    assert_eq!(register_tcc(&app, &g, "01", &b, "1").await.0, 409);
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "tcc", "wait_result": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.status(&g).await, "succeed");
    assert_eq!(b.paths_for(&g), ["confirm2", "confirm1"]);
    assert_eq!(
        app.branch_statuses(&g).await,
        ["prepared", "succeed", "prepared", "succeed"]
    );
    let confirm = b
        .calls()
        .into_iter()
        .find(|c| c.path == "confirm1")
        .unwrap();
    assert_eq!(confirm.method, "POST");
    assert_eq!(confirm.body, "{\"n\":\"1\"}");
    assert_eq!(confirm.query["op"], "confirm");
    assert_eq!(confirm.query["branch_id"], "01");
    // a finished transaction takes no more branches
    let (status, reply) = register_tcc(&app, &g, "02", &b, "3").await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        format!("no trans with gid: {g} status: prepared found FAILURE")
    );
}

#[tokio::test]
async fn tcc_abort_cancels_in_reverse_with_its_reason() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    // a cancel answering ONGOING is asked again, not given up
    b.script("cancel1", &[Reply::Ongoing]);
    let g = gid("tcc-abort");
    app.post("prepare", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    register_tcc(&app, &g, "01", &b, "1").await;
    register_tcc(&app, &g, "02", &b, "2").await;
    let (status, _) = app
        .post(
            "abort",
            &json!({"gid": g, "trans_type": "tcc", "rollback_reason": "try 2 failed"}),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_status(&g, "failed", 5).await;
    assert_eq!(b.paths_for(&g), ["cancel2", "cancel1", "cancel1"]);
    assert_eq!(
        app.branch_statuses(&g).await,
        ["succeed", "prepared", "succeed", "prepared"]
    );
    let q = app.query(&g).await;
    assert_eq!(q["transaction"]["rollback_reason"], "try 2 failed");
}

#[tokio::test]
async fn tcc_confirm_failure_is_retried_never_turned_into_cancel() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("confirm1", &[Reply::Failure, Reply::Failure, Reply::Error]);
    let g = gid("tcc-confirm-retry");
    app.post("prepare", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    register_tcc(&app, &g, "01", &b, "1").await;
    let (status, reply) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "tcc", "wait_result": true}),
        )
        .await;
    assert_eq!(status, 409, "{reply}");
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(
        b.paths_for(&g),
        ["confirm1", "confirm1", "confirm1", "confirm1"]
    );
    // and an abort after the decision is refused
    let (status, _) = app
        .post("abort", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn prepared_tcc_times_out_and_is_cancelled() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("tcc-timeout");
    app.post(
        "prepare",
        &json!({"gid": g, "trans_type": "tcc", "timeout_to_fail": 1}),
    )
    .await;
    register_tcc(&app, &g, "01", &b, "1").await;
    app.wait_status(&g, "failed", 6).await;
    let q = app.query(&g).await;
    assert_eq!(
        q["transaction"]["rollback_reason"],
        "Timeout after 1 seconds"
    );
    assert_eq!(b.paths_for(&g), ["cancel1"]);
    assert_eq!(app.branch_statuses(&g).await, ["succeed", "prepared"]);
    // the client's next registration is refused
    assert_eq!(register_tcc(&app, &g, "02", &b, "2").await.0, 409);
    // and so is its submit
    let (status, _) = app
        .post("submit", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn tcc_branch_headers_reach_confirm() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("tcc-headers");
    app.post(
        "prepare",
        &json!({"gid": g, "trans_type": "tcc", "branch_headers": {"x-trace": "abc"}}),
    )
    .await;
    register_tcc(&app, &g, "01", &b, "1").await;
    app.post(
        "submit",
        &json!({"gid": g, "trans_type": "tcc", "wait_result": true}),
    )
    .await;
    let call = b
        .calls()
        .into_iter()
        .find(|c| c.path == "confirm1")
        .unwrap();
    assert_eq!(call.headers["x-trace"], "abc");
}

async fn register_xa(app: &TestApp, g: &str, id: &str, b: &Branches) -> u16 {
    app.post(
        "registerXaBranch",
        &json!({"gid": g, "trans_type": "xa", "branch_id": id, "url": b.url(&format!("xa{id}"))}),
    )
    .await
    .0
}

#[tokio::test]
async fn xa_commits_in_registration_order_with_empty_posts() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("xa-ok");
    app.post("prepare", &json!({"gid": g, "trans_type": "xa"}))
        .await;
    assert_eq!(register_xa(&app, &g, "01", &b).await, 200);
    assert_eq!(register_xa(&app, &g, "02", &b).await, 200);
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "xa", "wait_result": true}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(b.paths_for(&g), ["xa01", "xa02"]);
    let calls = b.calls();
    assert!(calls
        .iter()
        .all(|c| c.method == "POST" && c.body.is_empty()));
    assert!(calls.iter().all(|c| c.query["op"] == "commit"));
    assert_eq!(
        app.branch_statuses(&g).await,
        ["prepared", "succeed", "prepared", "succeed"]
    );
}

#[tokio::test]
async fn xa_abort_rolls_back_in_order_and_ongoing_commit_is_retried() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("xa-abort");
    app.post("prepare", &json!({"gid": g, "trans_type": "xa"}))
        .await;
    register_xa(&app, &g, "01", &b).await;
    register_xa(&app, &g, "02", &b).await;
    let (status, _) = app
        .post("abort", &json!({"gid": g, "trans_type": "xa"}))
        .await;
    assert_eq!(status, 200);
    app.wait_status(&g, "failed", 5).await;
    assert_eq!(b.paths_for(&g), ["xa01", "xa02"]);
    assert!(b.calls().iter().all(|c| c.query["op"] == "rollback"));

    // TestXaNotTimeout: commit answers ONGOING (as a 200 body) once
    b.script(
        "xa03",
        &[Reply::Raw(200, "{\"dtm_result\":\"ONGOING\"}".into())],
    );
    let g = gid("xa-ongoing");
    app.post("prepare", &json!({"gid": g, "trans_type": "xa"}))
        .await;
    register_xa(&app, &g, "03", &b).await;
    let (status, reply) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "xa", "wait_result": true}),
        )
        .await;
    assert_eq!(status, 425, "{reply}");
    assert_eq!(reply["dtm_result"], "ONGOING");
    app.wait_status(&g, "succeed", 5).await;
    assert_eq!(b.paths_for(&g), ["xa03", "xa03"]);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_confirm_that_keeps_failing_alerts_and_force_stop_ends_it() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    let mut settings = crate::support::test_settings(&redis.url(), &crate::support::prefix());
    settings.alert.webhook_url = b.url("alert");
    settings.alert.retry_limit = 2;
    let app = TestApp::spawn_with(settings).await;
    b.set_default("confirm1", Reply::Failure);
    let g = gid("tcc-stuck");
    app.post("prepare", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    register_tcc(&app, &g, "01", &b, "1").await;
    app.post("submit", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !b.calls().iter().any(|c| c.path == "alert") {
        assert!(std::time::Instant::now() < deadline, "no alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.status(&g).await,
        "submitted",
        "never turned into a cancel"
    );
    assert!(!b.paths_for(&g).iter().any(|p| p.starts_with("cancel")));
    let (status, _) = app.post("forceStop", &json!({"gid": g})).await;
    assert_eq!(status, 200);
    assert_eq!(app.status(&g).await, "failed");
    // a pass already under way may finish its call; none starts after
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = b.paths_for(&g).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        b.paths_for(&g).len(),
        calls,
        "confirm still called after forceStop"
    );
}
