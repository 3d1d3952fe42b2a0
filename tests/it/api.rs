//! The HTTP API surface: reply shapes, bad input, listing, and Redis
//! outages.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{gid, prefix, saga_body, test_settings, Branches, RedisServer, TestApp};

#[tokio::test]
async fn version_new_gid_ping_and_unknown_routes() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (status, v) = app.get("version").await;
    assert_eq!(status, 200);
    assert_eq!(v["version"], "v1.19.0");
    let (status, a) = app.get("newGid").await;
    assert_eq!(status, 200);
    assert_eq!(a["dtm_result"], "SUCCESS");
    assert_eq!(a["gid"].as_str().unwrap().len(), 22);
    let (_, b) = app.get("newGid").await;
    assert_ne!(a["gid"], b["gid"]);
    let ping = app.base.replace("/api/dtmsvr", "/api/ping");
    let r: Value = app
        .http
        .post(&ping)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"msg": "pong"}));
    let (status, body) = app.get("nope").await;
    assert_eq!(status, 404);
    assert!(body["message"].is_string());
    let (status, body) = app.get("submit").await;
    assert_eq!(status, 405);
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn query_of_unknown_and_missing_gid() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (status, body) = app.get("query?gid=nobody").await;
    assert_eq!(
        (status, body),
        (200, json!({"transaction": null, "branches": []}))
    );
    let (status, body) = app.get("query").await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "no gid specified");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.store.max_gid_len = 16;
    settings.http.max_body_bytes = 4096;
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let keys_before = redis.data_keys(&app.prefix);
    let good = saga_body("g-ok", &b);
    let with = |k: &str, v: Value| {
        let mut body = good.clone();
        body[k] = v;
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("no gid", with("gid", json!(null)), 400, "gid is required"),
        (
            "long gid",
            with("gid", json!("x".repeat(17))),
            400,
            "limit is 16",
        ),
        ("gid with ;", with("gid", json!("a;b")), 400, "';'"),
        (
            "gid with newline",
            with("gid", json!("a\nb")),
            400,
            "control",
        ),
        (
            "unknown type",
            with("trans_type", json!("sagax")),
            400,
            "unknown trans_type",
        ),
        (
            "no type",
            with("trans_type", json!("")),
            400,
            "trans_type is required",
        ),
        (
            "payload count",
            with("payloads", json!(["{}"])),
            400,
            "1 payloads for 2 steps",
        ),
        (
            "bad url",
            with(
                "steps",
                json!([{"action": "ftp://x/y", "compensate": ""}, {"action": "", "compensate": ""}]),
            ),
            400,
            "must be empty, http(s)",
        ),
        (
            "bad orders",
            with(
                "custom_data",
                json!("{\"concurrent\":true,\"orders\":{\"1\":[7]}}"),
            ),
            400,
            "orders",
        ),
        (
            "negative option",
            with("retry_interval", json!(-1)),
            400,
            "negative",
        ),
        (
            "wrong type",
            with("timeout_to_fail", json!("soon")),
            400,
            "not valid JSON",
        ),
        (
            "bad protocol",
            with("protocol", json!("smtp")),
            400,
            "protocol",
        ),
    ];
    for (name, body, status, message) in cases {
        for route in ["submit", "prepare"] {
            let (got, reply) = app.post(route, &body).await;
            assert_eq!(got, status, "{name} on {route}: {reply}");
            let text = reply["message"].as_str().unwrap_or_default();
            assert!(text.contains(message), "{name} on {route}: {text:?}");
            assert!(reply.get("dtm_result").is_none(), "{name}: {reply}");
        }
    }
    let (status, reply) = app.post_raw("submit", "{\"gid\": ").await;
    assert_eq!(status, 400);
    assert!(reply["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let (status, reply) = app.post_raw("submit", vec![b' '; 5000]).await;
    assert_eq!(status, 413, "{reply}");
    assert!(reply["message"].is_string());
    let (status, _) = app
        .post("abort", &json!({"gid": "missing", "trans_type": "msg"}))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        redis.data_keys(&app.prefix),
        keys_before,
        "bad input wrote to Redis"
    );
    // the same body with its flaw removed is accepted
    assert_eq!(app.post("submit", &good).await.0, 200);
}

