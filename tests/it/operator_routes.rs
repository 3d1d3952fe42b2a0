//! Operator routes: forceStop, resetCronTime, resetNextCronTime.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{gid, saga_body, Branches, RedisServer, Reply, TestApp};

#[tokio::test]
async fn force_stop_fails_an_unfinished_transaction_and_fences_its_driver() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    // TestAPIForceStoppedNormal: a saga stuck ONGOING in submitted
    b.set_default("a1", Reply::Ongoing);
    let g = gid("force");
    app.post("submit", &saga_body(&g, &b)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.status(&g).await, "submitted");
    let (status, reply) = app.post("forceStop", &json!({"gid": g})).await;
    assert_eq!(status, 200, "{reply}");
    let q = app.query(&g).await;
    assert_eq!(q["transaction"]["status"], "failed");
    assert_eq!(q["transaction"]["rollback_reason"], "force stopped");
    // nothing runs any more: no compensation, no further retries
    let before = b.paths_for(&g).len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.paths_for(&g).len(), before);
    assert!(!b.paths_for(&g).iter().any(|p| p.starts_with('c')));
    // TestAPIForceStoppedAbnormal
    let (status, reply) = app.post("forceStop", &json!({"gid": g})).await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        "global transaction force stop error. status: failed. error: FAILURE"
    );
    let (status, _) = app.post("forceStop", &json!({"gid": "nobody"})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn reset_next_cron_time_makes_a_waiting_transaction_run_now() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("a1", &[Reply::Error]);
    let g = gid("reset-next");
    let mut body = saga_body(&g, &b);
    // a long retry interval: without the reset the retry is a minute away
    body["retry_interval"] = json!(60);
    app.post("submit", &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.paths_for(&g), ["a1"]);
    let q = app.query(&g).await;
    assert!(q["transaction"]["next_cron_time"].is_string());
    let asked = Instant::now();
    let (status, _) = app.post("resetNextCronTime", &json!({"gid": g})).await;
    assert_eq!(status, 200);
    app.wait_status(&g, "succeed", 3).await;
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert_eq!(b.paths_for(&g), ["a1", "a1", "a2"]);
    let (status, _) = app.post("resetNextCronTime", &json!({"gid": g})).await;
    assert_eq!(
        status, 409,
        "a finished transaction has nothing to schedule"
    );
    let (status, _) = app
        .post("resetNextCronTime", &json!({"gid": "nobody"}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn reset_cron_time_pulls_far_retries_in_with_a_limit() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.set_default("slow", Reply::Error);
    let mut gids = Vec::new();
    for i in 0..3 {
        let g = gid(&format!("reset-{i}"));
        let body = json!({
            "gid": g, "trans_type": "saga", "retry_interval": 600,
            "steps": [{"action": b.url("slow"), "compensate": ""}], "payloads": ["{}"],
        });
        app.post("submit", &body).await;
        gids.push(g);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.set_default("slow", Reply::Success);
    let (status, r) = app.get("resetCronTime?timeout=60&limit=2").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r, json!({"has_remaining": true, "succeed_count": 2}));
    let (_, r) = app.get("resetCronTime?timeout=60&limit=2").await;
    assert_eq!(r, json!({"has_remaining": false, "succeed_count": 1}));
    for g in &gids {
        app.wait_status(g, "succeed", 3).await;
    }
    let (_, r) = app.get("resetCronTime").await;
    assert_eq!(r, json!({"has_remaining": false, "succeed_count": 0}));
    let (status, _) = app.get("resetCronTime?limit=x").await;
    assert_eq!(status, 400);
}
