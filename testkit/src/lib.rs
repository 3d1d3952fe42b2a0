//! What dtx's integration tests, the client's tests and the benches
//! share, in one place: private `redis-server`s ([`RedisServer`]), dtx
//! processes ([`DtxProcess`]) and replicas in this process ([`TestApp`]),
//! the scriptable fake branch service ([`Branches`]), the test timings
//! ([`timings::TEST`]), free ports and a process's CPU time. Everything
//! runs on 127.0.0.1 and cleans up after itself.

mod app;
mod bank;
mod branches;
mod cluster;
mod etcd;
mod load;
mod process;
mod proxy;
mod redis;
mod sentinel;
pub mod timings;
mod tls;
mod workflow;

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

pub use app::{gid, prefix, test_settings, wait_status_at, StatusSource, TestApp};
pub use bank::{Bank, BankFaults, TCC_BRANCHES};
pub use branches::{saga_body, Branches, Call, Reply};
pub use cluster::{cluster_field, RedisCluster, NODE_TIMEOUT_MS};
pub use etcd::EtcdServer;
pub use load::{check_each_ended_once, LoadOutcome, SagaLoad};
pub use process::{dtx_command, DtxProcess};
pub use proxy::{Fault, FaultProxy};
pub use redis::{Persistence, RedisServer};
pub use sentinel::{RedisSentinel, SentinelNode, DOWN_AFTER_MS, MASTER_NAME};
pub use tls::Certs;
pub use workflow::TransferWorkflows;

/// Waits until `cond` holds, looking every 20 ms; panics after 10 s.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A new empty directory under the system's temp dir, named for `what`
/// and this process; the caller removes it.
pub fn scratch_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dtx-{what}-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `127.0.0.1:<port>` of each of `ports`, comma-separated (the node list
/// of a `redis+cluster://` or `redis+sentinel://` URL).
pub fn loopback_list(ports: impl IntoIterator<Item = u16>) -> String {
    let nodes: Vec<String> = ports
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    nodes.join(",")
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

/// The fields of `/proc/<pid>/stat` after the command name (which may
/// hold spaces): the state first. Empty when there is no such process.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    rest.split_whitespace().map(str::to_owned).collect()
}

/// Whether process `pid` runs (a zombie nobody reaped yet does not).
pub fn running(pid: u32) -> bool {
    stat_fields(pid).first().is_some_and(|state| state != "Z")
}

/// CPU time (user + system) a process has used so far, µs.
pub fn cpu_us(pid: u32) -> u64 {
    let f = stat_fields(pid);
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
