//! The gRPC API (contract §7.1, §2.6): dtm's `dtmgimp.Dtm` over the same
//! use cases as HTTP, its error codes, tokens, health and reflection.

use base64::Engine as _;
use serde_json::json;
use tonic::{Code, Request};

use dtx::grpc::pb::dtm_client::DtmClient;
use dtx::grpc::pb::{DtmBranchRequest, DtmRequest, DtmTopicRequest, DtmTransOptions};

use crate::support::{gid, prefix, test_settings, Branches, RedisServer, Reply, TestApp};

/// A channel to `app`'s gRPC API.
pub(crate) async fn channel(app: &TestApp) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(app.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A `dtmgimp.Dtm` client of `app`.
pub(crate) async fn client(app: &TestApp) -> DtmClient<tonic::transport::Channel> {
    DtmClient::new(channel(app).await)
}

/// A 2-step saga over gRPC on `b`'s `a1`/`c1`, `a2`/`c2`, with these
/// payloads.
fn saga(gid: &str, b: &Branches, payloads: Vec<Vec<u8>>, wait: bool) -> DtmRequest {
    DtmRequest {
        gid: gid.to_owned(),
        trans_type: "saga".into(),
        trans_options: Some(DtmTransOptions {
            wait_result: wait,
            ..Default::default()
        }),
        steps: json!([
            {"action": b.url("a1"), "compensate": b.url("c1")},
            {"action": b.url("a2"), "compensate": b.url("c2")},
        ])
        .to_string(),
        bin_payloads: payloads,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_saga_over_grpc_keeps_its_payload_bytes_and_reads_over_http() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let mut dtm = client(&app).await;
    let g = dtm.new_gid(()).await.unwrap().into_inner().gid;
    assert_eq!(g.len(), 22, "{g}");
    // proto bytes: not UTF-8, with a tab and a NUL
    let p1 = vec![0x0a, 0x02, 0xff, b'\t', 0x00, 0x10];
    let p2 = vec![0x08, 0x96, 0x01];
    dtm.submit(saga(&g, &b, vec![p1.clone(), p2.clone()], true))
        .await
        .unwrap();
    assert_eq!(b.paths_for(&g), ["a1", "a2"]);
    let calls = b.calls();
    let body = |path: &str| {
        let c = calls.iter().find(|c| c.path == path).unwrap();
        (c.method.clone(), c.body.clone())
    };
    // the fake service reads bodies as text: compare what it saw
    assert_eq!(
        body("a1"),
        ("POST".into(), String::from_utf8_lossy(&p1).into())
    );
    assert_eq!(
        body("a2"),
        ("POST".into(), String::from_utf8_lossy(&p2).into())
    );
    let q = app.query(&g).await;
    assert_eq!(q["transaction"]["status"], "succeed");
    assert_eq!(q["transaction"]["protocol"], "grpc");
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    assert_eq!(q["transaction"]["payloads"], json!([b64(&p1), b64(&p2)]));
    let rows = q["branches"].as_array().unwrap();
    assert_eq!(rows[1]["bin_data"], b64(&p1));
    assert_eq!(rows[3]["bin_data"], b64(&p2));
}

#[tokio::test]
async fn errors_map_to_the_contracts_codes_and_bad_input_writes_nothing() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let mut dtm = client(&app).await;
    // bad input: InvalidArgument with a message, nothing stored
    let g = gid("grpc-bad");
    let mut bad = saga(&g, &b, vec![b"{}".to_vec(), b"{}".to_vec()], false);
    bad.trans_type = "sagaa".into();
    let e = dtm.submit(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("sagaa"), "{}", e.message());
    let mut bad = saga(&g, &b, vec![b"{}".to_vec()], false);
    bad.steps = "[{\"action\": 3}]".into();
    assert_eq!(
        dtm.submit(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let one_payload = saga(&g, &b, vec![b"{}".to_vec()], false);
    assert_eq!(
        dtm.submit(one_payload).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(app.query(&g).await["transaction"].is_null());
    assert!(redis.keys(&app.prefix).iter().all(|k| !k.contains(&g)));
    // FAILURE: a refused action fails the saga; the waiting submit gets Aborted
    let g = gid("grpc-fail");
    b.script("a1", &[Reply::Failure]);
    let e = dtm
        .submit(saga(&g, &b, vec![b"{}".to_vec(), b"{}".to_vec()], true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert_eq!(app.status(&g).await, "failed");
    assert_eq!(b.paths_for(&g), ["a1", "c1"]);
    // ONGOING: a tcc whose confirm answers ONGOING; the waiting submit
    // gets FailedPrecondition. The branch registered over gRPC carries its
    // try body as bytes, replayed to the confirm.
    let g = gid("grpc-ongoing");
    let tcc = |wait: bool| DtmRequest {
        gid: g.clone(),
        trans_type: "tcc".into(),
        trans_options: Some(DtmTransOptions {
            wait_result: wait,
            ..Default::default()
        }),
        ..Default::default()
    };
    dtm.prepare(tcc(false)).await.unwrap();
    let try_body = vec![0x08, 0x2a];
    dtm.register_branch(DtmBranchRequest {
        gid: g.clone(),
        trans_type: "tcc".into(),
        branch_id: "01".into(),
        op: "try".into(),
        data: [
            ("confirm".to_owned(), b.url("confirm")),
            ("cancel".to_owned(), b.url("cancel")),
        ]
        .into(),
        busi_payload: try_body.clone(),
    })
    .await
    .unwrap();
    b.script("confirm", &[Reply::Ongoing]);
    let e = dtm.submit(tcc(true)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let confirm = b.calls().into_iter().find(|c| c.path == "confirm").unwrap();
    assert_eq!(confirm.body, String::from_utf8_lossy(&try_body));
    app.wait_status(&g, "succeed", 10).await;
    // Redis away: Unavailable
    redis.kill();
    let g = gid("grpc-away");
    let e = dtm
        .submit(saga(&g, &b, vec![b"{}".to_vec(), b"{}".to_vec()], false))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{e:?}"
    );
    redis.revive();
}

#[tokio::test]
async fn prepare_abort_and_topics_go_through_the_same_use_cases() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let mut dtm = client(&app).await;
    // a prepared msg, aborted over gRPC, fails at once
    let g = gid("grpc-msg");
    let msg = DtmRequest {
        gid: g.clone(),
        trans_type: "msg".into(),
        steps: json!([{"action": b.url("m1")}]).to_string(),
        bin_payloads: vec![b"{}".to_vec()],
        query_prepared: b.url("qp"),
        ..Default::default()
    };
    dtm.prepare(msg.clone()).await.unwrap();
    assert_eq!(app.status(&g).await, "prepared");
    dtm.abort(msg.clone()).await.unwrap();
    assert_eq!(app.status(&g).await, "failed");
    assert!(b.paths_for(&g).is_empty());
    // preparing it again changes nothing
    let _ = dtm.prepare(msg).await;
    assert_eq!(app.status(&g).await, "failed");
    // topics: what gRPC subscribes, HTTP lists
    let topic = |url: &str| DtmTopicRequest {
        topic: "orders".into(),
        url: url.into(),
        remark: "r".into(),
    };
    dtm.subscribe(topic(&b.url("s1"))).await.unwrap();
    let (status, kv) = app.get("queryKV?cat=topics&key=orders").await;
    assert_eq!(status, 200);
    assert!(kv.to_string().contains(&b.url("s1")), "{kv}");
    dtm.unsubscribe(topic(&b.url("s1"))).await.unwrap();
    let e = dtm.unsubscribe(topic(&b.url("s1"))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    dtm.delete_topic(topic("")).await.unwrap();
    let e = dtm.delete_topic(topic("")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let (_, kv) = app.get("queryKV?cat=topics&key=orders").await;
    assert!(!kv.to_string().contains(&b.url("s1")), "{kv}");
}

#[tokio::test]
async fn tokens_guard_grpc_as_they_guard_http() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.auth.tokens = "s3cret".into();
    settings.auth.read_tokens = "peek".into();
    let app = TestApp::spawn_with(settings).await;
    let mut dtm = client(&app).await;
    let call = |token: Option<&str>| {
        let mut req = Request::new(());
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    assert_eq!(
        dtm.new_gid(call(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        dtm.new_gid(call(Some("nope"))).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        dtm.new_gid(call(Some("peek"))).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(dtm.new_gid(call(Some("s3cret"))).await.is_ok());
    // health needs no token
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&app).await);
    assert_eq!(health_of(&mut health, "").await, 1, "SERVING");
}

/// The serving status `health` reports for `service` ("" = the server).
async fn health_of(
    health: &mut tonic_health::pb::health_client::HealthClient<tonic::transport::Channel>,
    service: &str,
) -> i32 {
    let ask = tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    health.check(ask).await.unwrap().into_inner().status
}

#[tokio::test]
async fn health_turns_not_serving_on_drain_and_reflection_names_the_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.http.drain_delay_ms = 1500;
    let app = TestApp::spawn_with(settings).await;
    let mut reflection = ServerReflectionClient::new(channel(&app).await);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"dtmgimp.Dtm".to_owned()), "{names:?}");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&app).await);
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    assert_eq!(health_of(&mut health, "dtmgimp.Dtm").await, serving);
    // stop: during the drain delay the port still answers, NOT_SERVING
    let stopping = tokio::spawn(app.stop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let s = health_of(&mut health, "").await;
        if s == not_serving {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {s}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(health_of(&mut health, "dtmgimp.Dtm").await, not_serving);
    stopping.await.unwrap();
}

#[tokio::test]
async fn the_http_limits_bound_grpc_calls_too() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.http.max_body_bytes = 64 * 1024;
    settings.trans.max_branches = 3;
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let mut dtm = client(&app).await;
    // a message over http.max_body_bytes is refused before it is decoded
    let g = gid("grpc-big");
    let big = saga(&g, &b, vec![vec![7; 100 * 1024], b"{}".to_vec()], false);
    let e = dtm.submit(big).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // 2 steps are 4 rows, over trans.max_branches
    let rows = saga(&g, &b, vec![b"{}".to_vec(), b"{}".to_vec()], false);
    let e = dtm.submit(rows).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("trans.max_branches"),
        "{}",
        e.message()
    );
    assert!(app.query(&g).await["transaction"].is_null());
    assert!(b.calls().is_empty());
}

#[tokio::test]
async fn prepare_workflow_answers_the_progress_with_its_bytes() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let mut dtm = client(&app).await;
    let g = gid("grpc-wf");
    let wf = DtmRequest {
        gid: g.clone(),
        trans_type: "workflow".into(),
        customed_data: r#"{"name":"transfer","data":"CAE="}"#.into(),
        query_prepared: "127.0.0.1:1/workflow.Workflow/Execute".into(),
        ..Default::default()
    };
    let first = dtm.prepare_workflow(wf.clone()).await.unwrap().into_inner();
    assert_eq!(first.transaction.as_ref().unwrap().status, "prepared");
    assert!(first.progresses.is_empty());
    let result = vec![0x12, 0x00, 0xfe];
    dtm.register_branch(DtmBranchRequest {
        gid: g.clone(),
        trans_type: "workflow".into(),
        branch_id: "01".into(),
        op: "action".into(),
        data: [("status".to_owned(), "succeed".to_owned())].into(),
        busi_payload: result.clone(),
    })
    .await
    .unwrap();
    let again = dtm.prepare_workflow(wf).await.unwrap().into_inner();
    assert_eq!(again.transaction.unwrap().gid, g);
    assert_eq!(again.progresses.len(), 1);
    let p = &again.progresses[0];
    assert_eq!(
        (p.branch_id.as_str(), p.op.as_str(), p.status.as_str()),
        ("01", "action", "succeed")
    );
    assert_eq!(p.bin_data, result);
    // the workflow's outcome, submitted over gRPC, ends it
    let done = DtmRequest {
        gid: g.clone(),
        trans_type: "workflow".into(),
        req_extra: [("status".to_owned(), "succeed".to_owned())].into(),
        ..Default::default()
    };
    dtm.submit(done).await.unwrap();
    assert_eq!(app.status(&g).await, "succeed");
}
