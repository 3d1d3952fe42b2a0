//! Cross-bank transfer with a 2-phase message.
//!
//! Bank 1 (PostgreSQL) debits the sender and commits the msg atomically
//! with `do_and_submit_db`; dtx then calls bank 2 (MariaDB), which credits
//! the receiver through the barrier. If bank 1 dies between its local
//! commit and the submit, dtx asks bank 1's check-back, which answers from
//! the barrier table.
//!
//! Run (with `cargo run -- --dev` serving dtx on :36789):
//!
//! ```sh
//! cargo run -p dtx-client --example msg_transfer
//! ```
//!
//! Environment: `DTX_URL` (default `http://127.0.0.1:36789/api/dtmsvr`),
//! `PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `MYSQL_URL` (default `mysql://root@127.0.0.1:3306/mysql`); the example
//! creates and uses databases named `dtx_example_msg` on both.

#![allow(dead_code, unreachable_pub, missing_docs)]

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use dtx_client::axum::{BranchParams, Success};
use dtx_client::{BarrierDb, DbConn, Dtm, Error, Msg};
use serde::{Deserialize, Serialize};
use sqlx::{MySqlPool, PgPool};

/// The two banks' databases.
#[derive(Clone)]
pub struct Banks {
    /// Bank 1: the sender's account and the msg barrier.
    pub out: PgPool,
    /// Bank 2: the receiver's account and its barrier.
    pub into: MySqlPool,
    /// Bank 2's barrier table.
    pub into_barrier: String,
}

/// What trans-in receives.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub user_id: i64,
    pub amount: i64,
}

/// Creates the account tables and barrier tables, and two accounts with
/// 100 each (user 1 in bank 1, user 2 in bank 2).
pub async fn setup(banks: &Banks) -> sqlx::Result<()> {
    for stmt in dtx_client::barrier::postgres_ddl(dtx_client::barrier::DEFAULT_TABLE) {
        sqlx::query(&stmt).execute(&banks.out).await?;
    }
    for stmt in dtx_client::barrier::mysql_ddl(&banks.into_barrier) {
        sqlx::query(&stmt).execute(&banks.into).await?;
    }
    let table = "CREATE TABLE IF NOT EXISTS account (user_id bigint PRIMARY KEY, \
                 balance bigint NOT NULL, trading_balance bigint NOT NULL DEFAULT 0)";
    sqlx::query(table).execute(&banks.out).await?;
    sqlx::query(table).execute(&banks.into).await?;
    sqlx::query("DELETE FROM account")
        .execute(&banks.out)
        .await?;
    sqlx::query("DELETE FROM account")
        .execute(&banks.into)
        .await?;
    sqlx::query("INSERT INTO account (user_id, balance) VALUES (1, 100)")
        .execute(&banks.out)
        .await?;
    sqlx::query("INSERT INTO account (user_id, balance) VALUES (2, 100)")
        .execute(&banks.into)
        .await?;
    Ok(())
}

/// Bank 2's trans-in and bank 1's check-back.
pub fn router(banks: Banks) -> Router {
    Router::new()
        .route("/bank2/trans-in", post(trans_in))
        .route("/bank1/query-prepared", get(query_prepared))
        .with_state(banks)
}

async fn trans_in(
    State(banks): State<Banks>,
    params: BranchParams,
    Json(t): Json<Transfer>,
) -> dtx_client::Result<Success> {
    params
        .barrier()
        .with_table(banks.into_barrier.clone())
        .call_mysql(&banks.into, |c| {
            Box::pin(async move {
                sqlx::query("UPDATE account SET balance = balance + ? WHERE user_id = ?")
                    .bind(t.amount)
                    .bind(t.user_id)
                    .execute(c)
                    .await?;
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

async fn query_prepared(
    State(banks): State<Banks>,
    params: BranchParams,
) -> dtx_client::Result<Success> {
    params.barrier().query_prepared_postgres(&banks.out).await?;
    Ok(Success)
}

/// The debit of bank 1, run inside the msg's local transaction: FAILURE
/// when the balance is too low.
pub async fn debit(conn: DbConn<'_>, user_id: i64, amount: i64) -> dtx_client::Result<()> {
    let DbConn::Postgres(c) = conn else {
        return Err(Error::other("bank 1 is on PostgreSQL"));
    };
    let done = sqlx::query(
        "UPDATE account SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1",
    )
    .bind(amount)
    .bind(user_id)
    .execute(c)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(Error::failure("insufficient balance"));
    }
    Ok(())
}

/// The msg for a transfer of `amount` to user 2.
pub fn transfer_msg(dtm: &Dtm, gid: &str, service: &str, amount: i64) -> Msg {
    Msg::new(dtm, gid).add(
        &format!("{service}/bank2/trans-in"),
        &Transfer { user_id: 2, amount },
    )
}

/// Transfers `amount` from user 1 (bank 1) to user 2 (bank 2).
pub async fn transfer(
    dtm: &Dtm,
    banks: &Banks,
    service: &str,
    gid: &str,
    amount: i64,
) -> dtx_client::Result<()> {
    transfer_msg(dtm, gid, service, amount)
        .do_and_submit_db(
            &format!("{service}/bank1/query-prepared"),
            &BarrierDb::Postgres(banks.out.clone()),
            dtx_client::barrier::DEFAULT_TABLE,
            move |conn| Box::pin(debit(conn, 1, amount)),
        )
        .await
}

/// The balance of a user in bank 1 (`Pg`) or bank 2.
pub async fn balances(banks: &Banks) -> sqlx::Result<(i64, i64)> {
    let b1 = sqlx::query_scalar("SELECT balance FROM account WHERE user_id = 1")
        .fetch_one(&banks.out)
        .await?;
    let b2 = sqlx::query_scalar("SELECT balance FROM account WHERE user_id = 2")
        .fetch_one(&banks.into)
        .await?;
    Ok((b1, b2))
}

async fn ensure_db_pg(admin_url: &str, name: &str) -> sqlx::Result<PgPool> {
    let admin = PgPool::connect(admin_url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&admin)
        .await?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
    }
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    PgPool::connect(&format!("{base}/{name}")).await
}

async fn ensure_db_mysql(admin_url: &str, name: &str) -> sqlx::Result<MySqlPool> {
    let admin = MySqlPool::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE IF NOT EXISTS {name}"))
        .execute(&admin)
        .await?;
    let (base, _) = admin_url.rsplit_once('/').unwrap_or((admin_url, ""));
    MySqlPool::connect(&format!("{base}/{name}")).await
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dtm = Dtm::new(env_or("DTX_URL", "http://127.0.0.1:36789/api/dtmsvr"));
    let pg = env_or("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres");
    let my = env_or("MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql");
    let banks = Banks {
        out: ensure_db_pg(&pg, "dtx_example_msg").await?,
        into: ensure_db_mysql(&my, "dtx_example_msg").await?,
        into_barrier: "barrier".to_owned(),
    };
    setup(&banks).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let service = format!("http://{}", listener.local_addr()?);
    let app = router(banks.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let gid = dtm.new_gid().await?;
    transfer(&dtm, &banks, &service, &gid, 30).await?;
    println!("transfer {gid} of 30 submitted; balances before: (100, 100)");
    for _ in 0..100 {
        if dtm.status(&gid).await?.as_deref() == Some("succeed") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "status {:?}, balances (bank1 user1, bank2 user2): {:?}",
        dtm.status(&gid).await?,
        balances(&banks).await?
    );
    Ok(())
}
