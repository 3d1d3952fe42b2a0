//! SAGA scenarios (contract §3.5) against a real dtx, Redis and branch
//! service.

use std::time::Duration;

use serde_json::json;

use crate::support::{gid, saga_body, Branches, RedisServer, Reply, TestApp};

#[tokio::test]
async fn saga_commits_when_all_actions_succeed() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("saga-ok");
    let (status, body) = app.post("submit", &saga_body(&g, &b)).await;
    assert_eq!((status, body), (200, json!({"dtm_result": "SUCCESS"})));
    app.wait_status(&g, "succeed", 5).await;
    assert_eq!(b.paths_for(&g), ["a1", "a2"]);
    assert_eq!(
        app.branch_statuses(&g).await,
        ["prepared", "succeed", "prepared", "succeed"]
    );
    let q = app.query(&g).await;
    assert_eq!(q["transaction"]["rollback_reason"], json!(null));
    assert!(q["transaction"]["finish_time"].is_string());
    // the branch got dtm's query parameters and the payload as a POST body
    let call = &b.calls()[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.body, "{\"amount\":30}");
    assert_eq!(call.query["gid"], g);
    assert_eq!(call.query["trans_type"], "saga");
    assert_eq!(call.query["branch_id"], "01");
    assert_eq!(call.query["op"], "action");
    assert_eq!(call.headers["content-type"], "application/json");
}

#[tokio::test]
async fn saga_compensates_in_reverse_after_failure() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script(
        "a2",
        &[Reply::Raw(
            409,
            "{\"dtm_result\":\"FAILURE\",\"message\":\"no money\"}".into(),
        )],
    );
    let g = gid("saga-rollback");
    let (status, _) = app.post("submit", &saga_body(&g, &b)).await;
    assert_eq!(status, 200);
    app.wait_status(&g, "failed", 5).await;
    // the failed action is compensated too, then the first step
    assert_eq!(b.paths_for(&g), ["a1", "a2", "c2", "c1"]);
    assert_eq!(
        app.branch_statuses(&g).await,
        ["succeed", "succeed", "succeed", "failed"]
    );
    let q = app.query(&g).await;
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap();
    assert!(reason.contains("no money"), "{reason}");
    assert!(q["transaction"]["rollback_time"].is_string());
}

#[tokio::test]
async fn saga_legacy_200_failure_body_rolls_back() {
    // TestTccOldRollback's convention: a 200 whose body says FAILURE
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script(
        "a1",
        &[Reply::Raw(200, "{\"dtm_result\":\"FAILURE\"}".into())],
    );
    let g = gid("saga-old");
    app.post("submit", &saga_body(&g, &b)).await;
    app.wait_status(&g, "failed", 5).await;
    assert_eq!(b.paths_for(&g), ["a1", "c1"]);
}

#[tokio::test]
async fn saga_ongoing_and_errors_are_retried_never_failed() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script(
        "a1",
        &[Reply::Ongoing, Reply::Error, Reply::Raw(503, "busy".into())],
    );
    let g = gid("saga-retry");
    app.post("submit", &saga_body(&g, &b)).await;
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(b.paths_for(&g), ["a1", "a1", "a1", "a1", "a2"]);
    let calls: Vec<_> = b.calls().into_iter().filter(|c| c.path == "a1").collect();
    // backoff grows between error retries (base 100 ms, jitter 20%)
    let gap1 = calls[2].at - calls[1].at;
    let gap2 = calls[3].at - calls[2].at;
    assert!(gap2 > gap1, "{gap1:?} then {gap2:?}");
}

#[tokio::test]
async fn compensation_failure_is_retried_until_it_succeeds() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("a2", &[Reply::Failure]);
    b.script("c1", &[Reply::Failure, Reply::Error]);
    let g = gid("saga-comp-retry");
    app.post("submit", &saga_body(&g, &b)).await;
    app.wait_status(&g, "failed", 10).await;
    assert_eq!(b.paths_for(&g), ["a1", "a2", "c2", "c1", "c1", "c1"]);
}

#[tokio::test]
async fn saga_wait_result_reports_success_and_failure() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("saga-wait");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!((status, reply), (200, json!({"dtm_result": "SUCCESS"})));
    // no polling needed: it is already final
    assert_eq!(app.status(&g).await, "succeed");

    b.script("a2", &[Reply::Raw(409, "insufficient balance".into())]);
    let g = gid("saga-wait-fail");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["dtm_result"], "FAILURE");
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("insufficient balance"));
    assert_eq!(app.status(&g).await, "failed");

    b.script("a1", &[Reply::Ongoing]);
    let g = gid("saga-wait-ongoing");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["message"], "wait result not return success: FAILURE");
    app.wait_status(&g, "succeed", 5).await;
}

