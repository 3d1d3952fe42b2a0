//! dtx on a real Redis Cluster (`redis+cluster://`): the core scenarios,
//! listing across shards, the start-up checks, and a master killed and
//! slots resharded under load.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtx::store::Store;
use serde_json::json;

use crate::support::{
    check_each_ended_once, cluster_field, gid, prefix, saga_body, test_settings, Branches,
    RedisCluster, RedisServer, Reply, SagaLoad, TestApp,
};

/// Test settings on `cluster` under `prefix`.
fn cluster_app_settings(cluster: &RedisCluster, prefix: &str) -> dtx::config::Settings {
    test_settings(&cluster.url(), prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_of_one_and_two_masters_serve_every_shard() {
    // fewer than 3 masters: the kit joins them by hand (the benches' 1-
    // and 2-master runs)
    for masters in [1, 2] {
        let cluster = RedisCluster::start_with(masters, 0);
        let nodes: Vec<&RedisServer> = cluster.masters();
        assert_eq!(nodes.len(), masters);
        let slots: usize = nodes.iter().map(|n| cluster.slot_count(n)).sum();
        assert_eq!(slots, 16384, "{masters} masters hold every slot");
        let prefix = prefix();
        let app = TestApp::spawn_with(cluster_app_settings(&cluster, &prefix)).await;
        let b = Branches::start().await;
        let gids: Vec<String> = (0..8)
            .map(|i| gid(&format!("small{masters}-{i}")))
            .collect();
        for g in &gids {
            assert_eq!(app.post("submit", &saga_body(g, &b)).await.0, 200);
        }
        for g in &gids {
            app.wait_status(g, "succeed", 10).await;
            assert_eq!(b.paths_for(g), ["a1", "a2"]);
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_msg_and_tcc_end_correctly_on_a_cluster_and_listing_spans_every_master() {
    let cluster = RedisCluster::start_with(3, 0);
    let prefix = prefix();
    let app = TestApp::spawn_with(cluster_app_settings(&cluster, &prefix)).await;
    let b = Branches::start().await;

    // saga commit and rollback
    let ok = gid("saga-ok");
    assert_eq!(app.post("submit", &saga_body(&ok, &b)).await.0, 200);
    app.wait_status(&ok, "succeed", 10).await;
    b.script("a2", &[Reply::Failure]);
    let rolled = gid("saga-rollback");
    assert_eq!(app.post("submit", &saga_body(&rolled, &b)).await.0, 200);
    app.wait_status(&rolled, "failed", 10).await;
    assert_eq!(b.paths_for(&ok), ["a1", "a2"]);
    assert_eq!(b.paths_for(&rolled), ["a1", "a2", "c2", "c1"]);

    // a msg never submitted: the check-back says committed
    let msg = gid("msg");
    let body = json!({
        "gid": msg, "trans_type": "msg", "timeout_to_fail": 1,
        "steps": [{"action": b.url("m1")}], "payloads": ["{}"],
        "query_prepared": b.url("qp"),
    });
    assert_eq!(app.post("prepare", &body).await.0, 200);
    app.wait_status(&msg, "succeed", 10).await;
    assert_eq!(b.paths_for(&msg), ["qp", "m1"]);

    // TCC: two tries, then confirms from the last to the first
    let tcc = gid("tcc");
    assert_eq!(
        app.post("prepare", &json!({"gid": tcc, "trans_type": "tcc"}))
            .await
            .0,
        200
    );
    for (id, n) in [("01", "1"), ("02", "2")] {
        let register = json!({
            "gid": tcc, "trans_type": "tcc", "branch_id": id, "status": "prepared",
            "data": "{}", "confirm": b.url(&format!("confirm{n}")),
            "cancel": b.url(&format!("cancel{n}")),
        });
        assert_eq!(app.post("registerBranch", &register).await.0, 200);
    }
    let submit = json!({"gid": tcc, "trans_type": "tcc", "wait_result": true});
    assert_eq!(app.post("submit", &submit).await.0, 200);
    assert_eq!(app.status(&tcc).await, "succeed");
    assert_eq!(b.paths_for(&tcc), ["confirm2", "confirm1"]);

    // enough sagas to land on every master; all of them listed, newest first
    let mut gids = vec![ok.clone(), rolled.clone(), msg.clone(), tcc.clone()];
    for i in 0..40 {
        let g = gid(&format!("list{i:02}"));
        let mut body = saga_body(&g, &b);
        body["wait_result"] = json!(true);
        assert_eq!(app.post("submit", &body).await.0, 200);
        gids.push(g);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seen = app.all_gids(7).await;
    // the first four were created in that order, before the rest
    gids.reverse();
    assert_eq!(seen, gids, "listing across the cluster's shards");
    let holding: Vec<usize> = cluster
        .masters()
        .iter()
        .map(|m| m.keys(&prefix).len())
        .collect();
    assert!(
        holding.iter().all(|&n| n > 0),
        "every master holds transactions: {holding:?}"
    );
    app.stop().await;
}

/// Why `Store::connect` refuses `s`, which it must.
async fn refusal(s: &dtx::config::Settings) -> String {
    match Store::connect(&s.redis, 60).await {
        Ok(_) => panic!("the store connected"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn start_up_refuses_an_evicting_master_and_a_cluster_missing_slots() {
    let cluster = RedisCluster::start_with(3, 0);
    let s = cluster_app_settings(&cluster, &prefix());
    Store::connect(&s.redis, 60)
        .await
        .expect("a healthy cluster");

    let master = cluster.masters()[1].port;
    let node = cluster.nodes.iter().find(|n| n.port == master).unwrap();
    let set_policy = |policy: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .query(&mut node.conn())
            .unwrap();
    };
    set_policy("allkeys-lru");
    let err = refusal(&s).await;
    assert!(
        err.contains("allkeys-lru")
            && err.contains("noeviction")
            && err.contains(&master.to_string()),
        "names the evicting master: {err}"
    );
    set_policy("noeviction");

    // slots 0-99 are given up: the cluster no longer serves them
    // (on every node: each forgets who served them)
    for n in &cluster.nodes {
        let _: () = redis::cmd("CLUSTER")
            .arg("DELSLOTSRANGE")
            .arg(0)
            .arg(99)
            .query(&mut n.conn())
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .nodes
        .iter()
        .any(|n| cluster_field(n, "cluster_state") == "ok")
    {
        assert!(Instant::now() < deadline, "the cluster never noticed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = refusal(&s).await;
    assert!(
        err.contains("slot") && err.contains("redis+cluster://"),
        "one clear line: {err}"
    );
}

/// `redis-cli --cluster <args>`, which must succeed.
fn redis_cli_cluster(args: &[&str]) {
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node.conn())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_saga_ends_once_through_a_master_failover_and_a_reshard() {
    let mut cluster = RedisCluster::start_with(3, 1);
    let prefix = prefix();
    let mut settings = cluster_app_settings(&cluster, &prefix);
    // acknowledged means on the master's replica too, so a promoted
    // replica holds it
    settings.redis.min_replicas_ack = 1;
    settings.redis.ack_timeout_ms = 500;
    let app = Arc::new(TestApp::spawn_with(settings).await);
    let b = Branches::start().await;
    let load = SagaLoad::start(&app, &b, 8);
    tokio::time::sleep(Duration::from_millis(800)).await;

    // kill the master serving shard 0's slot: its replica takes over
    let victim_port = cluster.master_of("{s0}").port;
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim_port)
        .unwrap();
    let before_kill = load.acknowledged();
    cluster.nodes[victim].kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(20);
    while cluster.masters().len() < 3 {
        if Instant::now() > deadline {
            for n in cluster.nodes.iter().filter(|n| testkit::running(n.pid())) {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query(&mut n.conn())
                    .unwrap();
                eprintln!("{}: {}", n.port, nodes);
            }
            panic!("no replica was promoted");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = killed.elapsed();
    // the old master comes back as the new one's replica
    cluster.nodes[victim].revive();
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.wait_healthy(3, 1))
        .await
        .unwrap();
    let after_failover = load.acknowledged();
    assert!(
        after_failover > before_kill,
        "submits were acknowledged again after the failover"
    );

    // move every slot of the master serving shard 1 to another master
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        let from = c.master_of("{s1}");
        let to = c
            .masters()
            .into_iter()
            .find(|m| m.port != from.port)
            .unwrap();
        let (from_id, to_id) = (node_id(from), node_id(to));
        let slots = c.slot_count(from).to_string();
        redis_cli_cluster(&[
            "reshard",
            &format!("127.0.0.1:{}", to.port),
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
        ]);
        assert_ne!(c.master_of("{s1}").port, from.port, "shard 1 moved");
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = load.stop().await;
    let outcome = check_each_ended_once(&app, &b, &sent, 30).await;
    assert!(
        outcome.acknowledged > after_failover,
        "acknowledged during the reshard too"
    );
    assert!(
        outcome.lost.is_empty(),
        "acknowledged and lost: {:?}",
        outcome.lost
    );
    eprintln!(
        "sent {}, acknowledged {}, replica promoted after {promoted:?}, \
         actions called again after a lost reply {}",
        outcome.sent, outcome.acknowledged, outcome.repeated
    );
}
