//! The go-zero scenario, end to end over gRPC: a user is registered by a
//! saga over two gRPC services found through etcd (user and score, each
//! writing its MariaDB table inside the sub-transaction barrier, the
//! barrier's identity read from gRPC metadata), submitted with
//! `wait_result` to the dtx found through etcd. A score of 10 is refused
//! with ABORTED: the saga fails and the user row is deleted by its
//! compensation.

use std::time::{Duration, Instant};

use dtx_client::grpc::{barrier_from_metadata, status_of, DtmGrpc};
use dtx_client::Error;
use etcd_client::{Client, PutOptions};
use sqlx::MySqlPool;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::support::{free_port, gid, Dtx, EtcdServer, MyDb};

mod user_pb {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("user");
}
mod score_pb {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("score");
}

use score_pb::user_score_server::{UserScore, UserScoreServer};
use score_pb::ScoreReq;
use user_pb::user_server::{User, UserServer};
use user_pb::UserReq;

/// What both services share: the test's database and its barrier table.
#[derive(Clone)]
struct Db {
    pool: MySqlPool,
    barrier_table: String,
}

impl Db {
    /// Runs `sql` with `args` inside the barrier of the call `meta` names.
    async fn guarded(
        &self,
        meta: &tonic::metadata::MetadataMap,
        refuse: Option<String>,
        sql: String,
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
                    let mut q = sqlx::query(&sql);
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

struct UserService(Db);

#[tonic::async_trait]
impl User for UserService {
    async fn save_user(&self, r: Request<UserReq>) -> Result<Response<()>, Status> {
        let u = r.get_ref().clone();
        let sql = "INSERT INTO users (id, name) VALUES (?, ?)".to_owned();
        self.0
            .guarded(r.metadata(), None, sql, vec![u.user_id, u.name])
            .await
    }

    async fn save_user_callback(&self, r: Request<UserReq>) -> Result<Response<()>, Status> {
        let u = r.get_ref().clone();
        let sql = "DELETE FROM users WHERE id = ?".to_owned();
        self.0
            .guarded(r.metadata(), None, sql, vec![u.user_id])
            .await
    }
}

struct ScoreService(Db);

#[tonic::async_trait]
impl UserScore for ScoreService {
    async fn save_user_score(&self, r: Request<ScoreReq>) -> Result<Response<()>, Status> {
        let s = r.get_ref().clone();
        let refuse = (s.score == 10).then(|| "a score of 10 is refused".to_owned());
        let sql = "INSERT INTO user_score (user_id, score) VALUES (?, ?)".to_owned();
        let args = vec![s.user_id, s.score.to_string()];
        self.0.guarded(r.metadata(), refuse, sql, args).await
    }

    async fn save_user_score_callback(&self, r: Request<ScoreReq>) -> Result<Response<()>, Status> {
        let s = r.get_ref().clone();
        let sql = "DELETE FROM user_score WHERE user_id = ?".to_owned();
        self.0
            .guarded(r.metadata(), None, sql, vec![s.user_id])
            .await
    }
}

/// Serves the two services, each on its own port, registered in etcd
/// under `user.rpc/` and `score.rpc/` as go-zero registers them.
async fn start_services(db: &Db, etcd: &mut Client) {
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        let lease = etcd.lease_grant(10, None).await.unwrap().id();
        etcd.put(
            format!("{key}/{lease}"),
            addr,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    }
}

/// The dtx registered in etcd under `dtmservice/`, once it is there.
async fn find_dtx(etcd: &EtcdServer) -> DtmGrpc {
    let target = format!("etcd://{}/dtmservice", etcd.addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match DtmGrpc::connect(&target).await {
            Ok(dtm) => return dtm,
            Err(e) => assert!(Instant::now() < deadline, "dtx never registered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(pool: &MySqlPool, sql: &str, id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_is_registered_by_a_grpc_saga_found_through_etcd_and_a_refused_score_rolls_it_back()
{
    let etcd = EtcdServer::start();
    let grpc_port = free_port().to_string();
    let register = format!("etcd://{}/dtmservice", etcd.addr());
    let dtx = Dtx::start_with(&[
        ("DTX_GRPC_PORT", grpc_port.as_str()),
        ("DTX_GRPC_REGISTER", register.as_str()),
    ]);
    let my = MyDb::create().await;
    for ddl in [
        "CREATE TABLE users (id VARCHAR(64) PRIMARY KEY, name VARCHAR(64) NOT NULL)",
        "CREATE TABLE user_score (user_id VARCHAR(64) PRIMARY KEY, score BIGINT NOT NULL)",
    ] {
        sqlx::query(ddl).execute(&my.pool).await.unwrap();
    }
    let db = Db {
        pool: my.pool.clone(),
        barrier_table: my.barrier_table.clone(),
    };
    let mut etcd_client = Client::connect([etcd.addr()], None).await.unwrap();
    start_services(&db, &mut etcd_client).await;
    let dtm = find_dtx(&etcd).await;
    let e = etcd.addr();
    let user = format!("etcd://{e}/user.rpc/user.User/saveUser");
    let user_back = format!("etcd://{e}/user.rpc/user.User/saveUserCallback");
    let score = format!("etcd://{e}/score.rpc/score.UserScore/saveUserScore");
    let score_back = format!("etcd://{e}/score.rpc/score.UserScore/saveUserScoreCallback");
    let register_user = |uid: &str, points: i64| {
        let u = UserReq {
            user_id: uid.to_owned(),
            name: "ann".into(),
            score: points,
        };
        let s = ScoreReq {
            user_id: uid.to_owned(),
            score: points,
        };
        (u, s)
    };
    let users = "SELECT COUNT(*) FROM users WHERE id = ?";
    let scores = "SELECT COUNT(*) FROM user_score WHERE user_id = ?";

    // success: both rows are there
    let g = dtm.new_gid().await.unwrap();
    let (u, s) = register_user("u1", 90);
    dtm.saga(&g)
        .add(&user, &user_back, &u)
        .add(&score, &score_back, &s)
        .wait_result(true)
        .submit()
        .await
        .unwrap();
    assert_eq!(count(&my.pool, users, "u1").await, 1);
    assert_eq!(count(&my.pool, scores, "u1").await, 1);
    assert_eq!(
        dtx.dtm.status(&g).await.unwrap().as_deref(),
        Some("succeed")
    );

    // a score of 10: ABORTED, the saga fails, the user row is compensated
    let g = gid("gozero-refused");
    let (u, s) = register_user("u2", 10);
    let refused = dtm
        .saga(&g)
        .add(&user, &user_back, &u)
        .add(&score, &score_back, &s)
        .wait_result(true)
        .submit()
        .await;
    assert!(matches!(refused, Err(Error::Failure(_))), "{refused:?}");
    assert_eq!(dtx.dtm.status(&g).await.unwrap().as_deref(), Some("failed"));
    assert_eq!(count(&my.pool, users, "u2").await, 0, "compensated");
    assert_eq!(count(&my.pool, scores, "u2").await, 0);
    let branches = dtx.branches(&g).await;
    assert_eq!(
        branches,
        [
            "compensate:succeed",
            "action:succeed",
            "compensate:succeed",
            "action:failed"
        ]
    );
}
