//! The go-zero scenario over gRPC and etcd: a user is registered by a
//! SAGA over two gRPC services found through etcd. The user service saves
//! the user, the score service saves the score and refuses a score of 10
//! with ABORTED; each writes its MariaDB table inside the sub-transaction
//! barrier, whose identity it reads from the gRPC metadata. The saga goes
//! to the dtx found through etcd under `dtmservice`, with `wait_result`;
//! a refused score rolls the user back through its compensation.
//!
//! Run, with a local etcd (Debian: `apt-get install etcd-server`, then
//! `etcd`) and dtx registering itself in it:
//!
//! ```sh
//! DTX_GRPC_REGISTER=etcd://127.0.0.1:2379/dtmservice DTX_GRPC_ADVERTISE=127.0.0.1:36790 \
//!     cargo run -- --dev
//! cargo run -p dtx-client --example gozero_register
//! ```
//!
//! Environment: `ETCD` (default `127.0.0.1:2379`) and `MYSQL_URL` (as in
//! `msg_transfer`); the example creates and uses a database named
//! `dtx_example_gozero`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::{Duration, Instant};

use dtx_client::grpc::{barrier_from_metadata, status_of, DtmGrpc};
use dtx_client::Error;
use etcd_client::PutOptions;
use sqlx::MySqlPool;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

pub mod user_pb {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("user");
}
pub mod score_pb {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("score");
}

use score_pb::user_score_server::{UserScore, UserScoreServer};
use score_pb::ScoreReq;
use user_pb::user_server::{User, UserServer};
use user_pb::UserReq;

/// What both services share: their database and its barrier table.
#[derive(Clone)]
pub struct Db {
    pub pool: MySqlPool,
    pub barrier_table: String,
}

/// Creates the two tables and the barrier table.
pub async fn setup(db: &Db) -> sqlx::Result<()> {
    for stmt in dtx_client::barrier::mysql_ddl(&db.barrier_table) {
        sqlx::query(&stmt).execute(&db.pool).await?;
    }
    for ddl in [
        "CREATE TABLE IF NOT EXISTS users (id VARCHAR(64) PRIMARY KEY, name VARCHAR(64) NOT NULL)",
        "CREATE TABLE IF NOT EXISTS user_score (user_id VARCHAR(64) PRIMARY KEY, score BIGINT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&db.pool).await?;
    }
    Ok(())
}

impl Db {
    /// Runs `sql` with `args` inside the barrier of the call `meta` names;
    /// `refuse` answers FAILURE (ABORTED) instead.
    async fn guarded(
        &self,
        meta: &tonic::metadata::MetadataMap,
        refuse: Option<String>,
        sql: &'static str,
        args: Vec<String>,
    ) -> Result<Response<()>, Status> {
        let barrier = match barrier_from_metadata(meta) {
            Ok(b) => b.with_table(self.barrier_table.clone()),
            Err(e) => return status_of(Err(e)),
        };
        let done = barrier
            .call_mysql(&self.pool, |tx| {
                Box::pin(async move {
                    if let Some(why) = refuse {
                        return Err(Error::Failure(why));
                    }
                    let mut q = sqlx::query(sql);
                    for a in args {
                        q = q.bind(a);
                    }
                    q.execute(&mut *tx).await?;
                    Ok(())
                })
            })
            .await;
        status_of(done)
    }
}

/// `user.User`: saveUser and its compensation saveUserCallback.
pub struct UserService(pub Db);

#[tonic::async_trait]
impl User for UserService {
    async fn save_user(&self, r: Request<UserReq>) -> Result<Response<()>, Status> {
        let u = r.get_ref().clone();
        let sql = "INSERT INTO users (id, name) VALUES (?, ?)";
        self.0
            .guarded(r.metadata(), None, sql, vec![u.user_id, u.name])
            .await
    }

    async fn save_user_callback(&self, r: Request<UserReq>) -> Result<Response<()>, Status> {
        let u = r.get_ref().clone();
        let sql = "DELETE FROM users WHERE id = ?";
        self.0
            .guarded(r.metadata(), None, sql, vec![u.user_id])
            .await
    }
}

/// `score.UserScore`: saveUserScore (a score of 10 is refused) and its
/// compensation saveUserScoreCallback.
pub struct ScoreService(pub Db);

#[tonic::async_trait]
impl UserScore for ScoreService {
    async fn save_user_score(&self, r: Request<ScoreReq>) -> Result<Response<()>, Status> {
        let s = r.get_ref().clone();
        let refuse = (s.score == 10).then(|| "a score of 10 is refused".to_owned());
        let sql = "INSERT INTO user_score (user_id, score) VALUES (?, ?)";
        let args = vec![s.user_id, s.score.to_string()];
        self.0.guarded(r.metadata(), refuse, sql, args).await
    }

