//! A private Redis Cluster per test or bench run: `redis-server
//! --cluster-enabled yes` processes on free ports, joined by `redis-cli
//! --cluster create`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::redis::{Persistence, RedisServer};

/// How long a silent master may stay silent before its replica takes
/// over, ms (Redis's default is 15 s; tests fail over in about 2).
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// A Redis Cluster of `masters` masters with `replicas` replicas each,
/// every slot assigned; its processes are killed when dropped.
pub struct RedisCluster {
    /// Every node, in the order they were started.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters with one replica each.
    pub fn start() -> Self {
        Self::start_with(3, 1)
    }

    /// `masters` masters with `replicas` replicas each; returns once every
    /// node sees the cluster as `ok` and every replica is in sync.
    pub fn start_with(masters: usize, replicas: usize) -> Self {
        Self::start_nodes(masters, replicas, None)
    }

    /// Like [`RedisCluster::start_with`], every node serving TLS as well
    /// (with `certs`, see [`RedisServer::start_tls`]) and speaking it on
    /// the cluster bus; clients on TLS are told the nodes' TLS ports
    /// ([`RedisCluster::tls_url`]), the tests' own looks use the plain ones.
    pub fn start_tls(masters: usize, replicas: usize, certs: &crate::Certs) -> Self {
        Self::start_nodes(masters, replicas, Some(certs))
    }

    fn start_nodes(masters: usize, replicas: usize, tls: Option<&crate::Certs>) -> Self {
        let node_timeout = NODE_TIMEOUT_MS.to_string();
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let bus = free_port().to_string();
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &node_timeout,
                    "--cluster-port",
                    &bus,
                ]
                .map(str::to_owned)
                .into();
                if let Some(certs) = tls {
                    args.extend(certs.redis_args(free_port()));
                    args.extend(["--tls-cluster", "yes"].map(str::to_owned));
                }
                RedisServer::start_on_free_port(Persistence::None, &args)
            })
            .collect();
        if masters >= 3 {
            create(&nodes, replicas);
        } else {
            assert_eq!(
                replicas, 0,
                "a cluster of fewer than 3 masters has no replicas here"
            );
            join_by_hand(&nodes);
        }
        let cluster = Self { nodes };
        cluster.wait_healthy(masters, replicas);
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds = crate::loopback_list(self.nodes.iter().map(|n| n.port));
        format!("redis+cluster://{seeds}")
    }

    /// `rediss+cluster://` with every node's TLS port as a seed.
    pub fn tls_url(&self) -> String {
        let ports = self
            .nodes
            .iter()
            .map(|n| n.tls_port.expect("started without TLS"));
        format!("rediss+cluster://{}", crate::loopback_list(ports))
    }

    /// The nodes that are masters now (a killed one is not asked).
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.nodes
            .iter()
            .filter(|n| crate::running(n.pid()) && n.info_text("replication", "role") == "master")
            .collect()
    }

    /// The master serving `key` now.
    pub fn master_of(&self, key: &str) -> &RedisServer {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.masters()[0].conn())
            .unwrap();
        self.masters()
            .into_iter()
            .find(|m| serves(m, slot))
            .expect("no master serves the slot")
    }

    /// How many slots `node` serves by its own view.
    pub fn slot_count(&self, node: &RedisServer) -> usize {
        slot_ranges(node)
            .into_iter()
            .filter(|(_, _, port)| *port == i64::from(node.port))
            .map(|(from, to, _)| (to - from + 1) as usize)
            .sum()
    }

    /// Every key under `prefix` on every master, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.masters().iter().flat_map(|m| m.keys(prefix)).collect();
        keys.sort();
        keys
    }

    /// Waits until every live node says `cluster_state:ok` with `masters`
    /// masters, each with `replicas` replicas online.
    pub fn wait_healthy(&self, masters: usize, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let live: Vec<&RedisServer> = self
                .nodes
                .iter()
                .filter(|n| crate::running(n.pid()))
                .collect();
            let ok = live
                .iter()
                .all(|n| cluster_field(n, "cluster_state") == "ok");
            let ms = self.masters();
            // a replica that has not finished its first sync would refuse
            // to take over (its data counts as too old)
            let synced = ms.len() == masters
                && ms
                    .iter()
                    .all(|m| m.info("replication", "connected_slaves") as usize >= replicas)
                && live.iter().all(|n| {
                    n.info_text("replication", "role") == "master"
                        || n.info_text("replication", "master_link_status") == "up"
                });
            if ok && synced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy (ok {ok}, {} masters)",
                ms.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `redis-cli --cluster create` (it wants 3 masters at least).
fn create(nodes: &[RedisServer], replicas: usize) {
    let mut create = Command::new("redis-cli");
    create.arg("--cluster").arg("create");
    for n in nodes {
        create.arg(format!("127.0.0.1:{}", n.port));
    }
    let out = create
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .expect("tests need redis-cli on PATH (apt-get install redis-server)");
    assert!(
        out.status.success(),
        "redis-cli --cluster create failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// One or two masters, which `redis-cli --cluster create` refuses: each
/// node takes an even range of the 16384 slots and meets the first.
fn join_by_hand(nodes: &[RedisServer]) {
    const SLOTS: usize = 16384;
    let (_, bus): (String, u16) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("cluster-port")
        .query(&mut nodes[0].conn())
        .expect("CONFIG GET cluster-port");
    for (i, n) in nodes.iter().enumerate() {
        let (from, to) = (SLOTS * i / nodes.len(), SLOTS * (i + 1) / nodes.len() - 1);
        let mut c = n.conn();
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(from)
            .arg(to)
            .query(&mut c)
            .expect("CLUSTER ADDSLOTSRANGE (Redis 7)");
        if i > 0 {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(nodes[0].port)
                .arg(bus)
                .query(&mut c)
                .expect("CLUSTER MEET");
        }
    }
}

/// A field of `CLUSTER INFO` on `node` (empty when it does not answer).
pub fn cluster_field(node: &RedisServer, name: &str) -> String {
    let Ok(mut c) = redis::Client::open(node.url()).and_then(|c| c.get_connection()) else {
        return String::new();
    };
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut c)
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Whether `node` serves `slot` by its own view of the cluster.
fn serves(node: &RedisServer, slot: u16) -> bool {
    let slot = i64::from(slot);
    slot_ranges(node)
        .into_iter()
        .any(|(from, to, port)| from <= slot && slot <= to && port == i64::from(node.port))
}

/// `CLUSTER SLOTS` on `node`: (first, last, master's port) per range.
fn slot_ranges(node: &RedisServer) -> Vec<(i64, i64, i64)> {
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut node.conn())
        .unwrap_or_default();
    let int = |v: Option<&redis::Value>| match v {
        Some(redis::Value::Int(i)) => *i,
        _ => -1,
    };
    slots
        .iter()
        .filter_map(|range| {
            let redis::Value::Array(r) = range else {
                return None;
            };
            let port = match r.get(2) {
                Some(redis::Value::Array(master)) => int(master.get(1)),
                _ => -1,
            };
            Some((int(r.first()), int(r.get(1)), port))
        })
        .collect()
}
