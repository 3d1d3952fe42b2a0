//! The example services, each scenario against a real dtx and real
//! databases created for the test.

use dtx_client::{BranchBarrier, TransOptions};

use crate::support::{gid, serve, Dtx, MyDb, PgDb};

#[path = "../../examples/msg_transfer.rs"]
mod msg_transfer;

async fn msg_bank() -> (Dtx, PgDb, MyDb, msg_transfer::Banks, String) {
    let dtx = Dtx::start();
    let pg = PgDb::create().await;
    let my = MyDb::create().await;
    let banks = msg_transfer::Banks {
        out: pg.pool.clone(),
        into: my.pool.clone(),
        into_barrier: my.barrier_table.clone(),
    };
    msg_transfer::setup(&banks).await.unwrap();
    let url = serve(msg_transfer::router(banks.clone())).await;
    (dtx, pg, my, banks, url)
}

#[tokio::test]
async fn msg_transfer_moves_the_money() {
    let (dtx, _pg, _my, banks, url) = msg_bank().await;
    let g = gid("msg-transfer");
    msg_transfer::transfer(&dtx.dtm, &banks, &url, &g, 30)
        .await
        .unwrap();
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(msg_transfer::balances(&banks).await.unwrap(), (70, 130));
}

#[tokio::test]
async fn msg_transfer_with_a_failing_debit_sends_nothing() {
    let (dtx, _pg, _my, banks, url) = msg_bank().await;
    let g = gid("msg-insufficient");
    let e = msg_transfer::transfer(&dtx.dtm, &banks, &url, &g, 500)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    dtx.wait_status(&g, "failed").await;
    assert_eq!(dtx.branches(&g).await, ["action:prepared"]);
    assert_eq!(msg_transfer::balances(&banks).await.unwrap(), (100, 100));
}

