//! etcd discovery (contract §7.3, go-zero's layout): `etcd://` branch
//! targets resolve to the live endpoints under their key, round robin and
//! following changes; a replica registers its gRPC endpoint and revokes it
//! when it drains.

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};

use crate::grpc::client as dtm;
use crate::grpc_branches::{transfer, Busi};
use crate::support::{gid, prefix, test_settings, EtcdServer, RedisServer, TestApp};

async fn etcd_client(etcd: &EtcdServer) -> Client {
    Client::connect([etcd.addr()], None).await.unwrap()
}

/// Registers `endpoint` under `<key>/<lease>` as go-zero does; returns the
/// entry's key.
async fn register(c: &mut Client, key: &str, endpoint: &str) -> String {
    let lease = c.lease_grant(10, None).await.unwrap().id();
    let entry = format!("{key}/{lease}");
    c.put(
        entry.as_str(),
        endpoint,
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    entry
}

async fn until(what: &str, secs: u64, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn etcd_targets_balance_over_live_endpoints_and_follow_changes() {
    let etcd = EtcdServer::start();
    let mut c = etcd_client(&etcd).await;
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let mut api = dtm(&app).await;
    let (a, a_addr) = Busi::start().await;
    let (b, b_addr) = Busi::start().await;
    register(&mut c, "user.rpc", &a_addr).await;
    let b_entry = register(&mut c, "user.rpc", &b_addr).await;
    let target = format!("etcd://{}/user.rpc", etcd.addr());
    // round robin: both endpoints get calls
    let mut gids = Vec::new();
    for _ in 0..4 {
        let g = gid("etcd-rr");
        api.submit(transfer(&g, &target, 10)).await.unwrap();
        assert_eq!(app.status(&g).await, "succeed");
        gids.push(g);
    }
    let count = |s: &Busi| gids.iter().map(|g| s.calls_for(g).len()).sum::<usize>();
    assert_eq!(count(&a) + count(&b), 8);
    assert!(
        count(&a) >= 2 && count(&b) >= 2,
        "a {} b {}",
        count(&a),
        count(&b)
    );
    // b leaves: the watch drops it, every later call goes to a
    c.delete(b_entry.as_str(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let g = gid("etcd-left");
    api.submit(transfer(&g, &target, 10)).await.unwrap();
    assert_eq!(a.methods_for(&g), ["TransOut", "TransIn"]);
    assert!(b.calls_for(&g).is_empty());
    // etcd goes away: the endpoints known last keep serving
    drop(c);
    let mut etcd = etcd;
    etcd.kill();
    let g = gid("etcd-away");
    api.submit(transfer(&g, &target, 10)).await.unwrap();
    assert_eq!(a.methods_for(&g), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn a_service_with_no_live_endpoint_is_retried_until_one_registers() {
    let etcd = EtcdServer::start();
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let mut api = dtm(&app).await;
    let target = format!("etcd://{}/score.rpc", etcd.addr());
    let g = gid("etcd-none");
    let mut saga = transfer(&g, &target, 10);
    saga.trans_options.as_mut().unwrap().wait_result = false;
    api.submit(saga).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // an error, never a failure: nothing compensated, still submitted
    assert_eq!(app.status(&g).await, "submitted");
    let q = app.query(&g).await;
    assert!(
        q["branches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "prepared"),
        "{q}"
    );
    let (busi, addr) = Busi::start().await;
    register(&mut etcd_client(&etcd).await, "score.rpc", &addr).await;
    app.wait_status(&g, "succeed", 10).await;
    assert_eq!(busi.methods_for(&g), ["TransOut", "TransIn"]);
}

#[tokio::test]
async fn a_replica_registers_its_grpc_endpoint_and_revokes_it_when_draining() {
    let etcd = EtcdServer::start();
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.grpc.register = format!("etcd://{}/dtmservice", etcd.addr());
    let app = TestApp::spawn_with(settings).await;
    let advertised = app.grpc.trim_start_matches("http://").to_owned();
    let mut c = etcd_client(&etcd).await;
    let entries = async |c: &mut Client| -> Vec<String> {
        let got = c
            .get("dtmservice/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        got.kvs()
            .iter()
            .map(|kv| kv.value_str().unwrap().to_owned())
            .collect()
    };
    until("dtx is registered", 10, async || {
        entries(&mut c).await == [advertised.clone()]
    })
    .await;
    // a client finds dtx through etcd, as go-zero's dtmgrpc does
    let found = entries(&mut c).await.remove(0);
    let channel = tonic::transport::Channel::from_shared(format!("http://{found}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut api = dtx::grpc::pb::dtm_client::DtmClient::new(channel);
    assert_eq!(api.new_gid(()).await.unwrap().into_inner().gid.len(), 22);
    // draining revokes the lease: the entry is gone at once, not in 10 s
    let stopped = Instant::now();
    app.stop().await;
    assert!(entries(&mut c).await.is_empty());
    assert!(stopped.elapsed() < Duration::from_secs(5));
}
