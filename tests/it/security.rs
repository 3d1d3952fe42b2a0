//! Access control and the branch host allow-list; the console's attention
//! list.

use std::time::Duration;

use serde_json::json;

use crate::support::{
    gid, prefix, saga_body, test_settings, Branches, RedisServer, Reply, TestApp,
};

#[tokio::test]
async fn tokens_guard_every_route_but_health() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.auth.tokens = "full-1,full-2".into();
    settings.auth.read_tokens = "read-1".into();
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let root = app.root();
    let send = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut r = app.http.request(method, format!("{root}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    let before = redis.data_keys(&app.prefix);
    let g = gid("auth");
    let body = saga_body(&g, &b);
    use reqwest::Method as M;
    for (token, want) in [(None, 401), (Some("wrong"), 401), (Some("read-1"), 403)] {
        let r = send(M::POST, "/api/dtmsvr/submit", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{token:?}");
        if want == 401 {
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
        }
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["message"].is_string());
    }
    assert_eq!(
        redis.data_keys(&app.prefix),
        before,
        "a refused call wrote something"
    );
    // health and the console page are open
    for path in ["/api/ping", "/livez", "/readyz", "/admin/"] {
        let r = send(M::GET, path, None).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let r = send(M::POST, "/api/dtmsvr/submit", Some("full-2"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // a read-only token reads and lists, and changes nothing
    for path in [
        format!("/api/dtmsvr/query?gid={g}"),
        "/api/dtmsvr/all".to_owned(),
        "/api/dtmsvr/version".to_owned(),
        "/api/dtmsvr/scanKV?cat=topics".to_owned(),
        "/api/metrics".to_owned(),
        "/api/admin/attention".to_owned(),
    ] {
        let r = send(M::GET, &path, Some("read-1")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    for (method, path) in [
        (M::POST, "/api/dtmsvr/forceStop"),
        (M::POST, "/api/dtmsvr/abort"),
        (M::POST, "/api/dtmsvr/resetNextCronTime"),
        (M::GET, "/api/dtmsvr/subscribe?topic=t&url=http://x/y"),
        (M::POST, "/api/json-rpc"),
    ] {
        let r = send(method, path, Some("read-1"))
            .json(&json!({"gid": g}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{path}");
    }
    let r = send(M::GET, "/api/dtmsvr/all", None).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn branch_hosts_outside_the_allow_list_are_refused() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    let allowed = b.base.trim_start_matches("http://").to_owned();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.branch.allowed_hosts = allowed.clone();
    let app = TestApp::spawn_with(settings).await;
    let before = redis.data_keys(&app.prefix);
    let g = gid("ssrf");
    let mut body = saga_body(&g, &b);
    body["steps"][1]["compensate"] = json!("http://169.254.169.254/latest/meta-data");
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("not allowed"));
    let (status, _) = app
        .get("subscribe?topic=t&url=http://other-host:80/x")
        .await;
    assert_eq!(status, 400);
    assert_eq!(redis.data_keys(&app.prefix), before);
    let mut body = saga_body(&g, &b);
    body["wait_result"] = json!(true);
    let (status, _) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{allowed} is allowed");
}

#[tokio::test]
async fn attention_lists_transactions_that_keep_failing() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    b.set_default("a1", Reply::Error);
    let g = gid("attention");
    app.post("submit", &saga_body(&g, &b)).await;
    let ok = gid("fine");
    let mut body = saga_body(&ok, &b);
    body["steps"][0]["action"] = json!(b.url("fine"));
    app.post("submit", &body).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        let r = app.attention().await;
        let list = r["transactions"].as_array().unwrap();
        if let Some(t) = list.iter().find(|t| t["gid"] == g) {
            assert!(t["retry_count"].as_u64().unwrap() >= 3);
            assert_eq!(t["last_branch"], "01:action");
            assert!(t["last_error"].as_str().unwrap().contains("status 500"));
            assert!(list.iter().all(|t| t["gid"] != ok));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
