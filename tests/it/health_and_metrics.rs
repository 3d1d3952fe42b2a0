//! Operations: metrics after known traffic, health, and drain under load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{gid, prefix, saga_body, start_dtx, Branches, RedisServer, Reply};

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test]
async fn metrics_count_known_traffic_with_bounded_labels() {
    let redis = RedisServer::start();
    let dtx = start_dtx(&redis, &prefix(), &[]);
    let b = Branches::start().await;
    b.script("a2", &[Reply::Failure]);
    let http = reqwest::Client::new();
    let mut gids = Vec::new();
    for i in 0..3 {
        let g = gid(&format!("metrics{i}"));
        let mut body = saga_body(&g, &b);
        body["wait_result"] = json!(true);
        http.post(format!("{}/api/dtmsvr/submit", dtx.root))
            .json(&body)
            .send()
            .await
            .unwrap();
        gids.push(g);
    }
    let r = http
        .get(format!("{}/api/metrics", dtx.root))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let page = r.text().await.unwrap();
    let get = |name: &str, labels: &[(&str, &str)]| sample(&page, name, labels);
    assert_eq!(
        get("dtx_transactions_started_total", &[("trans_type", "saga")]),
        Some(3.0)
    );
    assert_eq!(
        get(
            "dtx_transactions_finished_total",
            &[("trans_type", "saga"), ("outcome", "succeed")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            "dtx_transactions_finished_total",
            &[("trans_type", "saga"), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    // 3 x a1, 2 x a2 succeed; one a2 fails; c2 and c1 compensate
    assert_eq!(
        get(
            "dtx_branch_calls_total",
            &[("op", "action"), ("outcome", "succeeded")]
        ),
        Some(5.0)
    );
    assert_eq!(
        get(
            "dtx_branch_calls_total",
            &[("op", "action"), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "dtx_branch_calls_total",
            &[("op", "compensate"), ("outcome", "succeeded")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            "dtx_branch_call_duration_seconds_count",
            &[("op", "action")]
        ),
        Some(6.0)
    );
    assert_eq!(
        get(
            "dtx_redis_script_calls_total",
            &[("script", "create_trans"), ("outcome", "ok")]
        ),
        Some(3.0)
    );
    // two successes: one final record each; the rollback: aborting + failed
    assert_eq!(
        get(
            "dtx_redis_script_calls_total",
            &[("script", "record"), ("outcome", "ok")]
        ),
        Some(4.0)
    );
    assert_eq!(
        get(
            "dtx_http_requests_total",
            &[("route", "/api/dtmsvr/submit"), ("status", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            "dtx_http_requests_total",
            &[("route", "/api/dtmsvr/submit"), ("status", "409")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "dtm_server_process_total",
            &[("type", "http"), ("api", "submit"), ("status", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            "dtm_branch_process_total",
            &[
                ("model", "saga"),
                ("branchtype", "action"),
                ("status", "ok")
            ]
        ),
        Some(5.0)
    );
    assert_eq!(
        get("dtx_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    assert!(get(
        "dtx_transaction_duration_seconds_bucket",
        &[("outcome", "succeed"), ("le", "+Inf")]
    )
    .is_some());
    // no unbounded label anywhere: no gid, no branch URL
    for g in &gids {
        assert!(!page.contains(g.as_str()), "a gid leaked into a label");
    }
    assert!(!page.contains("127.0.0.1"), "a URL leaked into a label");
    // the backlog gauges appear per shard (maintenance runs every second)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let page = http
        .get(format!("{}/api/metrics", dtx.root))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shard in 0..4 {
        let s = shard.to_string();
        assert_eq!(
            sample(&page, "dtx_due_backlog", &[("shard", &s)]),
            Some(0.0),
            "{page}"
        );
        assert_eq!(
            sample(&page, "dtx_oldest_overdue_seconds", &[("shard", &s)]),
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn readiness_turns_off_at_sigterm_before_the_port_closes() {
    let redis = RedisServer::start();
    let mut dtx = start_dtx(&redis, &prefix(), &[("DTX_HTTP_DRAIN_DELAY_MS", "1500")]);
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{}{path}", dtx.root));
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(get("/livez").await, 200);
    assert_eq!(get("/readyz").await, 200);
    dtx.sigterm();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get("/readyz").await, 503, "readiness must turn off at once");
    assert_eq!(
        get("/livez").await,
        200,
        "still alive and serving during the delay"
    );
    assert_eq!(get("/api/dtmsvr/version").await, 200);
    let status = dtx.wait();
    assert!(status.success(), "{status:?}");
    // a Redis that is away makes it unready too
    let mut redis = RedisServer::start();
    let dtx = start_dtx(&redis, &prefix(), &[]);
    let url = format!("{}/readyz", dtx.root);
    redis.kill();
    let code = http.get(&url).send().await.unwrap().status().as_u16();
    assert_eq!(code, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    let redis = RedisServer::start();
    let p = prefix();
    let r1 = start_dtx(
        &redis,
        &p,
        &[
            ("DTX_HTTP_DRAIN_DELAY_MS", "500"),
            ("DTX_SCHEDULER_DRAIN_TIMEOUT_MS", "300"),
        ],
    );
    let r2 = start_dtx(&redis, &p, &[]);
    let b = Branches::start().await;
    b.set_default("a1", Reply::Slow(200));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_millis(2500);
    let mut workers = Vec::new();
    for w in 0..6 {
        let (root, b, acked) = (r1.root.clone(), b.clone(), acked.clone());
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while Instant::now() < stop_at {
                let g = format!("drainload-{w}-{i}");
                i += 1;
                let r = http
                    .post(format!("{root}/api/dtmsvr/submit"))
                    .json(&saga_body(&g, &b))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push(g),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    r1.sigterm();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "{} acknowledged", acked.len());
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for g in &acked {
        loop {
            let q: serde_json::Value = http
                .get(format!("{}/api/dtmsvr/query?gid={g}", r2.root))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if q["transaction"]["status"] == "succeed" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{g} is {}",
                q["transaction"]["status"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // one pass over the call log: thousands of sagas are acknowledged
    let mut a2_calls: HashMap<String, usize> = HashMap::new();
    for c in b.calls().into_iter().filter(|c| c.path == "a2") {
        if let Some(g) = c.query.get("gid") {
            *a2_calls.entry(g.clone()).or_default() += 1;
        }
    }
    for g in &acked {
        assert_eq!(a2_calls.get(g).copied().unwrap_or(0), 1, "{g}");
    }
}
