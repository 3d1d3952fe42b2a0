//! TCC transfer with frozen funds, on PostgreSQL.
//!
//! Try freezes the amount in `trading_balance` (refusing when
//! `balance + trading_balance` would go negative), confirm moves it into
//! `balance`, cancel unfreezes it. Every handler goes through the barrier,
//! so repeated, early (cancel before try) and late (try after cancel)
//! requests are harmless.
//!
//! Run (with `cargo run -- --dev` serving dtx on :36789):
//!
//! ```sh
//! cargo run -p dtx-client --example tcc_transfer
//! ```
//!
//! Environment: `DTX_URL` (default `http://127.0.0.1:36789/api/dtmsvr`) and
//! `PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); the
//! example creates and uses the database `dtx_example_tcc`.

#![allow(dead_code, unreachable_pub, missing_docs)]

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use dtx_client::axum::{BranchParams, Success};
use dtx_client::{tcc_global_transaction, Dtm, Error};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// One side of a transfer: `amount` is negative for the sender.
#[derive(Debug, Serialize, Deserialize)]
pub struct Leg {
    pub user_id: i64,
    pub amount: i64,
}

/// Creates the account and barrier tables; users 1 and 2 start with 100.
pub async fn setup(pool: &PgPool) -> sqlx::Result<()> {
    for stmt in dtx_client::barrier::postgres_ddl(dtx_client::barrier::DEFAULT_TABLE) {
        sqlx::query(&stmt).execute(pool).await?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS account (user_id bigint PRIMARY KEY, \
         balance bigint NOT NULL, trading_balance bigint NOT NULL DEFAULT 0)",
    )
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM account").execute(pool).await?;
    sqlx::query("INSERT INTO account (user_id, balance) VALUES (1, 100), (2, 100)")
        .execute(pool)
        .await?;
    Ok(())
}

/// `POST /tcc/{try|confirm|cancel}`.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/tcc/{phase}", post(phase))
        .with_state(pool)
}

async fn phase(
    State(pool): State<PgPool>,
    Path(phase): Path<String>,
    params: BranchParams,
    Json(leg): Json<Leg>,
) -> dtx_client::Result<Success> {
    let sql = match phase.as_str() {
        "try" => {
            "UPDATE account SET trading_balance = trading_balance + $1 \
             WHERE user_id = $2 AND balance + trading_balance + $1 >= 0"
        }
        "confirm" => {
            "UPDATE account SET balance = balance + $1, trading_balance = trading_balance - $1 \
             WHERE user_id = $2"
        }
        "cancel" => "UPDATE account SET trading_balance = trading_balance - $1 WHERE user_id = $2",
        other => return Err(Error::other(format!("unknown phase {other}"))),
    };
    params
        .barrier()
        .call_postgres(&pool, |c| {
            Box::pin(async move {
                let done = sqlx::query(sql)
                    .bind(leg.amount)
                    .bind(leg.user_id)
                    .execute(c)
                    .await?
                    .rows_affected();
                if done == 0 {
                    return Err(Error::failure("insufficient balance"));
                }
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

/// Transfers `amount` from user 1 to user 2 as one TCC transaction.
pub async fn transfer(dtm: &Dtm, service: &str, gid: &str, amount: i64) -> dtx_client::Result<()> {
    let [try_url, confirm, cancel] =
        ["try", "confirm", "cancel"].map(|p| format!("{service}/tcc/{p}"));
    tcc_global_transaction(dtm, gid, |tcc| async move {
        let out = Leg {
            user_id: 1,
            amount: -amount,
        };
        tcc.call_branch(&out, &try_url, &confirm, &cancel).await?;
        let into = Leg { user_id: 2, amount };
        tcc.call_branch(&into, &try_url, &confirm, &cancel).await?;
        Ok(())
    })
    .await
}

/// `(balance, trading_balance)` of a user.
pub async fn account(pool: &PgPool, user_id: i64) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as("SELECT balance, trading_balance FROM account WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dtm = Dtm::new(env_or("DTX_URL", "http://127.0.0.1:36789/api/dtmsvr"));
    let admin_url = env_or("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let admin = PgPool::connect(&admin_url).await?;
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'dtx_example_tcc'")
            .fetch_optional(&admin)
            .await?;
    if exists.is_none() {
        sqlx::query("CREATE DATABASE dtx_example_tcc")
            .execute(&admin)
            .await?;
    }
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
    let pool = PgPool::connect(&format!("{base}/dtx_example_tcc")).await?;
    setup(&pool).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service = format!("http://{}", listener.local_addr()?);
    let app = router(pool.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gid = dtm.new_gid().await?;
    transfer(&dtm, &service, &gid, 30).await?;
    for _ in 0..100 {
        if dtm.status(&gid).await?.as_deref() == Some("succeed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!("transfer {gid} of 30: {:?}", dtm.status(&gid).await?);
    let over = dtm.new_gid().await?;
    let refused = transfer(&dtm, &service, &over, 1000).await;
    println!("transfer {over} of 1000: {refused:?}");
    println!(
        "(balance, trading_balance): user 1 {:?}, user 2 {:?}",
        account(&pool, 1).await?,
        account(&pool, 2).await?
    );
    Ok(())
}