    async fn save_user_score_callback(&self, r: Request<ScoreReq>) -> Result<Response<()>, Status> {
        let s = r.get_ref().clone();
        let sql = "DELETE FROM user_score WHERE user_id = ?";
        self.0
            .guarded(r.metadata(), None, sql, vec![s.user_id])
            .await
    }
}

/// Serves the two services, each on a free port, registered in etcd
/// under `user.rpc/` and `score.rpc/` on 10 s leases, as go-zero
/// registers them. The leases are not kept alive: a run that outlives
/// them re-registers.
pub async fn start_services(db: &Db, etcd: &mut etcd_client::Client) -> Result<(), Error> {
    let etcd_error = |e: etcd_client::Error| Error::Other(format!("etcd: {e}"));
    for (key, router) in [
        (
            "user.rpc",
            tonic::transport::Server::builder()
                .add_service(UserServer::new(UserService(db.clone()))),
        ),
        (
            "score.rpc",
            tonic::transport::Server::builder()
                .add_service(UserScoreServer::new(ScoreService(db.clone()))),
        ),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Other(e.to_string()))?
            .to_string();
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        let lease = etcd.lease_grant(10, None).await.map_err(etcd_error)?.id();
        let options = PutOptions::new().with_lease(lease);
        etcd.put(format!("{key}/{lease}"), addr, Some(options))
            .await
            .map_err(etcd_error)?;
    }
    Ok(())
}

/// The dtx registered in the etcd at `etcd` under `dtmservice/`, once it
/// is there (within 10 s).
pub async fn find_dtx(etcd: &str) -> Result<DtmGrpc, Error> {
    let target = format!("etcd://{etcd}/dtmservice");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match DtmGrpc::connect(&target).await {
            Ok(dtm) => return Ok(dtm),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Registers user `uid` with `points` by a saga over the two services
/// found through the etcd at `etcd`; FAILURE when the score is refused.
pub async fn register(
    dtm: &DtmGrpc,
    etcd: &str,
    gid: &str,
    uid: &str,
    points: i64,
) -> Result<(), Error> {
    let user = format!("etcd://{etcd}/user.rpc/user.User/saveUser");
    let user_back = format!("etcd://{etcd}/user.rpc/user.User/saveUserCallback");
    let score = format!("etcd://{etcd}/score.rpc/score.UserScore/saveUserScore");
    let score_back = format!("etcd://{etcd}/score.rpc/score.UserScore/saveUserScoreCallback");
    let u = UserReq {
        user_id: uid.to_owned(),
        name: "ann".into(),
        score: points,
    };
    let s = ScoreReq {
        user_id: uid.to_owned(),
        score: points,
    };
    dtm.saga(gid)
        .add(&user, &user_back, &u)
        .add(&score, &score_back, &s)
        .wait_result(true)
        .submit()
        .await
}

/// (user rows, score rows) of `uid`.
pub async fn rows(db: &Db, uid: &str) -> sqlx::Result<(i64, i64)> {
    let users = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = ?")
        .bind(uid)
        .fetch_one(&db.pool)
        .await?;
    let scores = sqlx::query_scalar("SELECT COUNT(*) FROM user_score WHERE user_id = ?")
        .bind(uid)
        .fetch_one(&db.pool)
        .await?;
    Ok((users, scores))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = env_or("ETCD", "127.0.0.1:2379");
    let my_url = env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql");
    let my_admin = MySqlPool::connect(&my_url).await?;
    sqlx::query("CREATE DATABASE IF NOT EXISTS dtx_example_gozero")
        .execute(&my_admin)
        .await?;
    let base = my_url.rsplit_once('/').map(|(b, _)| b).unwrap_or_default();
    let db = Db {
        pool: MySqlPool::connect(&format!("{base}/dtx_example_gozero")).await?,
        barrier_table: "barrier".to_owned(),
    };
    setup(&db).await?;
    let mut etcd_client = etcd_client::Client::connect([etcd.as_str()], None).await?;
    start_services(&db, &mut etcd_client).await?;
    let dtm = find_dtx(&etcd).await?;
    for (name, points) in [("alice", 90), ("bob", 10)] {
        let gid = dtm.new_gid().await?;
        let uid = format!("{name}-{gid}");
        let outcome = register(&dtm, &etcd, &gid, &uid, points).await;
        println!(
            "register {uid} with score {points}: {outcome:?}; (user rows, score rows) = {:?}",
            rows(&db, &uid).await?
        );
    }
    Ok(())
}