#[tokio::test]
async fn msg_transfer_after_a_crash_is_found_by_the_check_back_and_credited_once() {
    let (dtx, _pg, _my, banks, url) = msg_bank().await;
    let g = gid("msg-crash");
    let options = TransOptions {
        timeout_to_fail: Some(1),
        ..Default::default()
    };
    let mut msg = msg_transfer::transfer_msg(&dtx.dtm, &g, &url, 30).options(options);
    msg.prepare(&format!("{url}/bank1/query-prepared"))
        .await
        .unwrap();
    // The local transaction commits, then the process "dies" before submit.
    BranchBarrier::new("msg", &g, "00", "msg")
        .call_postgres(&banks.out, |c| {
            Box::pin(msg_transfer::debit(dtx_client::DbConn::Postgres(c), 1, 30))
        })
        .await
        .unwrap();
    drop(msg);
    assert_eq!(msg_transfer::balances(&banks).await.unwrap(), (70, 100));
    // dtx checks back after timeout_to_fail, finds the commit, submits.
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(msg_transfer::balances(&banks).await.unwrap(), (70, 130));
    // A repeated delivery of trans-in changes nothing.
    let reply = reqwest::Client::new()
        .post(format!("{url}/bank2/trans-in"))
        .query(&[
            ("gid", g.as_str()),
            ("trans_type", "msg"),
            ("branch_id", "01"),
            ("op", "action"),
        ])
        .json(&msg_transfer::Transfer {
            user_id: 2,
            amount: 30,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(msg_transfer::balances(&banks).await.unwrap(), (70, 130));
}

#[path = "../../examples/tcc_transfer.rs"]
mod tcc_transfer;

async fn tcc_bank() -> (Dtx, PgDb, String) {
    let dtx = Dtx::start();
    let pg = PgDb::create().await;
    tcc_transfer::setup(&pg.pool).await.unwrap();
    let url = serve(tcc_transfer::router(pg.pool.clone())).await;
    (dtx, pg, url)
}

#[tokio::test]
async fn tcc_transfer_confirms_frozen_funds() {
    let (dtx, pg, url) = tcc_bank().await;
    let g = gid("tcc-transfer");
    tcc_transfer::transfer(&dtx.dtm, &url, &g, 30)
        .await
        .unwrap();
    dtx.wait_status(&g, "succeed").await;
    assert_eq!(tcc_transfer::account(&pg.pool, 1).await.unwrap(), (70, 0));
    assert_eq!(tcc_transfer::account(&pg.pool, 2).await.unwrap(), (130, 0));
}

#[tokio::test]
async fn tcc_transfer_with_insufficient_balance_unfreezes_everything() {
    let (dtx, pg, url) = tcc_bank().await;
    let g = gid("tcc-insufficient");
    let e = tcc_transfer::transfer(&dtx.dtm, &url, &g, 101)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    dtx.wait_status(&g, "failed").await;
    assert_eq!(tcc_transfer::account(&pg.pool, 1).await.unwrap(), (100, 0));
    assert_eq!(tcc_transfer::account(&pg.pool, 2).await.unwrap(), (100, 0));
}

/// Calls a TCC handler directly, as a coordinator retrying would.
async fn tcc_call(url: &str, g: &str, branch: &str, op: &str, user_id: i64, amount: i64) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/tcc/{op}"))
        .query(&[
            ("gid", g),
            ("trans_type", "tcc"),
            ("branch_id", branch),
            ("op", op),
        ])
        .json(&tcc_transfer::Leg { user_id, amount })
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn tcc_transfer_handlers_survive_duplicate_and_out_of_order_requests() {
    let (_dtx, pg, url) = tcc_bank().await;
    // try, try again, confirm, confirm again: frozen once, moved once.
    let g1 = gid("tcc-dup");
    assert_eq!(tcc_call(&url, &g1, "01", "try", 1, -30).await, 200);
    assert_eq!(tcc_call(&url, &g1, "01", "try", 1, -30).await, 200);
    assert_eq!(
        tcc_transfer::account(&pg.pool, 1).await.unwrap(),
        (100, -30)
    );
    assert_eq!(tcc_call(&url, &g1, "01", "confirm", 1, -30).await, 200);
    assert_eq!(tcc_call(&url, &g1, "01", "confirm", 1, -30).await, 200);
    assert_eq!(tcc_transfer::account(&pg.pool, 1).await.unwrap(), (70, 0));

    // cancel before try (null compensation), then the late try (hanging):
    // nothing is frozen, and a repeated cancel does nothing.
    let g2 = gid("tcc-disorder");
    assert_eq!(tcc_call(&url, &g2, "01", "cancel", 2, -50).await, 200);
    assert_eq!(tcc_call(&url, &g2, "01", "try", 2, -50).await, 200);
    assert_eq!(tcc_call(&url, &g2, "01", "cancel", 2, -50).await, 200);
    assert_eq!(tcc_transfer::account(&pg.pool, 2).await.unwrap(), (100, 0));

    // try then cancel twice: unfrozen once.
    let g3 = gid("tcc-cancel");
    assert_eq!(tcc_call(&url, &g3, "01", "try", 2, -40).await, 200);
    assert_eq!(tcc_call(&url, &g3, "01", "cancel", 2, -40).await, 200);
    assert_eq!(tcc_call(&url, &g3, "01", "cancel", 2, -40).await, 200);
    assert_eq!(tcc_transfer::account(&pg.pool, 2).await.unwrap(), (100, 0));

    // A try beyond the balance is refused with 409.
    let g4 = gid("tcc-refused");
    assert_eq!(tcc_call(&url, &g4, "01", "try", 1, -71).await, 409);
}

#[path = "../../examples/saga_register.rs"]
mod saga_register;

#[tokio::test]
async fn saga_register_saves_both_rows_and_rolls_back_a_refused_score() {
    let dtx = Dtx::start();
    let pg = PgDb::create().await;
    let my = MyDb::create().await;
    let s = saga_register::Services {
        users: pg.pool.clone(),
        scores: my.pool.clone(),
        scores_barrier: my.barrier_table.clone(),
    };
    saga_register::setup(&s).await.unwrap();
    let url = serve(saga_register::router(s.clone())).await;

    let g1 = gid("saga-register");
    saga_register::register(&dtx.dtm, &url, &g1, "alice", 7)
        .await
        .unwrap();
    dtx.wait_status(&g1, "succeed").await;
    assert_eq!(
        saga_register::rows(&s, "alice").await.unwrap(),
        (true, true)
    );

    let g2 = gid("saga-register-refused");
    let e = saga_register::register(&dtx.dtm, &url, &g2, "bob", 10)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    dtx.wait_status(&g2, "failed").await;
    assert_eq!(
        saga_register::rows(&s, "bob").await.unwrap(),
        (false, false)
    );
    // alice is untouched by bob's rollback.
    assert_eq!(
        saga_register::rows(&s, "alice").await.unwrap(),
        (true, true)
    );
}
