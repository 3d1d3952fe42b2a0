//! Durable acknowledgement (`redis.min_replicas_ack`): an acknowledged
//! create or submit is already on a replica; one the replicas do not
//! confirm in time answers 503 and is still driven to its end.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{gid, prefix, saga_body, test_settings, Branches, RedisServer, TestApp};

fn signal(redis: &RedisServer, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &redis.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether `replica` holds the trans hash of `g` under `prefix`.
fn on_replica(replica: &RedisServer, prefix: &str, g: &str) -> bool {
    let suffix = format!(":t:{g}");
    replica.keys(prefix).iter().any(|k| k.ends_with(&suffix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_submit_is_on_the_replica_and_an_unconfirmed_one_answers_503() {
    let primary = RedisServer::start_aof();
    let replica = RedisServer::start_replica_of(&primary);
    let prefix = prefix();
    let mut settings = test_settings(&primary.url(), &prefix);
    settings.redis.min_replicas_ack = 1;
    settings.redis.ack_timeout_ms = 300;
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;

    // every acknowledged submit is on the replica when its 200 arrives
    for i in 0..20 {
        let g = gid(&format!("acked{i}"));
        let (status, reply) = app.post("submit", &saga_body(&g, &b)).await;
        assert_eq!(status, 200, "{reply}");
        assert!(
            on_replica(&replica, &prefix, &g),
            "{g} acknowledged but not on the replica"
        );
    }
    // a msg prepared now is submitted (a status change) while the replica is stopped
    let msg = gid("msg");
    let body = serde_json::json!({
        "gid": msg, "trans_type": "msg",
        "steps": [{"action": b.url("m1")}], "payloads": ["{}"],
        "query_prepared": b.url("qp"),
    });
    assert_eq!(app.post("prepare", &body).await.0, 200);

    // the replica stops answering: creates and submits are not confirmed
    signal(&replica, "-STOP");
    let g = gid("unconfirmed");
    let started = Instant::now();
    let (status, reply) = app.post("submit", &saga_body(&g, &b)).await;
    assert_eq!(status, 503, "{reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("confirmed by 0 of 1 replicas") && message.contains("repeat the call"),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(300 + 2000),
        "answered after the ack timeout, not the response timeout"
    );
    let (status, reply) = app.post("submit", &body).await;
    assert_eq!(status, 503, "the msg's submit: {reply}");

    // what was written is driven on all the same
    app.wait_status(&g, "succeed", 15).await;
    app.wait_status(&msg, "succeed", 15).await;
    assert_eq!(b.paths_for(&g), ["a1", "a2"]);
    assert_eq!(b.paths_for(&msg), ["m1"]);

    // back: acknowledged again, and the unconfirmed ones reach the replica
    signal(&replica, "-CONT");
    let g2 = gid("after");
    let (status, reply) = app.post("submit", &saga_body(&g2, &b)).await;
    assert_eq!(status, 200, "{reply}");
    assert!(on_replica(&replica, &prefix, &g2));
    assert!(on_replica(&replica, &prefix, &g));
}
