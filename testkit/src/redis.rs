//! A private `redis-server` per test or bench run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How a private Redis keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk.
    None,
    /// AOF, fsynced on every write.
    AofAlways,
    /// AOF, fsynced every second.
    AofEverySec,
}

/// A private `redis-server` on a free port, killed and its directory
/// removed when dropped. It refuses to evict, and allows `DEBUG` from
/// localhost (tests pause it with `DEBUG SLEEP`).
pub struct RedisServer {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its TLS port, when it serves TLS too.
    pub tls_port: Option<u16>,
    /// Its data directory.
    pub dir: PathBuf,
    persistence: Persistence,
    /// Arguments beyond the usual ones, kept for a restart.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one without persistence.
    pub fn start() -> Self {
        Self::start_with(Persistence::None)
    }

    /// Starts one with AOF fsynced on every write.
    pub fn start_aof() -> Self {
        Self::start_with(Persistence::AofAlways)
    }

    /// Starts one keeping its data as `persistence` says.
    pub fn start_with(persistence: Persistence) -> Self {
        Self::start_on_free_port(persistence, &[])
    }

    /// Starts one that serves TLS as well, with `certs`' server
    /// certificate, asking clients for one `certs`' CA signed
    /// ([`RedisServer::tls_url`]); the plain port stays for the tests'
    /// own looks.
    pub fn start_tls(certs: &crate::Certs) -> Self {
        Self::start_on_free_port(Persistence::None, &certs.redis_args(free_port()))
    }

    /// Starts a replica of `primary` (no persistence of its own) and waits
    /// until its link to the primary is up.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        Self::start_replica_on(primary, None)
    }

    /// Starts a replica of `primary`, serving and replicating over TLS
    /// with `certs` when given, and waits until its link is up.
    pub(crate) fn start_replica_on(primary: &RedisServer, tls: Option<&crate::Certs>) -> Self {
        let mut args = match tls {
            Some(certs) => certs.redis_args(free_port()),
            None => Vec::new(),
        };
        let port = primary
            .tls_port
            .filter(|_| tls.is_some())
            .unwrap_or(primary.port);
        args.extend([
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            port.to_string(),
        ]);
        let server = Self::start_on_free_port(Persistence::None, &args);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.info_text("replication", "master_link_status") != "up" {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Starts one with `extra` arguments on a free port and a directory of
    /// its own. A free port can be taken before redis-server binds it (by
    /// another test's outgoing connection, say): then it exits, and another
    /// is tried.
    pub(crate) fn start_on_free_port(persistence: Persistence, extra: &[String]) -> Self {
        for _ in 0..5 {
            let dir = crate::scratch_dir("redis");
            if let Some(server) = Self::try_launch(persistence, free_port(), dir, extra) {
                return server;
            }
        }
        panic!("redis-server exited at start on five free ports in a row");
    }

    fn launch(persistence: Persistence, port: u16, dir: PathBuf, extra: &[String]) -> Self {
        Self::try_launch(persistence, port, dir, extra)
            .unwrap_or_else(|| panic!("redis-server on port {port} exited at start"))
    }

    /// Starts one on `port`; `None` if it exits before it answers.
    fn try_launch(
        persistence: Persistence,
        port: u16,
        dir: PathBuf,
        extra: &[String],
    ) -> Option<Self> {
        let mut cmd = Command::new("redis-server");
        let fsync = match persistence {
            Persistence::None => None,
            Persistence::AofAlways => Some("always"),
            Persistence::AofEverySec => Some("everysec"),
        };
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(dtx::dev::redis_server_args(fsync))
            .args(["--enable-debug-command", "local"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("tests need redis-server on PATH (apt-get install redis-server)");
        let tls_port = extra
            .iter()
            .position(|a| a == "--tls-port")
            .and_then(|i| extra.get(i + 1)?.parse().ok());
        let mut server = Self {
            child,
            port,
            tls_port,
            dir,
            persistence,
            extra: extra.to_vec(),
        };
        // a server that exited is dropped: its directory goes with it
        server.wait_ready().then_some(server)
    }

    /// Waits until it answers (`true`) or exits (`false`).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return true;
                    }
                }
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>`
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started without TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A plain synchronous connection for assertions.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Stops it (SIGKILL: whatever was not fsynced is lost) and starts it
    /// again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.revive();
    }

    /// Stops it without starting it again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again after [`RedisServer::kill`].
    pub fn revive(&mut self) {
        let again = Self::launch(self.persistence, self.port, self.dir.clone(), &self.extra);
        let old = std::mem::replace(self, again);
        // its process is gone and its directory is ours now
        std::mem::forget(old);
    }

    /// The value of `key` in the `section` of `INFO` (0 when absent).
    pub fn info(&self, section: &str, key: &str) -> u64 {
        self.info_text(section, key).parse().unwrap_or(0)
    }

    /// The text of `key` in the `section` of `INFO` (empty when absent).
    pub fn info_text(&self, section: &str, key: &str) -> String {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// `EVALSHA` and `EVAL` calls so far.
    pub fn script_calls(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .unwrap();
        ["evalsha", "eval"]
            .iter()
            .map(|n| {
                info.lines()
                    .find(|l| l.starts_with(&format!("cmdstat_{n}:")))
                    .and_then(|l| l.split("calls=").nth(1))
                    .and_then(|v| v.split(',').next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Every key under `prefix` but the replica set, sorted: what a
    /// request may have written (each replica's heartbeat rewrites
    /// `<prefix>:replicas` on its own, every `recheck_ms`).
    pub fn data_keys(&self, prefix: &str) -> Vec<String> {
        let replicas = format!("{prefix}:replicas");
        let mut keys = self.keys(prefix);
        keys.retain(|k| *k != replicas);
        keys
    }

    /// A digest of [`RedisServer::data_keys`]: their names, values and
    /// whether each expires.
    pub fn data_digest(&self, prefix: &str) -> String {
        let mut c = self.conn();
        let keys = self.data_keys(prefix);
        if keys.is_empty() {
            return String::new();
        }
        let values: Vec<String> = redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg(&keys)
            .query(&mut c)
            .unwrap();
        let mut out = String::new();
        for (key, value) in keys.iter().zip(values) {
            let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut c).unwrap();
            out.push_str(&format!("{key}={value},{}\n", ttl > 0));
        }
        out
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut c = self.conn();
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut c)
            .unwrap();
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
