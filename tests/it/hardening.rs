//! What a hostile or careless client or branch must not be able to do:
//! follow redirects past the allow-list, pin every call slot, fill memory
//! with a reply, grow the metric series.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    gid, prefix, saga_body, test_settings, wait_status_at, Branches, RedisServer, Replica, Reply,
    TestApp,
};

/// Waits until `cond` holds, or panics with `what` after `secs`.
async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let redis = RedisServer::start();
    let allowed = Branches::start().await;
    let other = Branches::start().await;
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.branch.allowed_hosts = allowed.base.trim_start_matches("http://").to_owned();
    settings.alert.webhook_url = allowed.url("alert");
    settings.alert.retry_limit = 1;
    let app = TestApp::spawn_with(settings).await;
    for (path, code) in [("a1", 307), ("alert", 302)] {
        allowed.set_default(
            path,
            Reply::Redirect(code, other.url(&format!("internal-{path}"))),
        );
    }
    let g = gid("redirect");
    let mut body = saga_body(&g, &allowed);
    body["branch_headers"] = json!({"Authorization": "Bearer branch-secret"});
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{r}");
    // the redirect is an error outcome: retried, and alerted on
    eventually(10, "a1 retried and the alert sent twice", || {
        allowed.paths_for(&g).iter().filter(|p| *p == "a1").count() >= 3
            && allowed.calls().iter().filter(|c| c.path == "alert").count() >= 2
    })
    .await;
    assert!(
        other.calls().is_empty(),
        "the other host was called: {:?}",
        other.calls()
    );
    assert_eq!(app.status(&g).await, "submitted");
    let attention = app.attention().await;
    let entry = attention["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["gid"] == g)
        .cloned()
        .unwrap_or_default();
    let error = entry["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("status 307") && error.contains("internal-a1"),
        "{attention}"
    );
}

#[tokio::test]
async fn one_hanging_host_neither_starves_the_others_nor_holds_a_slot_for_long() {
    let redis = RedisServer::start();
    let hanging = Branches::start().await;
    let healthy = Branches::start().await;
    hanging.set_default("hang", Reply::Slow(600_000));
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.branch.max_in_flight = 2;
    settings.trans.request_timeout_ms = 500;
    settings.trans.max_request_timeout_ms = 1000;
    let app = TestApp::spawn_with(settings).await;
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let g = gid("hang");
        let mut body = saga_body(&g, &hanging);
        body["steps"][0]["action"] = json!(hanging.url("hang"));
        // an hour: clamped to trans.max_request_timeout_ms
        body["request_timeout"] = json!(3600);
        let (status, r) = app.post("submit", &body).await;
        assert_eq!(status, 200, "{r}");
        stuck.push(g);
    }
    eventually(5, "a hanging call started", || {
        hanging.calls().iter().any(|c| c.path == "hang")
    })
    .await;
    let g = gid("healthy");
    let (status, r) = app.post("submit", &saga_body(&g, &healthy)).await;
    assert_eq!(status, 200, "{r}");
    app.wait_status(&g, "succeed", 5).await;
    assert_eq!(healthy.paths_for(&g), ["a1", "a2"]);
    // each hanging call is cut off after about a second and tried again
    eventually(10, "both hanging sagas tried twice", || {
        stuck
            .iter()
            .all(|g| hanging.paths_for(g).iter().filter(|p| *p == "hang").count() >= 2)
    })
    .await;
}

/// Peak resident memory of a process, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_huge_branch_reply_is_read_only_in_part() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    // 256 MiB of spaces: a 200, so the saga succeeds on the status alone
    b.set_default("a1", Reply::Stream(200, 256 << 20));
    let mut dtx = Replica::start(&redis, &prefix());
    let g = gid("huge");
    assert_eq!(dtx.post("submit", &saga_body(&g, &b)).await, 200);
    wait_status_at(&dtx, &g, "succeed", 20).await;
    let peak = peak_rss_kib(dtx.child.id());
    dtx.kill();
    assert!(peak < 100 * 1024, "dtx peaked at {peak} KiB");
}

#[tokio::test]
async fn junk_methods_share_one_metric_label() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let root = app.base.replace("/api/dtmsvr", "");
    let junk: Vec<String> = (0..20)
        .map(|i| format!("JUNK{i}{:08X}", fastrand::u32(..)))
        .collect();
    for m in &junk {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = app
            .http
            .request(method, format!("{root}/api/ping"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let text = app
        .http
        .get(format!("{root}/api/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("dtx_http_requests_total") && l.contains("method=\"other\"")),
        "{text}"
    );
    for m in &junk {
        assert!(!text.contains(m.as_str()), "{m} became a label");
    }
}

#[tokio::test]
async fn branch_headers_cannot_frame_the_request() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let before = redis.keys(&app.prefix);
    for name in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "TE",
        "Trailer",
        "Upgrade",
        "Keep-Alive",
        "Proxy-Authorization",
    ] {
        let g = gid("framing");
        let mut body = saga_body(&g, &b);
        body["branch_headers"] = json!({ name: "3" });
        let (status, r) = app.post("submit", &body).await;
        assert_eq!(status, 400, "{name}: {r}");
        assert!(r["message"].as_str().unwrap().contains(name), "{r}");
    }
    assert_eq!(redis.keys(&app.prefix), before, "a refused submit wrote");
    let g = gid("framing-ok");
    let mut body = saga_body(&g, &b);
    body["branch_headers"] = json!({"X-Tenant": "t1"});
    body["wait_result"] = json!(true);
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{r}");
    app.wait_status(&g, "succeed", 5).await;
    let call = b.calls().into_iter().find(|c| c.path == "a1").unwrap();
    assert_eq!(call.headers["x-tenant"], "t1");
    assert_eq!(call.body, "{\"amount\":30}");
}
