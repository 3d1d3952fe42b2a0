//! etcd discovery (contract §7.3, go-zero's layout): `etcd://` branch
//! targets resolve to the live endpoints under their key, round robin and
//! following changes; a replica registers its gRPC endpoint and revokes it
//! when it drains.

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};

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
async fn the_targets_user_and_password_authenticate_to_etcd() {
    let etcd = EtcdServer::start();
    let mut admin = etcd_client(&etcd).await;
    // etcd's auth: a root user in the root role, then auth on
    let _ = admin.role_add("root").await;
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let login = ConnectOptions::new().with_user("root", "s3cret");
    let mut c = Client::connect([etcd.addr()], Some(login)).await.unwrap();
    let (busi, addr) = Busi::start().await;
    register(&mut c, "user.rpc", &addr).await;
    let redis = RedisServer::start();
    let app = TestApp::spawn(&redis).await;
    let mut api = dtm(&app).await;
    // the query goes after the method: etcd://hosts/key/pkg.Svc/Method?user=..
    let target = format!("etcd://{}/user.rpc", etcd.addr());
    let with_query = |g: &str, query: &str| {
        let mut req = transfer(g, &target, 10);
        let mut steps: serde_json::Value = serde_json::from_str(&req.steps).unwrap();
        for step in steps.as_array_mut().unwrap() {
            for url in step.as_object_mut().unwrap().values_mut() {
                *url = format!("{}{query}", url.as_str().unwrap()).into();
            }
        }
        req.steps = steps.to_string();
        req
    };
    let g = gid("etcd-auth");
    api.submit(with_query(&g, "?user=root&password=s3cret"))
        .await
        .unwrap();
    assert_eq!(app.status(&g).await, "succeed");
    assert_eq!(busi.methods_for(&g), ["TransOut", "TransIn"]);
    // a wrong password finds nothing: an error, retried, never a failure
    let g = gid("etcd-auth-wrong");
    let mut req = with_query(&g, "?user=root&password=wrong");
    req.trans_options.as_mut().unwrap().wait_result = false;
    api.submit(req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.status(&g).await, "submitted");
    assert!(busi.calls_for(&g).is_empty());
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
