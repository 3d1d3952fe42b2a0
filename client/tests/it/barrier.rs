//! The barrier on PostgreSQL, MariaDB and Redis: repeated requests, null
//! compensation, hanging, msg check-back, and rollback on error.

use dtx_client::{BranchBarrier, Error};
use sqlx::{MySqlPool, PgPool};

use crate::support::{gid, MyDb, PgDb, RedisServer};

async fn pg_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT n FROM counter WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn my_count(pool: &MySqlPool) -> i64 {
    sqlx::query_scalar("SELECT n FROM counter WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs `op` of branch 01 through the barrier, adding `add` to the counter.
macro_rules! pg_step {
    ($db:expr, $g:expr, $op:expr, $add:expr) => {
        BranchBarrier::new("saga", $g, "01", $op)
            .call_postgres(&$db.pool, |c| {
                Box::pin(async move {
                    sqlx::query("UPDATE counter SET n = n + $1 WHERE id = 1")
                        .bind($add as i64)
                        .execute(c)
                        .await?;
                    Ok(())
                })
            })
            .await
    };
}

macro_rules! my_step {
    ($db:expr, $g:expr, $op:expr, $add:expr) => {
        BranchBarrier::new("saga", $g, "01", $op)
            .with_table($db.barrier_table.clone())
            .call_mysql(&$db.pool, |c| {
                Box::pin(async move {
                    sqlx::query("UPDATE counter SET n = n + ? WHERE id = 1")
                        .bind($add as i64)
                        .execute(c)
                        .await?;
                    Ok(())
                })
            })
            .await
    };
}

#[tokio::test]
async fn postgres_barrier_skips_repeats_null_compensation_and_hanging() {
    let db = PgDb::create().await;
    sqlx::query("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter VALUES (1, 0)")
        .execute(&db.pool)
        .await
        .unwrap();

    // An action twice runs once; its compensation twice runs once.
    let g1 = gid("pg-repeat");
    pg_step!(db, &g1, "action", 10).unwrap();
    pg_step!(db, &g1, "action", 10).unwrap();
    assert_eq!(pg_count(&db.pool).await, 10);
    pg_step!(db, &g1, "compensate", -10).unwrap();
    pg_step!(db, &g1, "compensate", -10).unwrap();
    assert_eq!(pg_count(&db.pool).await, 0);

    // A compensation whose action never ran does nothing, and the late
    // action (hanging) does nothing either.
    let g2 = gid("pg-null");
    pg_step!(db, &g2, "compensate", -5).unwrap();
    pg_step!(db, &g2, "action", 5).unwrap();
    assert_eq!(pg_count(&db.pool).await, 0);

    // A business error rolls the barrier row back too: a retry runs again.
    let g3 = gid("pg-err");
    let err = BranchBarrier::new("saga", &g3, "01", "action")
        .call_postgres(&db.pool, |c| {
            Box::pin(async move {
                sqlx::query("UPDATE counter SET n = n + 7 WHERE id = 1")
                    .execute(c)
                    .await?;
                Err(Error::failure("no"))
            })
        })
        .await
        .unwrap_err();
    assert!(err.is_failure());
    assert_eq!(pg_count(&db.pool).await, 0);
    pg_step!(db, &g3, "action", 7).unwrap();
    assert_eq!(pg_count(&db.pool).await, 7);
}

#[tokio::test]
async fn postgres_query_prepared_tells_committed_from_not() {
    let db = PgDb::create().await;
    // Committed: the msg's local transaction ran, the check-back says yes.
    let g1 = gid("pg-qp");
    BranchBarrier::new("msg", &g1, "00", "msg")
        .call_postgres(&db.pool, |_| Box::pin(async { Ok(()) }))
        .await
        .unwrap();
    BranchBarrier::new("msg", &g1, "00", "msg")
        .query_prepared_postgres(&db.pool)
        .await
        .unwrap();
    // Not committed: the check-back says FAILURE, and a late local
    // transaction is refused as a duplicate.
    let g2 = gid("pg-qp-late");
    let e = BranchBarrier::new("msg", &g2, "00", "msg")
        .query_prepared_postgres(&db.pool)
        .await
        .unwrap_err();
    assert!(e.is_failure());
    let late = BranchBarrier::new("msg", &g2, "00", "msg")
        .call_postgres(&db.pool, |_| Box::pin(async { Ok(()) }))
        .await
        .unwrap_err();
    assert!(matches!(late, Error::Duplicated));
}

#[tokio::test]
async fn mysql_barrier_skips_repeats_null_compensation_and_hanging() {
    let db = MyDb::create().await;
    sqlx::query("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO counter VALUES (1, 0)")
        .execute(&db.pool)
        .await
        .unwrap();

    let g1 = gid("my-repeat");
    my_step!(db, &g1, "action", 10).unwrap();
    my_step!(db, &g1, "action", 10).unwrap();
    assert_eq!(my_count(&db.pool).await, 10);
    my_step!(db, &g1, "compensate", -10).unwrap();
    my_step!(db, &g1, "compensate", -10).unwrap();
    assert_eq!(my_count(&db.pool).await, 0);

    let g2 = gid("my-null");
    my_step!(db, &g2, "cancel", -5).unwrap();
    my_step!(db, &g2, "try", 5).unwrap();
    assert_eq!(my_count(&db.pool).await, 0);

    let g3 = gid("my-qp");
    let e = BranchBarrier::new("msg", &g3, "00", "msg")
        .with_table(db.barrier_table.clone())
        .query_prepared_mysql(&db.pool)
        .await
        .unwrap_err();
    assert!(e.is_failure());
    let g4 = gid("my-qp-ok");
    BranchBarrier::new("msg", &g4, "00", "msg")
        .with_table(db.barrier_table.clone())
        .call_mysql(&db.pool, |_| Box::pin(async { Ok(()) }))
        .await
        .unwrap();
    BranchBarrier::new("msg", &g4, "00", "msg")
        .with_table(db.barrier_table.clone())
        .query_prepared_mysql(&db.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_barrier_adjusts_once_and_refuses_overdraft() {
    let redis = RedisServer::start();
    let mut conn = crate::support::async_conn(&redis).await;
    let key = "{acct1}:balance";
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    let balance = |mut c: redis::aio::MultiplexedConnection| async move {
        redis::cmd("GET")
            .arg(key)
            .query_async::<i64>(&mut c)
            .await
            .unwrap()
    };

    let g = gid("redis");
    let action = || BranchBarrier::new("saga", &g, "01", "action");
    action()
        .redis_check_adjust_amount(&mut conn, key, -30, 60)
        .await
        .unwrap();
    action()
        .redis_check_adjust_amount(&mut conn, key, -30, 60)
        .await
        .unwrap();
    assert_eq!(balance(conn.clone()).await, 70);
    let comp = || BranchBarrier::new("saga", &g, "01", "compensate");
    comp()
        .redis_check_adjust_amount(&mut conn, key, 30, 60)
        .await
        .unwrap();
    comp()
        .redis_check_adjust_amount(&mut conn, key, 30, 60)
        .await
        .unwrap();
    assert_eq!(balance(conn.clone()).await, 100);

    // Overdraft is a FAILURE and changes nothing.
    let g2 = gid("redis-over");
    let e = BranchBarrier::new("saga", &g2, "01", "action")
        .redis_check_adjust_amount(&mut conn, key, -500, 60)
        .await
        .unwrap_err();
    assert!(e.is_failure());
    // Its compensation is then a null compensation.
    BranchBarrier::new("saga", &g2, "01", "compensate")
        .redis_check_adjust_amount(&mut conn, key, 500, 60)
        .await
        .unwrap();
    assert_eq!(balance(conn.clone()).await, 100);

    // Every barrier key carries the business key's hash tag.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("dtx-barrier:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("dtx-barrier:{acct1}:")));

    // msg check-back: not run → FAILURE, then the late local op is a duplicate.
    let g3 = gid("redis-msg");
    let msg = || BranchBarrier::new("msg", &g3, "00", "msg");
    assert!(msg()
        .redis_query_prepared(&mut conn, key, 60)
        .await
        .unwrap_err()
        .is_failure());
    assert!(matches!(
        msg()
            .redis_check_adjust_amount(&mut conn, key, -1, 60)
            .await
            .unwrap_err(),
        Error::Duplicated
    ));
    let g4 = gid("redis-msg-ok");
    let msg = || BranchBarrier::new("msg", &g4, "00", "msg");
    msg()
        .redis_check_adjust_amount(&mut conn, key, -1, 60)
        .await
        .unwrap();
    msg()
        .redis_query_prepared(&mut conn, key, 60)
        .await
        .unwrap();
    assert_eq!(balance(conn.clone()).await, 99);
}
