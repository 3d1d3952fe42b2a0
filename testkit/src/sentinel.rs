//! A private Redis Sentinel set-up: a primary (AOF `always`), one
//! replica and three sentinels watching them, on free ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::redis::{Persistence, RedisServer};

/// The name the sentinels know the primary by.
pub const MASTER_NAME: &str = "dtxmaster";

/// How long a silent primary may stay silent before the sentinels call it
/// down, ms.
pub const DOWN_AFTER_MS: u64 = 1000;

/// One `redis-server --sentinel`, killed and its directory removed when
/// dropped.
pub struct SentinelNode {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its TLS port, when it serves TLS.
    pub tls_port: Option<u16>,
    dir: PathBuf,
}

/// A primary, a replica and three sentinels that agree (quorum 2).
pub struct RedisSentinel {
    /// The primary it started with (after a failover, a replica).
    pub primary: RedisServer,
    /// The replica it started with (after a failover, the primary).
    pub replica: RedisServer,
    /// The sentinels.
    pub sentinels: Vec<SentinelNode>,
}

impl RedisSentinel {
    /// Starts them and returns once every sentinel knows the replica and
    /// the two other sentinels.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Like [`RedisSentinel::start`], every node serving TLS as well (with
    /// `certs`, see [`RedisServer::start_tls`]), the replica replicating
    /// and the sentinels watching over TLS: the sentinels name the
    /// primary's TLS port ([`RedisSentinel::tls_url`]).
    pub fn start_tls(certs: &crate::Certs) -> Self {
        Self::start_with(Some(certs))
    }

    fn start_with(tls: Option<&crate::Certs>) -> Self {
        let (primary, replica) = match tls {
            None => {
                let primary = RedisServer::start_aof();
                let replica = RedisServer::start_replica_of(&primary);
                (primary, replica)
            }
            Some(certs) => {
                let args = certs.redis_args(free_port());
                let primary = RedisServer::start_on_free_port(Persistence::AofAlways, &args);
                let replica = RedisServer::start_replica_on(&primary, Some(certs));
                (primary, replica)
            }
        };
        let watched = primary.tls_port.unwrap_or(primary.port);
        let sentinels = (0..3).map(|_| SentinelNode::start(watched, tls)).collect();
        let set = Self {
            primary,
            replica,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !set.sentinels.iter().all(|s| s.knows(2, 1)) {
            assert!(Instant::now() < deadline, "the sentinels never met");
            std::thread::sleep(Duration::from_millis(100));
        }
        set
    }

    /// `redis+sentinel://<sentinels>/<master name>`
    pub fn url(&self) -> String {
        let nodes = crate::loopback_list(self.sentinels.iter().map(|s| s.port));
        format!("redis+sentinel://{nodes}/{MASTER_NAME}")
    }

    /// `rediss+sentinel://<sentinels' TLS ports>/<master name>`
    pub fn tls_url(&self) -> String {
        let ports = self
            .sentinels
            .iter()
            .map(|s| s.tls_port.expect("started without TLS"));
        format!(
            "rediss+sentinel://{}/{MASTER_NAME}",
            crate::loopback_list(ports)
        )
    }

    /// The primary's port as the first sentinel that answers names it
    /// (its TLS port when they watch over TLS).
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(SentinelNode::master_port)
    }
}

impl SentinelNode {
    /// Starts one watching the primary on `primary_port`, over TLS when
    /// given `certs`.
    fn start(primary_port: u16, tls: Option<&crate::Certs>) -> Self {
        let port = free_port();
        let dir = crate::scratch_dir("sentinel");
        let conf = dir.join("sentinel.conf");
        let tls_port = tls.map(|_| free_port());
        let mut tls_conf = String::new();
        if let (Some(certs), Some(tls_port)) = (tls, tls_port) {
            // "--tls-port N ..." pairs as "tls-port N" lines
            for pair in certs.redis_args(tls_port).chunks(2) {
                tls_conf.push_str(&format!(
                    "{} {}\n",
                    pair[0].trim_start_matches('-'),
                    pair[1]
                ));
            }
        }
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n{tls_conf}\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tests need redis-server on PATH (apt-get install redis-server)");
        crate::wait_port(port, "redis-sentinel");
        Self {
            child,
            port,
            tls_port,
            dir,
        }
    }

    fn conn(&self) -> Option<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection()
            .ok()
    }

    /// Whether it knows at least `sentinels` other sentinels and
    /// `replicas` replicas of the primary.
    fn knows(&self, sentinels: usize, replicas: usize) -> bool {
        let Some(mut c) = self.conn() else {
            return false;
        };
        let count = |what: &str, c: &mut redis::Connection| {
            redis::cmd("SENTINEL")
                .arg(what)
                .arg(MASTER_NAME)
                .query::<Vec<redis::Value>>(c)
                .map(|v| v.len())
                .unwrap_or(0)
        };
        count("SENTINELS", &mut c) >= sentinels && count("REPLICAS", &mut c) >= replicas
    }

    /// The primary's port as it names it.
    pub fn master_port(&self) -> Option<u16> {
        let (_, port): (String, String) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut self.conn()?)
            .ok()?;
        port.parse().ok()
    }
}

impl Drop for SentinelNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
