//! `--dev`: a private `redis-server` child with AOF on, so dtx can be tried
//! without setting Redis up. Never used without the flag.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The `redis-server` flags of a private Redis that dtx accepts: it never
/// evicts (dtx refuses to start otherwise) and takes no RDB snapshots;
/// with `fsync` (`always`, `everysec`) it keeps an append-only file synced
/// that often. The test kit starts its servers with these too.
pub fn redis_server_args(fsync: Option<&'static str>) -> Vec<&'static str> {
    let mut args = vec!["--maxmemory-policy", "noeviction", "--save", ""];
    if let Some(fsync) = fsync {
        args.extend(["--appendonly", "yes", "--appendfsync", fsync]);
    }
    args
}

/// A running private Redis.
pub struct DevRedis {
    child: Child,
    socket: PathBuf,
}

impl DevRedis {
    /// Starts `redis-server` from PATH with its data under `dir`, listening
    /// on a unix socket there, and waits until it answers.
    pub async fn start(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        let socket = dir.join("redis.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&dir)
            .args(redis_server_args(Some("always")))
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!("--dev needs redis-server on PATH (apt-get install redis-server): {e}")
            })?;
        let mut dev = Self { child, socket };
        for _ in 0..100 {
            if dev.ping().await {
                return Ok(dev);
            }
            if let Ok(Some(status)) = dev.child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}); see {}",
                    dir.join("redis.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("redis-server did not answer within 5 s".into())
    }

    /// The URL to reach it.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    /// Shuts it down cleanly (the AOF is flushed), killing it if it hangs.
    pub async fn stop(mut self) {
        if let Ok(client) = redis::Client::open(self.url()) {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let _ = redis::cmd("SHUTDOWN").query_async::<()>(&mut conn).await;
            }
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