#[tokio::test]
async fn concurrent_saga_runs_actions_together_and_honours_orders() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("a1", &[Reply::Slow(300)]);
    b.script("a2", &[Reply::Slow(300)]);
    let g = gid("saga-con");
    let mut body = json!({
        "gid": g,
        "trans_type": "saga",
        "steps": [
            {"action": b.url("a1"), "compensate": b.url("c1")},
            {"action": b.url("a2"), "compensate": b.url("c2")},
            {"action": b.url("a3"), "compensate": b.url("c3")},
        ],
        "payloads": ["{}", "{}", "{}"],
        "custom_data": "{\"concurrent\":true,\"orders\":{\"2\":[0,1]}}",
    });
    body["wait_result"] = json!(true);
    let (status, _) = app.post("submit", &body).await;
    assert_eq!(status, 200);
    // a1 and a2 overlapped: the second arrived before the first (300 ms) answered
    let calls: Vec<_> = b
        .calls()
        .into_iter()
        .filter(|c| c.query["gid"] == g)
        .collect();
    assert!(
        calls[1].at - calls[0].at < Duration::from_millis(250),
        "calls did not overlap"
    );
    let paths = b.paths_for(&g);
    assert_eq!(paths.len(), 3);
    assert_eq!(paths[2], "a3", "a3 waits for a1 and a2: {paths:?}");
}

#[tokio::test]
async fn concurrent_saga_failure_skips_steps_that_never_started() {
    // TestSagaConRollbackOrder
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("a1", &[Reply::Failure]);
    let g = gid("saga-con-order");
    let mut body = saga_body(&g, &b);
    body["custom_data"] = json!("{\"concurrent\":true,\"orders\":{\"1\":[0]}}");
    app.post("submit", &body).await;
    app.wait_status(&g, "failed", 5).await;
    assert_eq!(b.paths_for(&g), ["a1", "c1"]);
    assert_eq!(
        app.branch_statuses(&g).await,
        ["succeed", "failed", "prepared", "prepared"]
    );
}

#[tokio::test]
async fn retry_limit_retries_at_once_then_aborts() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    // three errors then success: within a limit of 3, one pass succeeds
    b.script("a2", &[Reply::Error, Reply::Error, Reply::Error]);
    let g = gid("saga-limit-yes");
    let mut body = saga_body(&g, &b);
    body["retry_limit"] = json!(3);
    body["wait_result"] = json!(true);
    let (status, _) = app.post("submit", &body).await;
    assert_eq!(status, 200);
    assert_eq!(b.paths_for(&g), ["a1", "a2", "a2", "a2", "a2"]);

    b.set_default("a4", Reply::Error);
    let g = gid("saga-limit-no");
    let body = json!({
        "gid": g, "trans_type": "saga", "retry_limit": 1, "wait_result": true,
        "steps": [
            {"action": b.url("a3"), "compensate": b.url("c3")},
            {"action": b.url("a4"), "compensate": b.url("c4")},
        ],
        "payloads": ["{}", "{}"],
    });
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        "RetryCount is greater than RetryLimit, RetryLimit: 1 FAILURE"
    );
    assert_eq!(b.paths_for(&g), ["a3", "a4", "a4", "c4", "c3"]);
    assert_eq!(
        app.branch_statuses(&g).await,
        ["succeed", "succeed", "succeed", "prepared"]
    );
}

#[tokio::test]
async fn saga_timeout_aborts_and_compensates_the_unknown_action() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.set_default("a2", Reply::Ongoing);
    let g = gid("saga-timeout");
    let mut body = saga_body(&g, &b);
    body["timeout_to_fail"] = json!(1);
    app.post("submit", &body).await;
    app.wait_status(&g, "failed", 6).await;
    let q = app.query(&g).await;
    assert_eq!(
        q["transaction"]["rollback_reason"],
        "Timeout after 1 seconds"
    );
    let paths = b.paths_for(&g);
    assert_eq!(&paths[paths.len() - 2..], ["c2", "c1"], "{paths:?}");
    assert_eq!(
        app.branch_statuses(&g).await,
        ["succeed", "succeed", "succeed", "prepared"]
    );
}

#[tokio::test]
async fn branch_headers_and_request_timeout_reach_every_call() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    // the first call takes longer than request_timeout: an unknown outcome, retried
    b.script("a1", &[Reply::Slow(1500)]);
    let g = gid("saga-headers");
    let mut body = saga_body(&g, &b);
    body["branch_headers"] = json!({"x-tenant": "t1"});
    body["request_timeout"] = json!(1);
    app.post("submit", &body).await;
    app.wait_status(&g, "succeed", 8).await;
    let calls: Vec<_> = b
        .calls()
        .into_iter()
        .filter(|c| c.query["gid"] == g)
        .collect();
    assert_eq!(
        calls.len(),
        3,
        "{:?}",
        calls.iter().map(|c| &c.path).collect::<Vec<_>>()
    );
    assert!(calls
        .iter()
        .all(|c| c.headers.get("x-tenant").map(String::as_str) == Some("t1")));
}

