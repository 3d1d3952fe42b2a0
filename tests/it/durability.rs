//! Redis restarts under load, and `--dev`.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{free_port, saga_body, Branches, DtxProcess, RedisServer, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_transaction_survives_a_redis_restart_under_load() {
    let mut redis = RedisServer::start_aof();
    let app = Arc::new(TestApp::spawn(&redis).await);
    let b = Branches::start().await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(0usize));
    // (sent, answered, acknowledged) of every submit
    let sent = Arc::new(Mutex::new(Vec::<(Instant, Instant, bool)>::new()));
    let deadline = Instant::now() + Duration::from_millis(3000);
    let mut workers = Vec::new();
    for w in 0..8 {
        let (app, b, acked, refused, sent) = (
            app.clone(),
            b.clone(),
            acked.clone(),
            refused.clone(),
            sent.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < deadline {
                let g = format!("load-{w}-{i}");
                i += 1;
                let start = Instant::now();
                let r = app
                    .http
                    .post(format!("{}/submit", app.base))
                    .json(&saga_body(&g, &b))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                let ok = matches!(r.map(|r| r.status().as_u16()), Ok(200));
                sent.lock().unwrap().push((start, Instant::now(), ok));
                if ok {
                    acked.lock().unwrap().push(g);
                } else {
                    *refused.lock().unwrap() += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // SIGKILL: only what the AOF fsynced survives (appendfsync always)
    redis.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reviving = Instant::now();
    redis.revive();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let refused = *refused.lock().unwrap();
    assert!(
        acked.len() > 100,
        "too little load: {} acknowledged",
        acked.len()
    );
    // the outage met the load: some submits were in flight while Redis was
    // down; one sent then is refused or held until Redis is back (the
    // connection's reconnect can outlast a short outage), never acknowledged
    // before
    let sent = sent.lock().unwrap().clone();
    let overlapping = sent
        .iter()
        .filter(|(start, answered, _)| *start < reviving && *answered > down)
        .count();
    assert!(overlapping > 0, "no submit was in flight during the outage");
    for (start, answered, ok) in &sent {
        if (down..reviving).contains(start) {
            assert!(
                !ok || *answered > reviving,
                "a submit sent while Redis was down was acknowledged before it was back"
            );
        }
    }
    for g in &acked {
        app.wait_status(g, "succeed", 30).await;
    }
    let calls = b.calls();
    let called: HashSet<(String, String)> = calls
        .iter()
        .map(|c| (c.query["gid"].clone(), c.path.clone()))
        .collect();
    for g in &acked {
        for path in ["a1", "a2"] {
            assert!(
                called.contains(&(g.clone(), path.to_owned())),
                "{g} never called {path}"
            );
        }
    }
    assert!(
        !calls.iter().any(|c| c.path.starts_with('c')),
        "nothing failed, so nothing may be compensated"
    );
    eprintln!(
        "acknowledged {}, refused {refused}, in flight during the outage {overlapping}",
        acked.len()
    );
}

#[tokio::test]
async fn dev_mode_starts_and_stops_its_own_redis() {
    let dir = std::env::temp_dir().join(format!("dtx-dev-test-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtx"));
    cmd.arg("--dev")
        .current_dir(&dir)
        .env("DTX_HTTP_PORT", port.to_string())
        .env("DTX_GRPC_PORT", "0")
        .env("DTX_HTTP_HOST", "127.0.0.1")
        .env("DTX_LOG_LEVEL", "warn")
        .stdout(Stdio::null());
    let mut dtx = DtxProcess::spawn(cmd, port);
    let body = json!({
        "gid": "dev-1", "trans_type": "saga", "wait_result": true,
        "steps": [{"action": "", "compensate": ""}], "payloads": [""],
    });
    assert_eq!(dtx.post("submit", &body).await, 200, "{}", dtx.log());
    let socket = dir.join(".dtx-dev/redis.sock");
    assert!(socket.exists(), "the private Redis listens in ./.dtx-dev");
    assert!(dir.join(".dtx-dev/appendonlydir").exists(), "AOF is on");
    dtx.sigterm();
    let exited = dtx.wait();
    assert!(exited.success(), "{exited:?}");
    // the child Redis is gone with it
    let client = redis::Client::open(format!("unix://{}", socket.display())).unwrap();
    assert!(
        client.get_connection().is_err(),
        "redis-server still running"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
