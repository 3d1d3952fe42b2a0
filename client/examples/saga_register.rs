//! User registration with a score, as a SAGA over two services.
//!
//! The user service (PostgreSQL) saves the user; the score service
//! (MariaDB) saves the score and refuses a score of 10. Each compensation
//! deletes what its action saved, so a refused score rolls the user back.
//!
//! Run (with `cargo run -- --dev` serving dtx on :36789):
//!
//! ```sh
//! cargo run -p dtx-client --example saga_register
//! ```
//!
//! Environment: `DTX_URL`, `PG_URL` and `MYSQL_URL` as in `msg_transfer`;
//! the example creates and uses databases named `dtx_example_saga`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use dtx_client::axum::{BranchParams, Success};
use dtx_client::{Dtm, Error, Saga};
use serde::{Deserialize, Serialize};
use sqlx::{MySqlPool, PgPool};

/// The two services' databases.
#[derive(Clone)]
pub struct Services {
    /// Users, on PostgreSQL.
    pub users: PgPool,
    /// Scores, on MariaDB.
    pub scores: MySqlPool,
    /// The score database's barrier table.
    pub scores_barrier: String,
}

/// The request both steps receive.
#[derive(Debug, Serialize, Deserialize)]
pub struct Registration {
    pub name: String,
    pub score: i64,
}

/// Creates the tables.
pub async fn setup(s: &Services) -> sqlx::Result<()> {
    for stmt in dtx_client::barrier::postgres_ddl(dtx_client::barrier::DEFAULT_TABLE) {
        sqlx::query(&stmt).execute(&s.users).await?;
    }
    for stmt in dtx_client::barrier::mysql_ddl(&s.scores_barrier) {
        sqlx::query(&stmt).execute(&s.scores).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS users (name varchar(64) PRIMARY KEY)")
        .execute(&s.users)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS scores (name varchar(64) PRIMARY KEY, score bigint NOT NULL)",
    )
    .execute(&s.scores)
    .await?;
    Ok(())
}

/// The four branch routes.
pub fn router(s: Services) -> Router {
    Router::new()
        .route("/user/save", post(save_user))
        .route("/user/delete", post(delete_user))
        .route("/score/save", post(save_score))
        .route("/score/delete", post(delete_score))
        .with_state(s)
}

async fn save_user(
    State(s): State<Services>,
    params: BranchParams,
    Json(r): Json<Registration>,
) -> dtx_client::Result<Success> {
    user_sql(&s, &params, "INSERT INTO users (name) VALUES ($1)", r.name).await
}

async fn delete_user(
    State(s): State<Services>,
    params: BranchParams,
    Json(r): Json<Registration>,
) -> dtx_client::Result<Success> {
    user_sql(&s, &params, "DELETE FROM users WHERE name = $1", r.name).await
}

async fn user_sql(
    s: &Services,
    params: &BranchParams,
    sql: &'static str,
    name: String,
) -> dtx_client::Result<Success> {
    params
        .barrier()
        .call_postgres(&s.users, |c| {
            Box::pin(async move {
                sqlx::query(sql).bind(name).execute(c).await?;
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

async fn save_score(
    State(s): State<Services>,
    params: BranchParams,
    Json(r): Json<Registration>,
) -> dtx_client::Result<Success> {
    if r.score == 10 {
        return Err(Error::failure("a score of 10 is refused"));
    }
    params
        .barrier()
        .with_table(s.scores_barrier.clone())
        .call_mysql(&s.scores, |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO scores (name, score) VALUES (?, ?)")
                    .bind(r.name)
                    .bind(r.score)
                    .execute(c)
                    .await?;
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

async fn delete_score(
    State(s): State<Services>,
    params: BranchParams,
    Json(r): Json<Registration>,
) -> dtx_client::Result<Success> {
    params
        .barrier()
        .with_table(s.scores_barrier.clone())
        .call_mysql(&s.scores, |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM scores WHERE name = ?")
                    .bind(r.name)
                    .execute(c)
                    .await?;
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

/// Registers `name` with `score`; waits for the outcome.
pub async fn register(
    dtm: &Dtm,
    service: &str,
    gid: &str,
    name: &str,
    score: i64,
) -> dtx_client::Result<()> {
    let r = Registration {
        name: name.to_owned(),
        score,
    };
    Saga::new(dtm, gid)
        .add(
            &format!("{service}/user/save"),
            &format!("{service}/user/delete"),
            &r,
        )
        .add(
            &format!("{service}/score/save"),
            &format!("{service}/score/delete"),
            &r,
        )
        .wait_result()
        .submit()
        .await
}

/// Whether the user row and the score row exist.
pub async fn rows(s: &Services, name: &str) -> sqlx::Result<(bool, bool)> {
    let user: Option<String> = sqlx::query_scalar("SELECT name FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(&s.users)
        .await?;
    let score: Option<String> = sqlx::query_scalar("SELECT name FROM scores WHERE name = ?")
        .bind(name)
        .fetch_optional(&s.scores)
        .await?;
    Ok((user.is_some(), score.is_some()))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dtm = Dtm::new(env_or("DTX_URL", "http://127.0.0.1:36789/api/dtmsvr"));
    let pg_url = env_or("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let my_url = env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql");
    let pg_admin = PgPool::connect(&pg_url).await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'dtx_example_saga'")
            .fetch_optional(&pg_admin)
            .await?;
    if exists.is_none() {
        sqlx::query("CREATE DATABASE dtx_example_saga")
            .execute(&pg_admin)
            .await?;
    }
    let my_admin = MySqlPool::connect(&my_url).await?;
    sqlx::query("CREATE DATABASE IF NOT EXISTS dtx_example_saga")
        .execute(&my_admin)
        .await?;
    let base = |u: &str| {
        u.rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or_default()
    };
    let s = Services {
        users: PgPool::connect(&format!("{}/dtx_example_saga", base(&pg_url))).await?,
        scores: MySqlPool::connect(&format!("{}/dtx_example_saga", base(&my_url))).await?,
        scores_barrier: "barrier".to_owned(),
    };
    setup(&s).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service = format!("http://{}", listener.local_addr()?);
    let app = router(s.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    for (name, score) in [("alice", 7), ("bob", 10)] {
        let gid = dtm.new_gid().await?;
        let name = format!("{name}-{gid}");
        let outcome = register(&dtm, &service, &gid, &name, score).await;
        println!(
            "register {name} with score {score}: {outcome:?}; (user row, score row) = {:?}",
            rows(&s, &name).await?
        );
    }
    Ok(())
}
