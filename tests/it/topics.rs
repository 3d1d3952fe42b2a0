//! Topics and the KV API (contract §8.1, §8.2).

use serde_json::json;

use crate::support::{gid, Branches, RedisServer, TestApp};

#[tokio::test]
async fn subscribe_unsubscribe_and_delete_follow_dtm() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let (u1, u2) = (b.url("in1"), b.url("in2"));
    let sub = |t: &str, u: &str| format!("subscribe?topic={t}&url={u}&remark=r");
    assert_eq!(app.get(&sub("orders", &u1)).await.0, 200);
    assert_eq!(app.get(&sub("orders", &u2)).await.0, 200);
    let (status, r) = app.get(&sub("orders", &u1)).await;
    assert_eq!(
        (status, r["message"].as_str()),
        (409, Some("this url exists"))
    );
    assert_eq!(app.get(&sub("", &u1)).await.0, 400);
    assert_eq!(app.get("subscribe?topic=orders&url=").await.0, 400);

    // a msg to the topic reaches every subscriber
    let g = gid("topic-msg");
    let body = json!({
        "gid": g, "trans_type": "msg", "wait_result": true,
        "steps": [{"action": "topic://orders"}], "payloads": ["{\"n\":1}"],
    });
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{r}");
    let mut paths = b.paths_for(&g);
    paths.sort();
    assert_eq!(paths, ["in1", "in2"]);
    let q = app.query(&g).await;
    let ids: Vec<&str> = q["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["branch_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["01-01", "01-02"]);

    let unsub = |t: &str, u: &str| format!("unsubscribe?topic={t}&url={u}");
    assert_eq!(app.get(&unsub("orders", &u1)).await.0, 200);
    assert_eq!(app.get(&unsub("orders", &u1)).await.0, 404);
    assert_eq!(app.get(&unsub("nothere", &u1)).await.0, 404);
    assert_eq!(app.get(&unsub("orders", "")).await.0, 400);
    let (status, kv) = app.get("queryKV?cat=topics&key=orders").await;
    assert_eq!(status, 200);
    assert_eq!(kv["kv"][0]["version"], 3);
    let subs: serde_json::Value = serde_json::from_str(kv["kv"][0]["v"].as_str().unwrap()).unwrap();
    assert_eq!(subs, json!([{"url": u2, "remark": "r"}]));

    let del = |name: &str| {
        let http = app.http.clone();
        let url = format!("{}/topic/{name}", app.base);
        async move { http.delete(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(del("nothere").await, 404);
    assert_eq!(del("orders").await, 200);
    // a deleted topic can no longer be used, on any replica, at once
    let g = gid("topic-gone");
    let mut body = body.clone();
    body["gid"] = json!(g);
    let (status, r) = app.post("submit", &body).await;
    assert_eq!(status, 400);
    assert!(
        r["message"].as_str().unwrap().contains("topic not found"),
        "{r}"
    );
    let (_, kv) = app.get("queryKV?cat=topics&key=orders").await;
    assert_eq!(kv["kv"], json!([]));
}

#[tokio::test]
async fn concurrent_subscribes_all_land() {
    let redis = RedisServer::start();
    let app = std::sync::Arc::new(TestApp::spawn(&redis).await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.get(&format!("subscribe?topic=busy&url=http://h/{i}"))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (_, kv) = app.get("queryKV?cat=topics&key=busy").await;
    assert_eq!(kv["kv"][0]["version"], 20);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.get(&format!("unsubscribe?topic=busy&url=http://h/{i}"))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let (_, kv) = app.get("queryKV?cat=topics&key=busy").await;
    assert_eq!(kv["kv"][0]["version"], 40);
    assert_eq!(kv["kv"][0]["v"], "[]");
}

#[tokio::test]
async fn scan_kv_pages_in_key_order() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    for t in ["t3", "t1", "t2"] {
        app.get(&format!("subscribe?topic={t}&url=http://h/x"))
            .await;
    }
    let mut seen = Vec::new();
    let mut position = String::new();
    loop {
        let (status, page) = app
            .get(&format!("scanKV?cat=topics&limit=1&position={position}"))
            .await;
        assert_eq!(status, 200, "{page}");
        for e in page["kv"].as_array().unwrap() {
            assert_eq!(e["cat"], "topics");
            seen.push(e["k"].as_str().unwrap().to_owned());
        }
        position = page["next_position"].as_str().unwrap().to_owned();
        if position.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["t1", "t2", "t3"]);
    let (_, all) = app.get("queryKV?cat=topics").await;
    assert_eq!(all["kv"].as_array().unwrap().len(), 3);
    let (_, none) = app.get("queryKV?cat=topics&key=missing").await;
    assert_eq!(none["kv"], json!([]));
    assert_eq!(app.get("scanKV?cat=").await.0, 400);
    assert_eq!(app.get("scanKV?cat=topics&limit=0").await.0, 400);
}
