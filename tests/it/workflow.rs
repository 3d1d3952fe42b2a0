//! Workflow (contract §3.9): the client drives, dtx records its progress,
//! takes its final submit, and calls it back when it goes quiet.

use std::time::Duration;

use serde_json::json;

use crate::support::{gid, Branches, RedisServer, TestApp};

#[tokio::test]
async fn workflow_records_progress_and_takes_the_clients_outcome() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let g = gid("wf");
    let prepare = json!({
        "gid": g, "trans_type": "workflow",
        "custom_data": "{\"name\":\"transfer\",\"data\":\"eyJ4IjoxfQ==\"}",
        "query_prepared": "http://127.0.0.1:1/resume",
    });
    let (status, reply) = app.post("prepareWorkflow", &prepare).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["transaction"]["gid"], g);
    assert_eq!(reply["transaction"]["status"], "prepared");
    assert_eq!(reply["progresses"], json!([]));
    for (id, op, st, data) in [
        ("01", "action", "succeed", "ok-1"),
        ("02", "action", "failed", "no money"),
    ] {
        let (status, r) = app
            .post(
                "registerBranch",
                &json!({"gid": g, "trans_type": "workflow", "branch_id": id, "op": op,
                        "status": st, "data": data}),
            )
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let (status, _) = app
        .post(
            "registerBranch",
            &json!({"gid": g, "trans_type": "workflow", "branch_id": "03", "op": "try", "status": "succeed"}),
        )
        .await;
    assert_eq!(status, 400);
    // a resumed client gets its recorded progress back
    let (_, reply) = app.post("prepareWorkflow", &prepare).await;
    let progresses = reply["progresses"].as_array().unwrap();
    assert_eq!(progresses.len(), 2);
    assert_eq!(progresses[0]["branch_id"], "01");
    assert_eq!(progresses[0]["status"], "succeed");
    assert_eq!(progresses[0]["bin_data"], "b2stMQ==");
    assert_eq!(progresses[1]["status"], "failed");
    assert_eq!(progresses[1]["op"], "action");
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "workflow",
                    "req_extra": {"status": "failed", "rollback_reason": "no money"}}),
        )
        .await;
    assert_eq!(status, 200);
    let q = app.query(&g).await;
    assert_eq!(q["transaction"]["status"], "failed");
    assert_eq!(q["transaction"]["rollback_reason"], "no money");
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g, "trans_type": "workflow", "req_extra": {"status": "succeed"}}),
        )
        .await;
    assert_eq!(status, 409);

    let g2 = gid("wf-ok");
    app.post(
        "prepareWorkflow",
        &json!({"gid": g2, "trans_type": "workflow"}),
    )
    .await;
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g2, "trans_type": "workflow",
                    "req_extra": {"status": "succeed", "result": "ZG9uZQ=="}}),
        )
        .await;
    assert_eq!(status, 200);
    let q = app.query(&g2).await;
    assert_eq!(q["transaction"]["status"], "succeed");
    assert_eq!(q["transaction"]["result"], "ZG9uZQ==");
    let (status, _) = app
        .post(
            "submit",
            &json!({"gid": g2, "trans_type": "workflow", "req_extra": {}}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_quiet_workflow_is_called_back_with_backoff_until_it_submits() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("wf-resume");
    let prepare = json!({
        "gid": g, "trans_type": "workflow", "timeout_to_fail": 1,
        "custom_data": "{\"name\":\"transfer\",\"data\":\"eyJ4IjoxfQ==\"}",
        "query_prepared": b.url("resume"),
    });
    app.post("prepareWorkflow", &prepare).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let calls: Vec<_> = b
        .calls()
        .into_iter()
        .filter(|c| c.path == "resume")
        .collect();
    assert!(calls.len() >= 2, "{} callbacks", calls.len());
    let first = &calls[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.body, "{\"x\":1}");
    assert_eq!(first.query["op"], "transfer");
    assert_eq!(first.query["branch_id"], "00");
    assert_eq!(first.query["trans_type"], "workflow");
    // backoff: gaps grow
    if calls.len() >= 3 {
        assert!(calls[2].at - calls[1].at > calls[1].at - calls[0].at);
    }
    app.post(
        "submit",
        &json!({"gid": g, "trans_type": "workflow", "req_extra": {"status": "succeed"}}),
    )
    .await;
    let n = b.calls().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.calls().len(), n, "called back after its submit");
}

#[tokio::test]
async fn a_workflow_whose_input_is_a_byte_array_is_resumed_with_its_name_and_input() {
    // one published client sends custom_data.data as a JSON array of byte
    // values, which Go's decoder also accepts into []byte
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("wf-bytes");
    let input: Vec<u8> = br#"{"x":1}"#.to_vec();
    let custom = json!({"name": "transfer", "data": input}).to_string();
    let prepare = json!({
        "gid": g, "trans_type": "workflow", "timeout_to_fail": 1,
        "custom_data": custom, "query_prepared": b.url("resume"),
    });
    let (status, _) = app.post("prepareWorkflow", &prepare).await;
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(c) = b.calls().into_iter().find(|c| c.path == "resume") {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "never called back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first.method, "POST");
    assert_eq!(first.body, r#"{"x":1}"#);
    assert_eq!(first.query["op"], "transfer");
}
