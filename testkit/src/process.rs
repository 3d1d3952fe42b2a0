//! A dtx process: started on a free port with the test timings, its log
//! kept in a file, stopped by signal or killed when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, timings, StatusSource};

/// The command that starts the dtx binary `bin` on `redis_url`, listening
/// on 127.0.0.1:`port` (gRPC on a free port) and logging warnings only; the caller adds its own
/// `DTX_*` settings and hands it to [`DtxProcess::spawn`] (or runs it to
/// its end itself).
pub fn dtx_command(bin: &Path, redis_url: &str, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("DTX_REDIS_URL", redis_url)
        .env("DTX_HTTP_PORT", port.to_string())
        .env("DTX_HTTP_HOST", "127.0.0.1")
        .env("DTX_LOG_LEVEL", "warn")
        .env("DTX_HTTP_DRAIN_DELAY_MS", "0")
        .env("DTX_GRPC_PORT", "0")
        .stdout(Stdio::null());
    cmd
}

/// A running dtx process, killed when dropped. Its standard error goes
/// to a log file, printed when a test panics while it runs.
pub struct DtxProcess {
    child: Child,
    /// Its HTTP port.
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub root: String,
    /// `<root>/api/dtmsvr`
    pub base: String,
    /// A client to talk to it.
    pub http: reqwest::Client,
    log: PathBuf,
}

impl DtxProcess {
    /// Starts `bin` on `redis_url` under key prefix `prefix`, with the
    /// test timings ([`timings::TEST`]) and then `env` on top; returns
    /// once it listens.
    pub fn start(bin: &Path, redis_url: &str, prefix: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = dtx_command(bin, redis_url, port);
        cmd.env("DTX_REDIS_KEY_PREFIX", prefix)
            .envs(timings::TEST.env())
            .envs(env.iter().copied());
        Self::spawn(cmd, port)
    }

    /// Spawns `cmd`, a dtx that will listen on `port`, and waits until it
    /// does; panics with its log if it exits first or takes over 20 s.
    pub fn spawn(mut cmd: Command, port: u16) -> Self {
        let log = std::env::temp_dir().join(format!(
            "dtx-log-{}-{:016x}.log",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = std::fs::File::create(&log).expect("a log file for dtx");
        let child = cmd
            .stderr(Stdio::from(file))
            .spawn()
            .expect("the dtx binary starts");
        let mut p = Self {
            child,
            port,
            root: format!("http://127.0.0.1:{port}"),
            base: format!("http://127.0.0.1:{port}/api/dtmsvr"),
            http: reqwest::Client::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("dtx exited ({status}) before listening:\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "dtx did not listen on {port} within 20 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends it `signal` (a `kill` name: `TERM`, `STOP`, `CONT`, ...).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// SIGTERM: it drains and exits.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("dtx can be waited for")
    }

    /// Its exit status, if it exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `within` for it to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// POSTs `body` to `route` of the dtm API; returns the HTTP status
    /// (0 when it could not be reached).
    pub async fn post(&self, route: &str, body: &Value) -> u16 {
        self.http
            .post(format!("{}/{route}", self.base))
            .json(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

impl StatusSource for DtxProcess {
    async fn status_of(&self, gid: &str) -> String {
        let r = self
            .http
            .get(format!("{}/query?gid={gid}", self.base))
            .send()
            .await;
        match r {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["transaction"]["status"].as_str().map(str::to_owned)),
            Err(_) => None,
        }
        .unwrap_or_default()
    }
}

impl Drop for DtxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "--- last lines of dtx on port {} ---", self.port);
            for l in tail.iter().rev() {
                let _ = writeln!(err, "{l}");
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
