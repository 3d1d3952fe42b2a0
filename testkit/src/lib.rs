//! What dtx's integration tests, the client's tests and the benches
//! share: private `redis-server`s on free ports, dtx processes, waiting
//! for a port, and reading a process's CPU time. Everything runs on
//! 127.0.0.1 and cleans up after itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Waits until something listens on `port`; panics naming `what` after
/// 20 s.
pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} on port {port} did not start");
}

/// CPU time (user + system) a process has used so far, µs.
pub fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name, which may hold spaces, start after ')'
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ')'
    (ticks(11) + ticks(12)) * 10_000 // USER_HZ is 100 on Linux
}

/// Peak resident memory of a process, KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

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
    /// Its data directory.
    pub dir: PathBuf,
    persistence: Persistence,
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
        let dir = std::env::temp_dir().join(format!(
            "dtx-redis-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self::launch(persistence, free_port(), dir)
    }

    fn launch(persistence: Persistence, port: u16, dir: PathBuf) -> Self {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&dir)
            .args(["--save", "", "--maxmemory-policy", "noeviction"])
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match persistence {
            Persistence::None => {}
            Persistence::AofAlways => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
            Persistence::AofEverySec => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
            }
        }
        let child = cmd
            .spawn()
            .expect("tests need redis-server on PATH (apt-get install redis-server)");
        let server = Self {
            child,
            port,
            dir,
            persistence,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let again = Self::launch(self.persistence, self.port, self.dir.clone());
        let old = std::mem::replace(self, again);
        // its process is gone and its directory is ours now
        std::mem::forget(old);
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

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Process {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command that starts the dtx binary `bin` on `redis_url`, listening
/// on 127.0.0.1:`port`, logging warnings only and draining at once; the
/// caller adds its own `DTX_*` settings and spawns it.
pub fn dtx_command(bin: &Path, redis_url: &str, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("DTX_REDIS_URL", redis_url)
        .env("DTX_HTTP_PORT", port.to_string())
        .env("DTX_HTTP_HOST", "127.0.0.1")
        .env("DTX_LOG_LEVEL", "warn")
        .env("DTX_HTTP_DRAIN_DELAY_MS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}
