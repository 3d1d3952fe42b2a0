//! JSON-RPC: the `/api/json-rpc` endpoint (contract §1.6) and branch calls
//! over JSON-RPC (§2.4), plus the alert webhook.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{gid, prefix, test_settings, Branches, RedisServer, Reply, TestApp};

async fn rpc(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, Value) {
    app.post_raw_to("api/json-rpc", body).await
}

fn call(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": "1", "method": method, "params": params}).to_string()
}

#[tokio::test]
async fn the_endpoint_answers_every_error_with_its_code_and_200() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let (status, r) = rpc(&app, "not json").await;
    assert_eq!((status, r["error"]["code"].as_i64()), (200, Some(-32700)));
    let (_, r) = rpc(
        &app,
        json!({"jsonrpc": "1.0", "id": "1", "method": "newGid"}).to_string(),
    )
    .await;
    assert_eq!(r["error"]["code"], -32600);
    let (_, r) = rpc(
        &app,
        json!({"jsonrpc": "2.0", "id": "", "method": "newGid"}).to_string(),
    )
    .await;
    assert_eq!(r["error"]["code"], -32600);
    let (_, r) = rpc(&app, call("nope", json!({}))).await;
    assert_eq!(r["error"]["code"], -32601);
    let (_, r) = rpc(
        &app,
        call(
            "registerBranch",
            json!({"gid": "g", "trans_type": "x", "branch_id": "01"}),
        ),
    )
    .await;
    assert_eq!(r["error"]["code"], -32603);
    let (_, r) = rpc(&app, call("newGid", json!({}))).await;
    assert_eq!(r["error"], Value::Null);
    assert_eq!(r["id"], "1");
    assert_eq!(r["result"]["gid"].as_str().unwrap().len(), 22);
    // an unknown gid is an ordinary error, not a FAILURE (-32901 is checked on a refused resubmit below)
    let (_, r) = rpc(
        &app,
        call("abort", json!({"gid": "none-such", "trans_type": "msg"})),
    )
    .await;
    assert_eq!(r["error"]["code"], -32603, "unknown gid is not a FAILURE");
}

#[tokio::test]
async fn a_msg_through_json_rpc_and_a_refused_resubmit() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("jrpc-msg");
    let msg = json!({"gid": g, "trans_type": "msg", "steps": [{"action": b.url("in")}],
                     "payloads": ["{}"], "query_prepared": b.url("qp")});
    let (_, r) = rpc(&app, call("prepare", msg.clone())).await;
    assert_eq!(r["error"], Value::Null, "{r}");
    let mut submit = msg.clone();
    submit["wait_result"] = json!(true);
    let (_, r) = rpc(&app, call("submit", submit.clone())).await;
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(app.status(&g).await, "succeed");
    // TestMsgJrpcRepeated: resubmitting a finished msg is a FAILURE
    let (_, r) = rpc(&app, call("submit", submit)).await;
    assert_eq!(r["error"]["code"], -32901, "{r}");
}

#[tokio::test]
async fn json_rpc_branches_are_called_and_their_error_codes_read() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let ok = json!({"jsonrpc": "2.0", "id": "x", "result": {}}).to_string();
    let ongoing =
        json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32902, "message": "later"}})
            .to_string();
    let other = json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32000, "message": "oops"}})
        .to_string();
    let failure =
        json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32901, "message": "no money"}})
            .to_string();
    b.set_default("out", Reply::Raw(200, ok.clone()));
    b.set_default("outRevert", Reply::Raw(200, ok.clone()));
    b.set_default("inRevert", Reply::Raw(200, ok));
    b.script(
        "in",
        &[
            Reply::Raw(200, ongoing),
            Reply::Raw(200, other),
            Reply::Raw(200, failure),
        ],
    );
    let g = gid("jrpc-saga");
    let body = json!({
        "gid": g, "trans_type": "saga", "protocol": "json-rpc",
        "steps": [
            {"action": b.url("out?method=TransOut"), "compensate": b.url("outRevert?method=TransOutRevert")},
            {"action": b.url("in?method=TransIn"), "compensate": b.url("inRevert?method=TransInRevert")},
        ],
        "payloads": ["{\"amount\":30}", "{\"amount\":30}"],
    });
    app.post("submit", &body).await;
    app.wait_status(&g, "failed", 10).await;
    assert_eq!(
        b.paths_for(&g).len(),
        0,
        "json-rpc calls carry the gid in the body, not the query"
    );
    let calls = b.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["out", "in", "in", "in", "inRevert", "outRevert"]);
    let first: Value = serde_json::from_str(&calls[0].body).unwrap();
    assert_eq!(first["jsonrpc"], "2.0");
    assert_eq!(first["method"], "TransOut");
    assert_eq!(first["params"]["amount"], 30);
    assert_eq!(first["params"]["gid"], g);
    assert_eq!(first["params"]["op"], "action");
    assert_eq!(first["params"]["branch_id"], "01");
    let q = app.query(&g).await;
    assert!(q["transaction"]["rollback_reason"]
        .as_str()
        .unwrap()
        .contains("no money"));
}

#[tokio::test]
async fn the_alert_webhook_hears_of_repeated_failures() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.alert.webhook_url = b.url("alert");
    settings.alert.retry_limit = 2;
    let app = TestApp::spawn_with(settings).await;
    b.script("a1", &[Reply::Error, Reply::Error, Reply::Error]);
    b.set_default("alert", Reply::Error); // a failing webhook changes nothing
    let g = gid("alerted");
    app.post("submit", &crate::support::saga_body(&g, &b)).await;
    app.wait_status(&g, "succeed", 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alerts: Vec<Value> = b
        .calls()
        .into_iter()
        .filter(|c| c.path == "alert")
        .map(|c| serde_json::from_str(&c.body).unwrap())
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert_eq!(alerts[0]["gid"], g);
    assert_eq!(alerts[0]["retry_count"], 2);
    assert_eq!(alerts[1]["retry_count"], 3);
    assert_eq!(alerts[0]["branch"], b.url("a1"));
    assert_eq!(alerts[0]["status"], "submitted");
    assert!(alerts[0]["error"].as_str().unwrap().contains("500"));
}