#[tokio::test]
async fn clients_bodies_are_accepted_as_sent() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("as-sent");
    // what the Python client sends: nulls, unknown keys; payloads as JSON text
    let body = json!({
        "gid": g, "trans_type": "saga", "custom_data": null, "query_prepared": null,
        "protocol": null, "passthrough_headers": [], "request_timeout": 8,
        "wait_result": true, "branch_headers": null, "unknown_field": {"x": 1},
        "steps": [{"action": b.url("a1"), "compensate": b.url("c1")}],
        "payloads": ["{\"amount\": 30}"],
    });
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{reply}");
    // the legacy form: payload inside the step, no payloads
    let g2 = gid("legacy");
    let body = json!({
        "gid": g2, "trans_type": "saga", "wait_result": true,
        "steps": [{"action": b.url("a1"), "compensate": b.url("c1"), "data": "{\"amount\":1}"}],
    });
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 200, "{reply}");
    let calls = b.calls();
    assert_eq!(calls.last().unwrap().body, "{\"amount\":1}");
    let q = app.query(&g2).await;
    assert_eq!(q["transaction"]["payloads"], json!(["{\"amount\":1}"]));
    assert_eq!(q["transaction"]["steps"][0]["action"], b.url("a1"));
}

#[tokio::test]
async fn submitting_a_gid_twice_follows_the_contract() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("twice");
    let mut body = saga_body(&g, &b);
    b.script("a1", &[crate::support::Reply::Slow(400)]);
    assert_eq!(app.post("submit", &body).await.0, 200);
    // while it runs: accepted, and not run twice
    assert_eq!(app.post("submit", &body).await.0, 200);
    app.wait_status(&g, "succeed", 5).await;
    assert_eq!(b.paths_for(&g), ["a1", "a2"]);
    body["wait_result"] = json!(true);
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        "current status 'succeed', cannot sumbmit. FAILURE"
    );
    // a saga cannot be aborted
    let (status, reply) = app
        .post("abort", &json!({"gid": g, "trans_type": "saga"}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        reply["message"],
        "trans type: 'saga' current status 'succeed', cannot abort. FAILURE"
    );
}

#[tokio::test]
async fn all_lists_newest_first_with_filters_and_a_cursor() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let mut gids = Vec::new();
    for i in 0..7 {
        let g = format!("list-{i}");
        let mut body = saga_body(&g, &b);
        body["wait_result"] = json!(true);
        if i % 3 == 0 {
            body["steps"][0]["action"] = json!(b.url("fail"));
            b.set_default("fail", crate::support::Reply::Failure);
        }
        app.post("submit", &body).await;
        gids.push(g);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let msg = json!({"gid": "list-msg", "trans_type": "msg", "steps": [{"action": b.url("m")}], "payloads": ["{}"]});
    app.post("prepare", &msg).await;
    // page through everything, two at a time
    let seen = app.all_gids(2).await;
    let mut want: Vec<String> = gids.iter().rev().cloned().collect();
    want.insert(0, "list-msg".into());
    assert_eq!(seen, want);
    let (_, failed) = app.get("all?status=failed&limit=100").await;
    let failed: Vec<&str> = failed["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["gid"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["list-6", "list-3", "list-0"]);
    let (_, msgs) = app.get("all?transType=msg").await;
    assert_eq!(msgs["transactions"].as_array().unwrap().len(), 1);
    let (_, old) = app.get("all?createTimeEnd=1000").await;
    assert_eq!(old["transactions"], json!([]));
    assert_eq!(old["next_position"], "");
    let (_, one) = app.get("all?gid=list-2").await;
    assert_eq!(one["transactions"][0]["gid"], "list-2");
    let (_, none) = app.get("all?gid=missing").await;
    assert_eq!(none["transactions"], json!(null));
    for bad in [
        "limit=x",
        "limit=0",
        "status=weird",
        "transType=x",
        "position=zz",
        "createTimeStart=-1",
    ] {
        let (status, body) = app.get(&format!("all?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn redis_outage_answers_503_then_recovers_without_help() {
    let mut redis = RedisServer::start_aof();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    redis.kill();
    let g = gid("outage");
    let started = std::time::Instant::now();
    let (status, reply) = app.post("submit", &saga_body(&g, &b)).await;
    assert_eq!(status, 503, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "no hang: {:?}",
        started.elapsed()
    );
    let (status, _) = app.get(&format!("query?gid={g}")).await;
    assert_eq!(status, 503);
    redis.revive();
    // the scripts are gone with the restart (no AOF of SCRIPT LOAD); they reload by themselves
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.conn())
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        let (status, _) = app.post("submit", &saga_body(&g, &b)).await;
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "dtx did not come back after Redis did");
    app.wait_status(&g, "succeed", 5).await;
}
