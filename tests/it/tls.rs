//! dtx on Redis over TLS (`rediss://`, `rediss+cluster://`,
//! `rediss+sentinel://`): servers that ask for a client certificate,
//! signed by a private CA that `redis.tls_ca_file` names; the hot path and
//! the read pool both go over TLS, and a replica that does not trust the
//! CA, shows no certificate or speaks plain TCP to a TLS port does not
//! start.

use std::time::{Duration, Instant};

use dtx::config::Settings;
use dtx::store::Store;

use crate::support::{
    gid, prefix, saga_body, test_settings, Branches, Certs, RedisCluster, RedisSentinel,
    RedisServer, Reply, TestApp,
};

/// Test settings on `url` trusting `certs`' CA and showing its client
/// certificate.
fn tls_settings(url: &str, certs: &Certs) -> Settings {
    let mut s = test_settings(url, &prefix());
    s.redis.tls_ca_file = certs.file("ca.pem");
    s.redis.tls_cert_file = certs.file("client.pem");
    s.redis.tls_key_file = certs.file("client.key");
    s
}

/// Why `Store::connect` refuses `s`, which it must.
async fn refusal(s: &Settings) -> String {
    match Store::connect(&s.redis, 60).await {
        Ok(_) => panic!("the store connected"),
        Err(e) => e.to_string(),
    }
}

/// A saga that commits and one that rolls back, then every gid listed
/// (the read pool's connections): what each TLS deployment must serve.
async fn commit_rollback_and_list(app: &TestApp) {
    let b = Branches::start().await;
    let ok = gid("tls-ok");
    assert_eq!(app.post("submit", &saga_body(&ok, &b)).await.0, 200);
    app.wait_status(&ok, "succeed", 10).await;
    b.script("a2", &[Reply::Failure]);
    let rolled = gid("tls-rollback");
    assert_eq!(app.post("submit", &saga_body(&rolled, &b)).await.0, 200);
    app.wait_status(&rolled, "failed", 10).await;
    assert_eq!(b.paths_for(&ok), ["a1", "a2"]);
    assert_eq!(b.paths_for(&rolled), ["a1", "a2", "c2", "c1"]);
    assert_eq!(app.all_gids(7).await, [rolled, ok]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_redis_over_tls_serves_and_an_untrusting_replica_does_not_start() {
    let certs = Certs::new();
    let redis = RedisServer::start_tls(&certs);
    let settings = tls_settings(&redis.tls_url(), &certs);
    let prefix = settings.redis.key_prefix.clone();
    let app = TestApp::spawn_with(settings.clone()).await;
    commit_rollback_and_list(&app).await;
    assert!(
        !redis.keys(&prefix).is_empty(),
        "the state is on this server"
    );
    app.stop().await;

    // the system's roots do not hold the private CA
    let mut untrusting = settings.clone();
    untrusting.redis.tls_ca_file.clear();
    let why = refusal(&untrusting).await;
    assert!(why.contains("certificate"), "{why}");
    // the server asks for a client certificate
    let mut anonymous = settings.clone();
    anonymous.redis.tls_cert_file.clear();
    anonymous.redis.tls_key_file.clear();
    refusal(&anonymous).await;
    // plain TCP to the TLS port
    let mut plain = settings.clone();
    plain.redis.url = plain.redis.url.replace("rediss://", "redis://");
    plain.redis.tls_ca_file.clear();
    plain.redis.tls_cert_file.clear();
    plain.redis.tls_key_file.clear();
    refusal(&plain).await;
    // a CA file that is not there is named
    let mut missing = settings.clone();
    missing.redis.tls_ca_file = certs.file("no-such-ca.pem");
    let why = refusal(&missing).await;
    assert!(
        why.contains("redis.tls_ca_file") && why.contains("no-such-ca.pem"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_serves_and_lists_every_master() {
    let certs = Certs::new();
    let cluster = RedisCluster::start_tls(3, 0, &certs);
    let settings = tls_settings(&cluster.tls_url(), &certs);
    let prefix = settings.redis.key_prefix.clone();
    let app = TestApp::spawn_with(settings.clone()).await;
    commit_rollback_and_list(&app).await;
    // enough sagas to reach every master, all listed through the pool
    let b = Branches::start().await;
    for i in 0..30 {
        let mut body = saga_body(&gid(&format!("tls-spread{i}")), &b);
        body["wait_result"] = serde_json::json!(true);
        assert_eq!(app.post("submit", &body).await.0, 200);
    }
    assert_eq!(app.all_gids(7).await.len(), 32);
    let holding: Vec<usize> = cluster
        .masters()
        .iter()
        .map(|m| m.keys(&prefix).len())
        .collect();
    assert!(holding.iter().all(|&n| n > 0), "{holding:?}");
    app.stop().await;
    let mut untrusting = settings;
    untrusting.redis.tls_ca_file.clear();
    refusal(&untrusting).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_sentinel_over_tls_dtx_follows_the_master_through_a_failover() {
    let certs = Certs::new();
    let mut set = RedisSentinel::start_tls(&certs);
    let settings = tls_settings(&set.tls_url(), &certs);
    let app = TestApp::spawn_with(settings.clone()).await;
    commit_rollback_and_list(&app).await;

    let old = set.primary.tls_port;
    set.primary.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    while set.master_port() == old || set.master_port().is_none() {
        assert!(Instant::now() < deadline, "the sentinels promoted no one");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(set.master_port(), set.replica.tls_port);
    // the next saga finds the new master (over TLS) once dtx follows
    let b = Branches::start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        // a new gid each time: a refused submit may have been written
        let g = gid("tls-after-failover");
        if app.post("submit", &saga_body(&g, &b)).await.0 == 200 {
            break g;
        }
        assert!(
            Instant::now() < deadline,
            "dtx never followed the new master"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    app.wait_status(&after, "succeed", 10).await;
    assert_eq!(b.paths_for(&after), ["a1", "a2"]);
    assert!(!set.replica.keys(&settings.redis.key_prefix).is_empty());
    app.stop().await;
}
