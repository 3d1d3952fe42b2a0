//! What a hostile or careless client or branch must not be able to do:
//! follow redirects past the allow-list, pin every call slot, fill memory
//! with a reply, grow the metric series.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    cpu_us, gid, peak_rss_kib, prefix, saga_body, start_dtx, test_settings, wait_status_at,
    Branches, RedisServer, Reply, TestApp,
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

#[tokio::test]
async fn a_huge_branch_reply_is_read_only_in_part() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    // 256 MiB of spaces: a 200, so the saga succeeds on the status alone
    b.set_default("a1", Reply::Stream(200, 256 << 20));
    let mut dtx = start_dtx(&redis, &prefix(), &[]);
    let g = gid("huge");
    assert_eq!(dtx.post("submit", &saga_body(&g, &b)).await, 200);
    wait_status_at(&dtx, &g, "succeed", 20).await;
    let peak = peak_rss_kib(dtx.pid());
    dtx.kill();
    assert!(peak < 100 * 1024, "dtx peaked at {peak} KiB");
}

#[tokio::test]
async fn junk_methods_share_one_metric_label() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let root = app.root();
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
    let text = app.metrics().await;
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
    let before = redis.data_keys(&app.prefix);
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
    assert_eq!(
        redis.data_keys(&app.prefix),
        before,
        "a refused submit wrote"
    );
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

#[tokio::test]
async fn one_transaction_holds_bounded_rows_and_bytes() {
    let redis = RedisServer::start();
    let b = Branches::start().await;
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.trans.max_branches = 10;
    settings.trans.max_payload_bytes = 1000;
    settings.trans.max_topic_subscribers = 3;
    let app = TestApp::spawn_with(settings).await;
    for i in 0..3 {
        let (status, r) = app
            .get(&format!(
                "subscribe?topic=t&url={}",
                b.url(&format!("s{i}"))
            ))
            .await;
        assert_eq!(status, 200, "{r}");
    }
    let (status, r) = app
        .get(&format!("subscribe?topic=t&url={}", b.url("s3")))
        .await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("trans.max_topic_subscribers"));
    let before = redis.data_keys(&app.prefix);
    let msg = |steps: usize, payload: usize| {
        json!({
            "gid": gid("fanout"),
            "trans_type": "msg",
            "query_prepared": b.url("qp"),
            "steps": (0..steps).map(|_| json!({"action": "topic://t"})).collect::<Vec<_>>(),
            "payloads": (0..steps).map(|_| "x".repeat(payload)).collect::<Vec<_>>(),
        })
    };
    // 4 topic steps of 3 subscribers: 12 rows
    let (status, r) = app.post("prepare", &msg(4, 1)).await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("trans.max_branches"));
    // 3 steps: 9 rows of 200 bytes
    let (status, r) = app.post("submit", &msg(3, 200)).await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("trans.max_payload_bytes"));
    // a saga of 6 steps: 12 rows
    let saga = json!({
        "gid": gid("rows"), "trans_type": "saga",
        "steps": (0..6).map(|i| json!({"action": b.url(&format!("a{i}")), "compensate": ""})).collect::<Vec<_>>(),
        "payloads": (0..6).map(|_| "{}").collect::<Vec<_>>(),
    });
    let (status, r) = app.post("submit", &saga).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(redis.data_keys(&app.prefix), before, "a refused call wrote");
    // within the bounds
    let (status, r) = app.post("prepare", &msg(3, 10)).await;
    assert_eq!(status, 200, "{r}");
    // registerBranch counts too: a tcc branch is two rows
    let g = gid("tcc-rows");
    let (status, r) = app
        .post("prepare", &json!({"gid": g, "trans_type": "tcc"}))
        .await;
    assert_eq!(status, 200, "{r}");
    let register = |id: usize| {
        json!({"gid": g, "trans_type": "tcc", "branch_id": format!("{id:02}"),
               "confirm": b.url("cf"), "cancel": b.url("cn"), "data": "{}"})
    };
    for id in 1..=5 {
        let (status, r) = app.post("registerBranch", &register(id)).await;
        assert_eq!(status, 200, "{r}");
    }
    let (status, r) = app.post("registerBranch", &register(6)).await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"]
        .as_str()
        .unwrap()
        .contains("trans.max_branches"));
    assert_eq!(
        app.query(&g).await["branches"].as_array().unwrap().len(),
        10
    );
}

