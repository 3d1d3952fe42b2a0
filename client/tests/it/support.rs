//! Test support: a private `redis-server` and a real `dtx` process per test,
//! throwaway PostgreSQL and MariaDB databases, and HTTP services on free
//! ports.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use dtx_client::Dtm;
use sqlx::{MySqlPool, PgPool};

pub use testkit::{free_port, DtxProcess, EtcdServer, RedisServer};

/// A unique gid for a test.
pub fn gid(name: &str) -> String {
    format!("{name}-{:016x}", fastrand::u64(..))
}

/// An async connection to `redis`, for the barrier tests.
pub async fn async_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The dtx binary: `$DTX_BIN`, else `target/debug/dtx` of this workspace.
fn dtx_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DTX_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../debug/dtx");
    assert!(
        p.exists(),
        "the client tests start the dtx binary, which is missing at {}: run `cargo build --bin dtx` first (or set DTX_BIN)",
        p.display()
    );
    p
}

/// A real dtx process on its own redis-server, with the test timings.
pub struct Dtx {
    // dropped first: the process goes before its Redis
    _process: DtxProcess,
    _redis: RedisServer,
    pub dtm: Dtm,
}

impl Dtx {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With these `DTX_*` settings on top of the test ones.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let redis = RedisServer::start();
        let process = DtxProcess::start(&dtx_bin(), &redis.url(), "t", env);
        let dtm = Dtm::new(process.base.clone());
        Self {
            _process: process,
            _redis: redis,
            dtm,
        }
    }

    /// Waits until the transaction reaches `want`; panics with the last
    /// status after 20 s.
    pub async fn wait_status(&self, gid: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.dtm.status(gid).await.unwrap();
            if last.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{gid}: wanted {want}, last status {last:?}");
    }

    /// The statuses of the branches, in storage order, as `op:status`.
    pub async fn branches(&self, gid: &str) -> Vec<String> {
        let q = self.dtm.query(gid).await.unwrap();
        q["branches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                format!(
                    "{}:{}",
                    b["op"].as_str().unwrap(),
                    b["status"].as_str().unwrap()
                )
            })
            .collect()
    }
}

/// Serves `app` on a free port; returns its base URL.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// A log of calls a test service received, as `path?op` lines.
#[derive(Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, s: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|c| *c == s).count()
    }
}

fn db_name() -> String {
    format!("dtx_test_{:016x}", fastrand::u64(..))
}

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MYSQL_ADMIN_URL: &str = "mysql://root@127.0.0.1:3306/mysql";

/// A PostgreSQL database created for one test and dropped at its end.
pub struct PgDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl PgDb {
    pub async fn create() -> Self {
        let name = db_name();
        let admin = PgPool::connect(PG_ADMIN_URL)
            .await
            .expect("tests need PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let pool = PgPool::connect(&url).await.unwrap();
        for stmt in dtx_client::barrier::postgres_ddl(dtx_client::barrier::DEFAULT_TABLE) {
            sqlx::query(&stmt).execute(&pool).await.unwrap();
        }
        Self { name, url, pool }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        drop_db(move || async move {
            let admin = PgPool::connect(PG_ADMIN_URL).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&admin)
                .await?;
            admin.close().await;
            Ok(())
        });
    }
}

/// A MariaDB database created for one test and dropped at its end; its
/// barrier table is `<name>.barrier`, so nothing is written elsewhere.
pub struct MyDb {
    pub name: String,
    pub url: String,
    pub pool: MySqlPool,
    pub barrier_table: String,
}

impl MyDb {
    pub async fn create() -> Self {
        let name = db_name();
        let admin = MySqlPool::connect(MYSQL_ADMIN_URL)
            .await
            .expect("tests need MariaDB/MySQL on 127.0.0.1:3306 (root, empty password)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = format!("mysql://root@127.0.0.1:3306/{name}");
        let pool = MySqlPool::connect(&url).await.unwrap();
        let barrier_table = format!("{name}.barrier");
        for stmt in dtx_client::barrier::mysql_ddl(&barrier_table) {
            sqlx::query(&stmt).execute(&pool).await.unwrap();
        }
        Self {
            name,
            url,
            pool,
            barrier_table,
        }
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        drop_db(move || async move {
            let admin = MySqlPool::connect(MYSQL_ADMIN_URL).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(&admin)
                .await?;
            admin.close().await;
            Ok(())
        });
    }
}

/// Runs an async cleanup to its end on a thread of its own (Drop cannot
/// await, and may run inside a runtime).
fn drop_db<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        if let Err(e) = rt.block_on(f()) {
            eprintln!("could not drop a test database: {e}");
        }
    });
    let _ = t.join();
}

/// A private PostgreSQL server (initdb in a temp dir, run as the
/// `postgres` OS user, `max_prepared_transactions=10`, on a free port),
/// stopped and removed when dropped. For XA, which the shared server
/// (max_prepared_transactions = 0) refuses.
pub struct PrivatePg {
    dir: PathBuf,
    pub url: String,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl PrivatePg {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("dtx-client-pg-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let ok = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("runuser")
                .success();
            assert!(ok, "{args:?} failed");
        };
        assert!(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap()
            .success());
        let data = dir.join("data");
        let data_s = data.to_str().unwrap();
        run(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data_s,
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_prepared_transactions=10 -c fsync=off",
            dir.display()
        );
        let log = dir.join("log").to_str().unwrap().to_owned();
        run(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data_s,
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            "start",
        ]);
        Self {
            dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        }
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
