//! A msg and a TCC over gRPC, end to end: a transfer between two accounts
//! on MariaDB, the account service a gRPC server inside the
//! sub-transaction barrier (its identity from gRPC metadata), the
//! coordinator reached over its gRPC API. The msg commits through the
//! barrier recipe, through its gRPC check-back, or is rolled back by it;
//! the TCC confirms, or cancels when a try is refused; the XA commits, or
//! rolls back when a branch is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtx_client::grpc::{barrier_from_metadata, status_of, xa_params_from_metadata, DtmGrpc};
use dtx_client::{BarrierDb, BranchBarrier, DbConn, Error, TransOptions, XaMysql};
use sqlx::MySqlPool;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::support::{free_port, gid, Dtx, MyDb};

mod account_pb {
    #![allow(clippy::all, unreachable_pub, missing_docs)]
    tonic::include_proto!("account");
}

use account_pb::account_server::{Account, AccountServer};
use account_pb::Transfer;

/// The account service: every method runs its SQL inside the barrier of
/// the call its metadata names, and is counted by name.
#[derive(Clone)]
struct Accounts {
    pool: MySqlPool,
    barrier_table: String,
    xa: XaMysql,
    calls: Arc<Mutex<HashMap<(String, String), u32>>>,
}

/// What a statement binds, in order.
#[derive(Clone, Copy)]
enum Arg {
    Amount,
    User,
}
use Arg::{Amount, User};

impl Accounts {
    /// Runs `sql` with `args` in the barrier of the call; when
    /// `must_change` and no row changed, the call is refused (ABORTED).
    async fn guarded(
        &self,
        method: &str,
        r: Request<Transfer>,
        sql: &'static str,
        args: &'static [Arg],
        must_change: bool,
    ) -> Result<Response<()>, Status> {
        let barrier = match barrier_from_metadata(r.metadata()) {
            Ok(b) => b.with_table(self.barrier_table.clone()),
            Err(e) => return status_of(Err(e)),
        };
        self.count(barrier.gid(), method);
        let t = r.into_inner();
        let done = barrier
            .call_mysql(&self.pool, |c| statement(c, sql, args, t, must_change))
            .await;
        status_of(done)
    }

    /// An XA branch: the action runs `sql` in a local XA transaction left
    /// prepared; `commit` and `rollback` end it. Counted as `method:op`.
    async fn xa_branch(
        &self,
        method: &str,
        r: Request<Transfer>,
        sql: &'static str,
        args: &'static [Arg],
    ) -> Result<Response<()>, Status> {
        let params = match xa_params_from_metadata(r.metadata()) {
            Ok(p) => p,
            Err(e) => return status_of(Err(e)),
        };
        self.count(&params.gid, &format!("{method}:{}", params.op));
        let t = r.into_inner();
        let done = match params.op.as_str() {
            "action" => {
                self.xa
                    .xa_local(&params, |c| statement(c, sql, args, t, true))
                    .await
            }
            _ => self.xa.xa_phase2(&params).await,
        };
        status_of(done)
    }

    fn count(&self, gid: &str, method: &str) {
        *self
            .calls
            .lock()
            .unwrap()
            .entry((gid.to_owned(), method.to_owned()))
            .or_default() += 1;
    }