/// Where a transaction of each kind can be, as its clients and dtx move it.
fn reachable(kind: dtx::domain::TransKind) -> &'static [dtx::domain::GlobalStatus] {
    use dtx::domain::{GlobalStatus as S, TransKind as K};
    match kind {
        K::Saga => &[S::Submitted, S::Aborting, S::Succeed, S::Failed],
        K::Msg => &[S::Prepared, S::Submitted, S::Succeed, S::Failed],
        K::Tcc | K::Xa => &[
            S::Prepared,
            S::Submitted,
            S::Aborting,
            S::Succeed,
            S::Failed,
        ],
        K::Workflow => &[S::Prepared, S::Succeed, S::Failed],
    }
}

#[tokio::test]
async fn every_api_event_follows_the_transition_table() {
    use dtx::domain::{next, Event, Op, TransKind};
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    // branches hang, so a pass an event starts cannot move the status on
    let b = Branches::start().await;
    b.set_default("hang", Reply::Slow(60_000));
    let store = &app.engine.store;
    let mut checked = 0;
    for stored in TransKind::ALL {
        for &status in reachable(stored) {
            for named in TransKind::ALL {
                for event in [Event::Submit, Event::Abort, Event::ForceStop] {
                    let g = gid("walk");
                    let now = app.engine.now_ms();
                    let mut t = dtx::domain::Trans {
                        gid: g.clone(),
                        kind: stored,
                        status,
                        create_ms: now,
                        update_ms: now,
                        finish_ms: None,
                        rollback_ms: None,
                        next_ms: None,
                        attempt: 0,
                        reason: String::new(),
                        opts: Default::default(),
                        custom_data: String::new(),
                        query_prepared: b.url("hang"),
                        protocol: String::new(),
                        result: String::new(),
                        owner: String::new(),
                        last_error: String::new(),
                        last_branch: String::new(),
                        trace: None,
                        branches: Vec::new(),
                    };
                    for op in [
                        Op::Compensate,
                        Op::Action,
                        Op::Cancel,
                        Op::Confirm,
                        Op::Rollback,
                        Op::Commit,
                    ] {
                        t.branches.push(dtx::domain::Branch {
                            id: "01".into(),
                            op,
                            url: b.url("hang"),
                            data: "{}".into(),
                            status: dtx::domain::BranchStatus::Prepared,
                            seq: t.branches.len() as u32,
                            update_ms: now,
                        });
                    }
                    store.create_trans(&t, 1, None).await.unwrap();
                    let (route, body) = match event {
                        Event::Submit if named == TransKind::Workflow => (
                            "submit",
                            json!({"gid": g, "trans_type": "workflow",
                                   "req_extra": {"status": "succeed"}}),
                        ),
                        Event::Submit => (
                            "submit",
                            json!({"gid": g, "trans_type": named.as_str(),
                                   "steps": [{"action": b.url("hang"), "compensate": b.url("hang")}],
                                   "payloads": ["{}"]}),
                        ),
                        Event::Abort => ("abort", json!({"gid": g, "trans_type": named.as_str()})),
                        _ => ("forceStop", json!({"gid": g})),
                    };
                    let table_event = match (event, named) {
                        (Event::Submit, TransKind::Workflow) => Event::ClientSucceeded,
                        (e, _) => e,
                    };
                    // forceStop names no kind
                    let matches = named == stored || event == Event::ForceStop;
                    let want = next(stored, status, table_event).ok().filter(|_| matches);
                    let (code, reply) = app.post(route, &body).await;
                    let after = app.status(&g).await;
                    let case = format!(
                        "{stored} {status} {route} as {named}: {code} {reply}, now {after}"
                    );
                    match want {
                        Some(to) => {
                            assert_eq!(code, 200, "{case}");
                            assert_eq!(after, to.as_str(), "{case}");
                        }
                        None => {
                            assert!(matches!(code, 400 | 409), "{case}");
                            assert_eq!(after, status.as_str(), "{case}");
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    // 21 reachable (kind, status) pairs, 5 named kinds, 3 events
    assert_eq!(checked, 21 * 5 * 3);
}

#[tokio::test]
async fn register_branch_must_name_the_stored_kind() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let g = gid("wf");
    let (status, r) = app
        .post(
            "prepareWorkflow",
            &json!({"gid": g, "trans_type": "workflow", "query_prepared": b.url("cb")}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let before = redis.data_keys(&app.prefix);
    let (status, r) = app
        .post(
            "registerBranch",
            &json!({"gid": g, "trans_type": "tcc", "branch_id": "01",
                    "confirm": b.url("cf"), "cancel": b.url("cn"), "data": "{}"}),
        )
        .await;
    assert_eq!(status, 400, "{r}");
    assert!(r["message"].as_str().unwrap().contains("workflow"), "{r}");
    // the wedge of the review: a msg submit on a prepared workflow
    let (status, r) = app
        .post("submit", &json!({"gid": g, "trans_type": "msg"}))
        .await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(app.status(&g).await, "prepared");
    assert_eq!(redis.data_keys(&app.prefix), before);
    assert!(app.query(&g).await["branches"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn cross_site_requests_are_refused_and_change_nothing() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.http.allowed_origins = "https://ops.example".into();
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let root = app.root();
    let before = redis.data_keys(&app.prefix);
    let subscribe = format!("{}/subscribe?topic=t&url={}", app.base, b.url("s"));
    let g = gid("csrf");
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("origin", "http://evil.example"),
        ("origin", "null"),
    ] {
        let r = app
            .http
            .get(&subscribe)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{name}: {value}");
        let r = app
            .http
            .post(format!("{}/submit", app.base))
            .header(name, value)
            .header("content-type", "text/plain")
            .body(saga_body(&g, &b).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{name}: {value}");
    }
    assert_eq!(
        redis.data_keys(&app.prefix),
        before,
        "a cross-site call wrote"
    );
    // dtx's own pages, a listed origin, and clients that send neither header
    let own = root.clone();
    for headers in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![("origin", "https://ops.example")],
        vec![],
    ] {
        let mut req = app.http.get(format!("{}/all", app.base));
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        assert_eq!(
            req.send().await.unwrap().status().as_u16(),
            200,
            "{headers:?}"
        );
    }
    let r = app.http.get(&subscribe).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn json_rpc_errors_hide_internal_detail_as_http_does() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let g = gid("corrupt");
    // a record no replica can decode
    let key = app.engine.store.keys().trans(&g).trans;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("status")
        .arg("secret-internal-state")
        .arg("kind")
        .arg("saga")
        .query(&mut redis.conn())
        .unwrap();
    let (status, http) = app
        .post("abort", &json!({"gid": g, "trans_type": "saga"}))
        .await;
    assert_eq!(status, 500, "{http}");
    let root = app.root();
    let rpc: serde_json::Value = app
        .http
        .post(format!("{root}/api/json-rpc"))
        .json(&json!({"jsonrpc": "2.0", "id": "1", "method": "abort",
                      "params": {"gid": g, "trans_type": "saga"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rpc["error"]["code"], -32603, "{rpc}");
    assert_eq!(rpc["error"]["message"], http["message"], "{rpc}");
    assert!(!rpc.to_string().contains("secret-internal-state"), "{rpc}");
}

/// Reads from `stream` until it closes; panics if it stays open `secs`.
async fn closed_within(stream: &mut tokio::net::TcpStream, secs: u64, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(secs), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{what}: still open after {secs} s");
    got
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.http.header_read_timeout_ms = 500;
    let app = TestApp::spawn_with(settings).await;
    let addr = app
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/dtmsvr")
        .to_owned();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST /api/dtmsvr/submit HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_within(&mut half, 3, "a half-sent head").await;
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut idle, 3, "an idle keep-alive connection").await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn sigterm_ends_on_time_with_a_connection_left_open() {
    use tokio::io::AsyncWriteExt;
    let redis = RedisServer::start();
    let mut dtx = start_dtx(
        &redis,
        &prefix(),
        &[
            ("DTX_SCHEDULER_DRAIN_TIMEOUT_MS", "1000"),
            ("DTX_HTTP_HEADER_READ_TIMEOUT_MS", "60000"),
        ],
    );
    let addr = dtx
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/dtmsvr")
        .to_owned();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    dtx.sigterm();
    loop {
        if dtx.try_wait().is_some() {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(6),
            "dtx still runs 6 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(half);
}

#[tokio::test]
async fn an_undecodable_transaction_is_set_aside_and_stops_no_other() {
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let b = Branches::start().await;
    let keys = app.engine.store.keys().clone();
    let bad = gid("bad");
    let shard = keys.shard_of(&bad);
    let same_shard = |name: &str| loop {
        let g = gid(name);
        if keys.shard_of(&g) == shard {
            return g;
        }
    };
    let msgs = [same_shard("small"), same_shard("small")];
    for g in &msgs {
        let body = json!({"gid": g, "trans_type": "msg", "query_prepared": b.url("qp"),
                          "timeout_to_fail": 1, "steps": [{"action": b.url("step")}],
                          "payloads": ["{}"]});
        let (status, r) = app.post("prepare", &body).await;
        assert_eq!(status, 200, "{r}");
    }
    // a record no replica can decode, due in the same shard before them
    let k = keys.trans(&bad);
    let mut c = redis.conn();
    let _: () = redis::cmd("HSET")
        .arg(&k.trans)
        .arg(&[
            ("status", "submitted"),
            ("kind", "saga"),
            ("epoch", "1"),
            ("attempt", "many"),
        ])
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(keys.due(shard))
        .arg(0)
        .arg(&bad)
        .query(&mut c)
        .unwrap();
    for g in &msgs {
        app.wait_status(g, "succeed", 10).await;
        assert_eq!(b.paths_for(g), ["qp", "step"]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = app.attention().await;
        let aside = list["set_aside"].as_array().unwrap();
        if let Some(entry) = aside.iter().find(|e| e["gid"] == bad) {
            assert!(
                entry["error"].as_str().unwrap().contains("attempt"),
                "{entry}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let due: Option<f64> = redis::cmd("ZSCORE")
        .arg(keys.due(shard))
        .arg(&bad)
        .query(&mut c)
        .unwrap();
    assert_eq!(due, None, "a set-aside transaction is no longer claimed");
    let metrics = app.metrics().await;
    assert!(metrics.contains("dtx_trans_set_aside_total"), "{metrics}");
}

#[tokio::test]
async fn a_redis_timeout_on_create_says_the_write_may_have_landed() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.redis.response_timeout_ms = 300;
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let g = gid("slow-redis");
    let body = json!({"gid": g, "trans_type": "msg", "query_prepared": b.url("qp"),
                      "steps": [{"action": b.url("step")}], "payloads": ["{}"]});
    let url = redis.url();
    let sleeper = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1)
            .query(&mut c)
            .unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, r) = app.post("prepare", &body).await;
    sleeper.join().unwrap();
    assert_eq!(status, 504, "{r}");
    assert!(r["message"].as_str().unwrap().contains("repeat"), "{r}");
    // it did land; repeating is safe
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.status(&g).await, "prepared");
    let (status, r) = app.post("prepare", &body).await;
    assert_eq!(status, 200, "{r}");
}

#[tokio::test]
async fn a_padded_concurrent_saga_is_planned_cheaply() {
    let redis = RedisServer::start();
    let dtx = start_dtx(&redis, &prefix(), &[]);
    // the most steps a saga may have, chained, every order padded with
    // duplicate dependencies up to the body limit; empty URLs, so nothing
    // but planning costs anything
    let steps = 1000;
    let pad = 440;
    let mut orders = serde_json::Map::new();
    for i in 1..steps {
        let mut deps = vec![i - 1];
        deps.extend(std::iter::repeat_n(0, pad));
        orders.insert(i.to_string(), json!(deps));
    }
    let custom = json!({"concurrent": true, "orders": orders}).to_string();
    let g = gid("padded");
    let body = json!({
        "gid": g, "trans_type": "saga", "custom_data": custom, "wait_result": true,
        "steps": (0..steps).map(|_| json!({"action": "", "compensate": ""})).collect::<Vec<_>>(),
        "payloads": (0..steps).map(|_| "").collect::<Vec<_>>(),
    });
    let size = body.to_string().len();
    assert!((900_000..1_048_576).contains(&size), "{size} bytes");
    let before = cpu_us(dtx.pid());
    // wait_result: no polling reads (each would copy the 900 KB back)
    assert_eq!(dtx.post("submit", &body).await, 200);
    let used = (cpu_us(dtx.pid()) - before) as f64 / 1e6;
    wait_status_at(&dtx, &g, "succeed", 5).await;
    eprintln!("padded saga: {used:.2} s of CPU");
    // a debug build, run beside the other tests: 0.4-0.6 s here; the
    // quadratic planning this guards against cost 5.2 s on a release build
    assert!(used < 1.5, "the saga cost {used:.2} s of CPU");
}