#[tokio::test]
async fn empty_urls_succeed_without_calls() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let g = gid("saga-empty");
    let body = json!({
        "gid": g, "trans_type": "saga", "wait_result": true,
        "steps": [{"action": "", "compensate": ""}, {"action": "", "compensate": ""}],
        "payloads": ["", ""],
    });
    let (status, _) = app.post("submit", &body).await;
    assert_eq!(status, 200);
    assert_eq!(app.status(&g).await, "succeed");
}

#[tokio::test]
async fn a_successful_two_step_saga_costs_two_script_calls() {
    let redis = RedisServer::start();
    // idle, the claim loop's only script is its heartbeat, once per
    // recheck: with an hour's recheck it runs once, at start
    let mut settings = crate::support::test_settings(&redis.url(), &crate::support::prefix());
    settings.scheduler.recheck_ms = 3_600_000;
    let app = TestApp::spawn_with(settings).await;
    let replicas = format!("{}:replicas", app.prefix);
    crate::support::until("the first heartbeat", || {
        redis.keys(&app.prefix).contains(&replicas)
    })
    .await;
    let b = Branches::start().await;
    let calls = |r: &RedisServer| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut r.conn())
            .unwrap();
        let count = |name: &str| -> u64 {
            info.lines()
                .find(|l| l.starts_with(&format!("cmdstat_{name}:")))
                .and_then(|l| l.split("calls=").nth(1))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        count("evalsha") + count("eval")
    };
    let before = calls(&redis);
    let g = gid("saga-cost");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let (status, _) = app.post("submit", &body).await;
    assert_eq!(status, 200);
    assert_eq!(calls(&redis) - before, 2, "create + final record");
}

#[tokio::test]
async fn finished_transactions_expire_and_leave_the_index() {
    let redis = RedisServer::start();
    let mut settings = crate::support::test_settings(&redis.url(), &crate::support::prefix());
    settings.store.finished_ttl_s = 1;
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let g = gid("saga-expire");
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    assert_eq!(app.post("submit", &body).await.0, 200);
    assert_eq!(
        redis
            .keys(&app.prefix)
            .iter()
            .filter(|k| k.contains(&g))
            .count(),
        2
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(app.query(&g).await["transaction"], json!(null));
    // the maintenance loop drops the index entry within about a second more
    let mut c = redis.conn();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut total = 0;
        for key in redis
            .keys(&app.prefix)
            .iter()
            .filter(|k| k.ends_with(":created"))
        {
            let n: i64 = redis::cmd("ZCARD").arg(key).query(&mut c).unwrap();
            total += n;
        }
        if total == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index entries left: {total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, all) = app.get("all").await;
    assert_eq!(all["transactions"], json!([]));
}

#[tokio::test]
async fn a_timed_out_saga_backs_off_failing_compensations() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.set_default("a2", Reply::Ongoing);
    b.set_default("c2", Reply::Error);
    let g = gid("saga-timeout-backoff");
    let mut body = saga_body(&g, &b);
    body["timeout_to_fail"] = json!(1);
    app.post("submit", &body).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let c2 = b.paths_for(&g).iter().filter(|p| *p == "c2").count();
    // base 100 ms doubling to the 1 s cap: a handful in 2 s, not a tight loop
    assert!((1..=12).contains(&c2), "c2 called {c2} times");
    assert_eq!(app.status(&g).await, "aborting");
}

#[tokio::test]
async fn resubmitting_a_waiting_saga_runs_it_now() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.script("a1", &[Reply::Error]);
    let g = gid("saga-resubmit");
    let mut body = saga_body(&g, &b);
    body["retry_interval"] = json!(60);
    app.post("submit", &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.paths_for(&g), ["a1"]);
    assert_eq!(app.post("submit", &body).await.0, 200);
    app.wait_status(&g, "succeed", 3).await;
    assert_eq!(b.paths_for(&g), ["a1", "a1", "a2"]);
}

#[tokio::test]
async fn oversized_sagas_are_refused() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let steps: Vec<_> = (0..1001)
        .map(|_| json!({"action": "", "compensate": ""}))
        .collect();
    let body =
        json!({"gid": "big", "trans_type": "saga", "steps": steps, "payloads": vec![""; 1001]});
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("at most 1000"));
    // 1000 steps are fine, end to end
    let steps: Vec<_> = (0..1000)
        .map(|_| json!({"action": "", "compensate": ""}))
        .collect();
    let body = json!({"gid": "big", "trans_type": "saga", "steps": steps,
                      "payloads": vec![""; 1000], "wait_result": true});
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(app.branch_statuses("big").await.len(), 2000);
}
