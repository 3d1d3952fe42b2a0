//! XA on MariaDB against a real dtx and a real axum bank service: a
//! transfer that commits both branches, and one whose second branch fails,
//! so the first is rolled back.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use dtx_client::axum::Success;
use dtx_client::xa::XaParams;
use dtx_client::{xa_global_transaction, Error, XaMysql};
use serde_json::{json, Value};
use sqlx::MySqlPool;

use crate::support::{gid, serve, Dtx, MyDb};

/// A bank whose `/xa/{account}` adds the body's `amount` to that account
/// in an XA branch; the account named in `refuse` refuses after updating.
#[derive(Clone)]
struct Bank {
    xa: XaMysql,
    refuse: Arc<Mutex<Option<i64>>>,
}

async fn xa_branch(
    State(bank): State<Bank>,
    Path(account): Path<i64>,
    params: XaParams,
    body: Bytes,
) -> dtx_client::Result<Success> {
    if params.op != "action" {
        bank.xa.xa_phase2(&params).await?;
        return Ok(Success);
    }
    let body: Value = serde_json::from_slice(&body)?;
    let amount = body["amount"].as_i64().unwrap_or(0);
    let refuse = *bank.refuse.lock().unwrap() == Some(account);
    bank.xa
        .xa_local(&params, move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE account SET balance = balance + ? WHERE id = ?")
                    .bind(amount)
                    .bind(account)
                    .execute(&mut *c)
                    .await?;
                if refuse {
                    return Err(Error::failure(format!("account {account} refuses")));
                }
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

async fn setup() -> (Dtx, MyDb, Bank, String) {
    let dtx = Dtx::start();
    let db = MyDb::create().await;
    sqlx::query("CREATE TABLE account (id int PRIMARY KEY, balance bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO account VALUES (1, 100), (2, 100)")
        .execute(&db.pool)
        .await
        .unwrap();
    let bank = Bank {
        xa: XaMysql::new(db.pool.clone(), dtx.dtm.clone()).with_table(db.barrier_table.clone()),
        refuse: Arc::default(),
    };
    let url = serve(
        Router::new()
            .route("/xa/{account}", post(xa_branch))
            .with_state(bank.clone()),
    )
    .await;
    (dtx, db, bank, url)
}

async fn balances(pool: &MySqlPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT balance FROM account ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Prepared XA transactions of this gid still pending in the server.
async fn pending_xids(pool: &MySqlPool, gid: &str) -> usize {
    let rows: Vec<(i64, i64, i64, Vec<u8>)> =
        sqlx::query_as("XA RECOVER").fetch_all(pool).await.unwrap();
    rows.iter()
        .filter(|r| String::from_utf8_lossy(&r.3).starts_with(gid))
        .count()
}

async fn transfer(dtx: &Dtx, url: &str, g: &str) -> dtx_client::Result<()> {
    let url = url.to_owned();
    xa_global_transaction(&dtx.dtm, g, |xa| async move {
        xa.call_branch(&json!({"amount": -30}), &format!("{url}/xa/1"))
            .await?;
        xa.call_branch(&json!({"amount": 30}), &format!("{url}/xa/2"))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn xa_mysql_transfer_commits_both_branches() {
    let (dtx, db, _bank, url) = setup().await;
    let g = gid("xa-ok");
    transfer(&dtx, &url, &g).await.unwrap();
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(
        dtx.branches(&g).await,
        [
            "rollback:prepared",
            "commit:succeed",
            "rollback:prepared",
            "commit:succeed"
        ]
    );
    assert_eq!(balances(&db.pool).await, [70, 130]);
    assert_eq!(pending_xids(&db.pool, &g).await, 0);
}

#[tokio::test]
async fn xa_mysql_failed_second_branch_rolls_back_the_first() {
    let (dtx, db, bank, url) = setup().await;
    *bank.refuse.lock().unwrap() = Some(2);
    let g = gid("xa-fail");
    let err = transfer(&dtx, &url, &g).await.unwrap_err();
    assert!(err.is_failure(), "{err}");
    dtx.wait_status(&g, "failed").await;
    // Only the first branch registered; its rollback ran.
    assert_eq!(
        dtx.branches(&g).await,
        ["rollback:succeed", "commit:prepared"]
    );
    assert_eq!(balances(&db.pool).await, [100, 100]);
    assert_eq!(pending_xids(&db.pool, &g).await, 0);
    let q = dtx.dtm.query(&g).await.unwrap();
    assert!(q["transaction"]["rollback_reason"]
        .as_str()
        .unwrap()
        .contains("account 2 refuses"));
}

#[tokio::test]
async fn xa_mysql_panic_in_the_scope_aborts_and_resumes_it() {
    let (dtx, db, _bank, url) = setup().await;
    let g = gid("xa-panic");
    let (dtm, g2) = (dtx.dtm.clone(), g.clone());
    let joined = tokio::spawn(async move {
        xa_global_transaction(&dtm, &g2, |xa| async move {
            xa.call_branch(&json!({"amount": -30}), &format!("{url}/xa/1"))
                .await?;
            if xa.gid().starts_with("xa-panic") {
                panic!("bug in the scope");
            }
            Ok(())
        })
        .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    dtx.wait_status(&g, "failed").await;
    assert_eq!(
        dtx.branches(&g).await,
        ["rollback:succeed", "commit:prepared"]
    );
    assert_eq!(balances(&db.pool).await, [100, 100]);
    assert_eq!(pending_xids(&db.pool, &g).await, 0);
}

/// The PostgreSQL bank: the same transfer on a private server.
#[derive(Clone)]
struct PgBank {
    xa: dtx_client::XaPostgres,
    refuse: Option<i64>,
}

async fn pg_xa_branch(
    State(bank): State<PgBank>,
    Path(account): Path<i64>,
    params: XaParams,
    body: Bytes,
) -> dtx_client::Result<Success> {
    if params.op != "action" {
        bank.xa.xa_phase2(&params).await?;
        return Ok(Success);
    }
    let body: Value = serde_json::from_slice(&body)?;
    let amount = body["amount"].as_i64().unwrap_or(0);
    let refuse = bank.refuse == Some(account);
    bank.xa
        .xa_local(&params, move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE account SET balance = balance + $1 WHERE id = $2")
                    .bind(amount)
                    .bind(account as i32)
                    .execute(&mut *c)
                    .await?;
                if refuse {
                    return Err(Error::failure(format!("account {account} refuses")));
                }
                Ok(())
            })
        })
        .await?;
    Ok(Success)
}

#[tokio::test]
async fn xa_postgres_transfer_commits_and_a_refused_one_rolls_back() {
    let pg = crate::support::PrivatePg::start();
    let dtx = Dtx::start();
    let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
    for stmt in dtx_client::barrier::postgres_ddl(dtx_client::barrier::DEFAULT_TABLE) {
        sqlx::query(&stmt).execute(&pool).await.unwrap();
    }
    sqlx::query("CREATE TABLE account (id int PRIMARY KEY, balance bigint NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO account VALUES (1, 100), (2, 100)")
        .execute(&pool)
        .await
        .unwrap();
    let xa = dtx_client::XaPostgres::new(pool.clone(), dtx.dtm.clone());
    let serve_bank = |refuse| {
        serve(
            Router::new()
                .route("/xa/{account}", post(pg_xa_branch))
                .with_state(PgBank {
                    xa: xa.clone(),
                    refuse,
                }),
        )
    };
    let balances = || async {
        sqlx::query_scalar::<_, i64>("SELECT balance FROM account ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let prepared = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_prepared_xacts")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    let url = serve_bank(None).await;
    let g = gid("pgxa-ok");
    transfer(&dtx, &url, &g).await.unwrap();
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(
        dtx.branches(&g).await,
        [
            "rollback:prepared",
            "commit:succeed",
            "rollback:prepared",
            "commit:succeed"
        ]
    );
    assert_eq!(balances().await, [70, 130]);
    assert_eq!(prepared().await, 0);

    let url = serve_bank(Some(2)).await;
    let g = gid("pgxa-fail");
    let err = transfer(&dtx, &url, &g).await.unwrap_err();
    assert!(err.is_failure(), "{err}");
    dtx.wait_status(&g, "failed").await;
    assert_eq!(
        dtx.branches(&g).await,
        ["rollback:succeed", "commit:prepared"]
    );
    assert_eq!(balances().await, [70, 130]);
    assert_eq!(prepared().await, 0);
    pool.close().await;
}