    fn calls(&self, gid: &str, method: &str) -> u32 {
        let calls = self.calls.lock().unwrap();
        calls
            .get(&(gid.to_owned(), method.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

/// Runs `sql` with `args` from `t`; when `must_change` and no row changed,
/// the business refuses (FAILURE).
fn statement<'c>(
    c: &'c mut sqlx::MySqlConnection,
    sql: &'static str,
    args: &'static [Arg],
    t: Transfer,
    must_change: bool,
) -> futures_util::future::BoxFuture<'c, dtx_client::Result<()>> {
    Box::pin(async move {
        let mut q = sqlx::query(sql);
        for a in args {
            q = match a {
                Amount => q.bind(t.amount),
                User => q.bind(t.user_id.clone()),
            };
        }
        let changed = q.execute(c).await?.rows_affected();
        if must_change && changed == 0 {
            return Err(Error::Failure("insufficient balance".into()));
        }
        Ok(())
    })
}

const CREDIT: &str = "UPDATE accounts SET balance = balance + ? WHERE id = ?";
/// An incoming amount reserves nothing.
const TOUCH: &str = "UPDATE accounts SET frozen = frozen WHERE id = ?";

#[tonic::async_trait]
impl Account for Accounts {
    async fn trans_out_try(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        let sql = "UPDATE accounts SET balance = balance - ?, frozen = frozen + ? \
                   WHERE id = ? AND balance >= ?";
        let args = &[Amount, Amount, User, Amount];
        self.guarded("TransOutTry", r, sql, args, true).await
    }
    async fn trans_out_confirm(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        let sql = "UPDATE accounts SET frozen = frozen - ? WHERE id = ?";
        self.guarded("TransOutConfirm", r, sql, &[Amount, User], false)
            .await
    }
    async fn trans_out_cancel(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        let sql = "UPDATE accounts SET balance = balance + ?, frozen = frozen - ? WHERE id = ?";
        let args = &[Amount, Amount, User];
        self.guarded("TransOutCancel", r, sql, args, false).await
    }
    async fn trans_in_try(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        self.guarded("TransInTry", r, TOUCH, &[User], false).await
    }
    async fn trans_in_confirm(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        self.guarded("TransInConfirm", r, CREDIT, &[Amount, User], false)
            .await
    }
    async fn trans_in_cancel(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        self.guarded("TransInCancel", r, TOUCH, &[User], false)
            .await
    }
    async fn trans_in(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        self.guarded("TransIn", r, CREDIT, &[Amount, User], false)
            .await
    }
    async fn trans_out_xa(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        let sql = "UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?";
        self.xa_branch("TransOutXa", r, sql, &[Amount, User, Amount])
            .await
    }
    async fn trans_in_xa(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        self.xa_branch("TransInXa", r, CREDIT, &[Amount, User])
            .await
    }
    async fn query_prepared(&self, r: Request<Transfer>) -> Result<Response<()>, Status> {
        let barrier = match barrier_from_metadata(r.metadata()) {
            Ok(b) => b.with_table(self.barrier_table.clone()),
            Err(e) => return status_of(Err(e)),
        };
        self.count(barrier.gid(), "QueryPrepared");
        status_of(barrier.query_prepared_mysql(&self.pool).await)
    }
}

/// A dtx with its gRPC API, the accounts u1 and u2 holding 100 each, and
/// the account service serving on a free port.
struct Bank {
    dtx: Dtx,
    dtm: DtmGrpc,
    accounts: Accounts,
    db: MyDb,
    /// `host:port/account.Account/`, to append a method to.
    service: String,
}

impl Bank {
    async fn open() -> Self {
        let grpc_port = free_port().to_string();
        let dtx = Dtx::start_with(&[("DTX_GRPC_PORT", grpc_port.as_str())]);
        let db = MyDb::create().await;
        sqlx::query(
            "CREATE TABLE accounts (id VARCHAR(64) PRIMARY KEY, \
             balance BIGINT NOT NULL, frozen BIGINT NOT NULL)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO accounts VALUES ('u1', 100, 0), ('u2', 100, 0)")
            .execute(&db.pool)
            .await
            .unwrap();
        let dtm = DtmGrpc::connect(&format!("127.0.0.1:{grpc_port}"))
            .await
            .unwrap();
        let accounts = Accounts {
            pool: db.pool.clone(),
            barrier_table: db.barrier_table.clone(),
            xa: XaMysql::over_grpc(db.pool.clone(), dtm.clone()).with_table(&db.barrier_table),
            calls: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server =
            tonic::transport::Server::builder().add_service(AccountServer::new(accounts.clone()));
        tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
        Self {
            dtx,
            dtm,
            accounts,
            db,
            service: format!("{addr}/account.Account/"),
        }
    }

    fn method(&self, name: &str) -> String {
        format!("{}{name}", self.service)
    }

    /// (balance, frozen) of both accounts.
    async fn balances(&self) -> [(i64, i64); 2] {
        let mut out = [(0, 0); 2];
        for (i, id) in ["u1", "u2"].into_iter().enumerate() {
            out[i] = sqlx::query_as("SELECT balance, frozen FROM accounts WHERE id = ?")
                .bind(id)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        }
        out
    }

    async fn status(&self, gid: &str) -> Option<String> {
        self.dtx.dtm.status(gid).await.unwrap()
    }

    async fn wait_status(&self, gid: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.status(gid).await.as_deref() != Some(want) {
            assert!(Instant::now() < deadline, "{gid} never {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn transfer(user: &str, amount: i64) -> Transfer {
    Transfer {
        user_id: user.to_owned(),
        amount,
    }
}

/// The msg's local transaction: take `amount` from u1.
fn debit(
    amount: i64,
) -> impl for<'c> FnOnce(DbConn<'c>) -> futures_util::future::BoxFuture<'c, dtx_client::Result<()>>
{
    move |conn| {
        Box::pin(async move {
            let DbConn::MySql(c) = conn else {
                unreachable!("a MariaDB test")
            };
            let changed = sqlx::query(
                "UPDATE accounts SET balance = balance - ? WHERE id = 'u1' AND balance >= ?",
            )
            .bind(amount)
            .bind(amount)
            .execute(c)
            .await?
            .rows_affected();
            if changed == 0 {
                return Err(Error::Failure("insufficient balance".into()));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_grpc_msg_commits_with_its_local_transaction_or_not_at_all() {
    let bank = Bank::open().await;
    let db = BarrierDb::MySql(bank.db.pool.clone());
    let table = bank.db.barrier_table.clone();
    let (trans_in, check) = (bank.method("TransIn"), bank.method("QueryPrepared"));

    // the local debit and the msg commit together; the credit follows
    let g = gid("grpc-msg");
    bank.dtm
        .msg(&g)
        .add(&trans_in, &transfer("u2", 30))
        .do_and_submit_db(&check, &db, &table, debit(30))
        .await
        .unwrap();
    bank.wait_status(&g, "succeed").await;
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
    assert_eq!(bank.accounts.calls(&g, "TransIn"), 1);

    // a refused local transaction: nothing debited, the msg aborted, the
    // credit never called
    let g = gid("grpc-msg-refused");
    let refused = bank
        .dtm
        .msg(&g)
        .add(&trans_in, &transfer("u2", 500))
        .do_and_submit_db(&check, &db, &table, debit(500))
        .await;
    assert!(matches!(refused, Err(Error::Failure(_))), "{refused:?}");
    assert_eq!(bank.status(&g).await.as_deref(), Some("failed"));
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
    assert_eq!(bank.accounts.calls(&g, "TransIn"), 0);
}

#[tokio::test]
async fn the_grpc_check_back_decides_a_msg_whose_client_went_quiet() {
    let bank = Bank::open().await;
    let (trans_in, check) = (bank.method("TransIn"), bank.method("QueryPrepared"));
    let quiet = TransOptions {
        timeout_to_fail: Some(1),
        ..Default::default()
    };

    // prepared, the local debit committed in the msg's barrier, then the
    // client is gone before submit: the check-back finds the barrier row
    let g = gid("grpc-msg-committed");
    let mut msg = bank
        .dtm
        .msg(&g)
        .add(&trans_in, &transfer("u2", 30))
        .options(quiet.clone());
    msg.prepare(&check).await.unwrap();
    BranchBarrier::new("msg", &g, "00", "msg")
        .with_table(bank.db.barrier_table.clone())
        .call_mysql(&bank.db.pool, |c| debit(30)(DbConn::MySql(c)))
        .await
        .unwrap();
    drop(msg);
    bank.wait_status(&g, "succeed").await;
    assert!(bank.accounts.calls(&g, "QueryPrepared") >= 1);
    assert_eq!(bank.accounts.calls(&g, "TransIn"), 1);
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);

    // prepared and never committed: the check-back rolls it back (and
    // fences a late local commit off)
    let g = gid("grpc-msg-lost");
    let mut msg = bank
        .dtm
        .msg(&g)
        .add(&trans_in, &transfer("u2", 30))
        .options(quiet);
    msg.prepare(&check).await.unwrap();
    bank.wait_status(&g, "failed").await;
    assert_eq!(bank.accounts.calls(&g, "TransIn"), 0);
    let late = BranchBarrier::new("msg", &g, "00", "msg")
        .with_table(bank.db.barrier_table.clone())
        .call_mysql(&bank.db.pool, |c| debit(30)(DbConn::MySql(c)))
        .await;
    assert!(
        matches!(late, Err(Error::Duplicated)),
        "a late local commit is fenced off: {late:?}"
    );
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
}

#[tokio::test]
async fn a_grpc_tcc_confirms_every_try_or_cancels_when_one_is_refused() {
    let bank = Bank::open().await;
    let out = ["TransOutTry", "TransOutConfirm", "TransOutCancel"].map(|m| bank.method(m));
    let inn = ["TransInTry", "TransInConfirm", "TransInCancel"].map(|m| bank.method(m));
    let run = |g: String, amount: i64| {
        let (out, inn) = (out.clone(), inn.clone());
        let dtm = bank.dtm.clone();
        async move {
            dtm.tcc_global_transaction(&g, TransOptions::default(), |tcc| async move {
                tcc.call_branch(&transfer("u1", amount), &out[0], &out[1], &out[2])
                    .await?;
                tcc.call_branch(&transfer("u2", amount), &inn[0], &inn[1], &inn[2])
                    .await
            })
            .await
        }
    };

    // both tries pass: both confirmed, the frozen amount released
    let g = gid("grpc-tcc");
    run(g.clone(), 30).await.unwrap();
    bank.wait_status(&g, "succeed").await;
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
    for m in [
        "TransOutTry",
        "TransOutConfirm",
        "TransInTry",
        "TransInConfirm",
    ] {
        assert_eq!(bank.accounts.calls(&g, m), 1, "{m}");
    }

    // the first try is refused (ABORTED): the scope fails, the branch is
    // cancelled (the barrier skips the cancel of a try that never
    // applied), the second branch never starts
    let g = gid("grpc-tcc-refused");
    let refused = run(g.clone(), 1000).await;
    assert!(matches!(refused, Err(Error::Failure(_))), "{refused:?}");
    bank.wait_status(&g, "failed").await;
    assert_eq!(bank.accounts.calls(&g, "TransOutCancel"), 1);
    assert_eq!(bank.accounts.calls(&g, "TransInTry"), 0);
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
}

#[tokio::test]
async fn a_grpc_xa_commits_every_branch_or_rolls_back_when_one_is_refused() {
    let bank = Bank::open().await;
    let (out, inn) = (bank.method("TransOutXa"), bank.method("TransInXa"));
    let run = |g: String, to: &'static str| {
        let (out, inn) = (out.clone(), inn.clone());
        let dtm = bank.dtm.clone();
        async move {
            dtm.xa_global_transaction(&g, TransOptions::default(), |xa| async move {
                xa.call_branch(&transfer("u1", 30), &out).await?;
                xa.call_branch(&transfer(to, 30), &inn).await
            })
            .await
        }
    };

    // both actions prepared and registered: both committed
    let g = gid("grpc-xa");
    run(g.clone(), "u2").await.unwrap();
    bank.wait_status(&g, "succeed").await;
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
    for m in [
        "TransOutXa:action",
        "TransOutXa:commit",
        "TransInXa:action",
        "TransInXa:commit",
    ] {
        assert_eq!(bank.accounts.calls(&g, m), 1, "{m}");
    }

    // the second action is refused (no such account) before it registers:
    // the first branch is rolled back, the second never hears of phase 2
    let g = gid("grpc-xa-refused");
    let refused = run(g.clone(), "nobody").await;
    assert!(matches!(refused, Err(Error::Failure(_))), "{refused:?}");
    bank.wait_status(&g, "failed").await;
    assert_eq!(bank.accounts.calls(&g, "TransOutXa:rollback"), 1);
    assert_eq!(bank.accounts.calls(&g, "TransOutXa:commit"), 0);
    assert_eq!(bank.accounts.calls(&g, "TransInXa:rollback"), 0);
    assert_eq!(bank.balances().await, [(70, 0), (130, 0)]);
}
