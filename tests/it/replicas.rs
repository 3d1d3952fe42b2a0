//! Several replicas on one Redis, as real processes.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    free_port, gid, prefix, saga_body, start_dtx, wait_status_at, Branches, RedisServer, Reply,
    StatusSource,
};

#[tokio::test]
async fn two_replicas_finish_every_transaction_once() {
    let redis = RedisServer::start();
    let p = prefix();
    let r1 = start_dtx(&redis, &p, &[]);
    let r2 = start_dtx(&redis, &p, &[]);
    let b = Branches::start().await;
    // some branches need a retry, which any replica may pick up
    b.script("a2", &[Reply::Error, Reply::Error, Reply::Error]);
    let mut gids = Vec::new();
    for i in 0..60 {
        let g = gid(&format!("rep{i}"));
        let r = if i % 2 == 0 { &r1 } else { &r2 };
        assert_eq!(r.post("submit", &saga_body(&g, &b)).await, 200);
        gids.push(g);
    }
    for g in &gids {
        wait_status_at(&r1, g, "succeed", 15).await;
    }
    for g in &gids {
        let paths = b.paths_for(g);
        let a1 = paths.iter().filter(|p| *p == "a1").count();
        assert_eq!(a1, 1, "{g}: {paths:?}");
        assert!(!paths.iter().any(|p| p.starts_with('c')), "{g}: {paths:?}");
    }
    // without failures every branch ran exactly once: 60 a1 + 60 a2 + 3 retries
    assert_eq!(b.calls().len(), 123);
}

#[tokio::test]
async fn a_killed_replicas_transaction_is_finished_by_another() {
    let redis = RedisServer::start();
    let p = prefix();
    let mut r1 = start_dtx(&redis, &p, &[]);
    let r2 = start_dtx(&redis, &p, &[]);
    let b = Branches::start().await;
    // the first action is slow, so r1 dies in the middle of it
    b.script("a1", &[Reply::Slow(800)]);
    let g = gid("killed");
    let body = saga_body(&g, &b);
    let http = reqwest::Client::new();
    let url = format!("{}/submit", r1.base);
    let submitted = tokio::spawn(async move {
        http.post(url)
            .json(&body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(submitted.await.unwrap().unwrap(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed_at = Instant::now();
    r1.kill();
    wait_status_at(&r2, &g, "succeed", 10).await;
    let took = killed_at.elapsed();
    // lease 1.5 s plus the recheck and the slow call
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let paths = b.paths_for(&g);
    assert_eq!(
        paths,
        ["a1", "a1", "a2"],
        "a1 is called again (idempotent), a2 once"
    );
}

#[tokio::test]
async fn a_paused_replica_whose_lease_was_taken_cannot_write() {
    let redis = RedisServer::start();
    let p = prefix();
    let r1 = start_dtx(&redis, &p, &[]);
    let r2 = start_dtx(&redis, &p, &[]);
    let b = Branches::start().await;
    // r1's call of a1 will succeed; r2's, after taking over, is refused later
    b.script(
        "a1",
        &[
            Reply::Slow(1000),
            Reply::Delayed(2000, 409, "{\"dtm_result\":\"FAILURE\"}".into()),
        ],
    );
    b.set_default("a2", Reply::Success);
    let g = gid("fenced");
    assert_eq!(r1.post("submit", &saga_body(&g, &b)).await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    r1.signal("STOP");
    // r1's lease (1.5 s) runs out while it is stopped; r2 claims and calls a1 again
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.paths_for(&g).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.paths_for(&g), ["a1", "a1"], "r2 did not take over");
    // r1 wakes up: it sees a1 succeed and would finish the saga as succeed,
    // while the status is still `submitted`; only the epoch stops it
    r1.signal("CONT");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = r2.status_of(&g).await;
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "failed" || s == "succeed" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("failed"),
        "statuses seen: {seen:?}, calls {:?}",
        b.paths_for(&g)
    );
    assert!(!seen.iter().any(|s| s == "succeed"), "{seen:?}");
    let paths = b.paths_for(&g);
    assert!(paths.ends_with(&["c1".to_owned()]), "{paths:?}");
}

#[tokio::test]
async fn sigterm_drains_and_hands_leases_back() {
    let redis = RedisServer::start();
    let p = prefix();
    let mut r1 = start_dtx(&redis, &p, &[]);
    let r2 = start_dtx(&redis, &p, &[]);
    let b = Branches::start().await;
    let mut gids = Vec::new();
    b.set_default("a1", Reply::Slow(300));
    for i in 0..10 {
        let g = gid(&format!("drain{i}"));
        assert_eq!(r1.post("submit", &saga_body(&g, &b)).await, 200);
        gids.push(g);
    }
    r1.sigterm();
    for g in &gids {
        wait_status_at(&r2, g, "succeed", 10).await;
    }
    let status = r1.wait();
    assert!(status.success(), "{status:?}");
    for g in &gids {
        assert_eq!(b.paths_for(g).iter().filter(|p| *p == "a2").count(), 1);
    }
}

#[tokio::test]
async fn sigterm_past_the_drain_deadline_hands_leases_back_at_once() {
    let redis = RedisServer::start();
    let p = prefix();
    // long leases: only a hand-back lets r2 resume within seconds
    let slow = [
        ("DTX_SCHEDULER_LEASE_MS", "30000"),
        ("DTX_SCHEDULER_DRAIN_TIMEOUT_MS", "300"),
    ];
    let mut r1 = start_dtx(&redis, &p, &slow);
    let r2 = start_dtx(&redis, &p, &slow);
    let b = Branches::start().await;
    b.script("a1", &[Reply::Slow(5000)]);
    let g = gid("handback");
    assert_eq!(r1.post("submit", &saga_body(&g, &b)).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped_at = Instant::now();
    r1.sigterm();
    let status = r1.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(4),
        "drain took {:?}",
        stopped_at.elapsed()
    );
    wait_status_at(&r2, &g, "succeed", 8).await;
    assert!(stopped_at.elapsed() < Duration::from_secs(9));
    assert_eq!(b.paths_for(&g), ["a1", "a1", "a2"]);
}

#[tokio::test]
async fn startup_failures_are_one_clear_line() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("volatile-lru")
        .query(&mut redis.conn())
        .unwrap();
    for (url, expect) in [
        (redis.url(), "maxmemory-policy volatile-lru"),
        ("redis://127.0.0.1:1".to_owned(), "cannot reach Redis"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dtx"))
            .env("DTX_REDIS_URL", &url)
            .env("DTX_HTTP_PORT", free_port().to_string())
            .env("DTX_LOG_LEVEL", "error")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("dtx: "))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(expect), "{line}");
    }
    // a Redis that refuses scripts
    let locked = RedisServer::start();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-script")
        .query(&mut locked.conn())
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dtx"))
        .env("DTX_REDIS_URL", locked.url())
        .env("DTX_HTTP_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dtx: Redis refused script lua/"), "{err}");
    let _ = json!(null);
}
