//! XA (contract §3.8) on MySQL/MariaDB and PostgreSQL.
//!
//! Client side, [`xa_global_transaction`] prepares the global transaction,
//! lets user code call each branch's action through [`Xa::call_branch`],
//! then submits (every branch commits) or aborts (every registered branch
//! rolls back), also on a panic.
//!
//! Branch side, [`XaMysql`] runs the action inside a local XA transaction
//! that it registers with the coordinator and leaves prepared
//! ([`XaMysql::xa_local`]), and answers the coordinator's phase 2
//! ([`XaMysql::xa_commit`], [`XaMysql::xa_rollback`]).
//! [`XaPostgres`] does the same on PostgreSQL with `PREPARE TRANSACTION`.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::Deserialize;
use sqlx::{MySqlConnection, MySqlPool};

use crate::barrier::{DEFAULT_TABLE, MYSQL_INSERT, POSTGRES_INSERT};
use crate::client::{Dtm, TransOptions};
use crate::error::{Error, Result};
use crate::grpc::DtmGrpc;

/// The coordinator an XA branch registers with, over HTTP or gRPC.
#[derive(Clone, Debug)]
enum Registrar {
    Http(Dtm),
    Grpc(DtmGrpc),
}

impl Registrar {
    /// Registers branch `params` with its `phase2_url`.
    async fn register(&self, params: &XaParams) -> Result<()> {
        if params.phase2_url.is_empty() {
            return Err(Error::other("the XA action request has no phase2_url"));
        }
        match self {
            Self::Http(dtm) => {
                let mut register = BTreeMap::new();
                register.insert("gid", params.gid.clone());
                register.insert("trans_type", "xa".to_owned());
                register.insert("branch_id", params.branch_id.clone());
                register.insert("url", params.phase2_url.clone());
                dtm.register_branch(&register).await
            }
            Self::Grpc(dtm) => dtm.register_xa(params).await,
        }
    }
}

/// An XA global transaction in progress, handed to the scope of
/// [`xa_global_transaction`]. Cheap to clone.
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let gid = dtm.new_gid().await?;
/// dtx_client::xa_global_transaction(&dtm, &gid, |xa| async move {
///     xa.call_branch(&serde_json::json!({"amount": -30}), "http://bank1/xa").await?;
///     xa.call_branch(&serde_json::json!({"amount": 30}), "http://bank2/xa").await?;
///     Ok(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Xa {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dtm: Dtm,
    gid: String,
    branches: AtomicU32,
}

impl Xa {
    /// The gid.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// dtx_client::xa_global_transaction(&dtm, "g", |xa| async move {
    ///     assert_eq!(xa.gid(), "g");
    ///     Ok(())
    /// }).await
    /// # }
    /// ```
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Calls a branch's action: POST `url` with `body` and the query `dtm`,
    /// `gid`, `trans_type=xa`, `branch_id` (`01`, `02`, ... in call order),
    /// `op=action` and `phase2_url=url` (the coordinator later calls the
    /// same URL with `op=commit` or `op=rollback`). Returns the reply body;
    /// a reply of 409 is [`Error::Failure`], 425 [`Error::Ongoing`].
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::Xa) -> dtx_client::Result<()> {
    /// let reply = xa.call_branch(&serde_json::json!({"amount": 1}), "http://bank/xa").await?;
    /// println!("{reply}");
    /// # Ok(()) }
    /// ```
    pub async fn call_branch(&self, body: &impl serde::Serialize, url: &str) -> Result<String> {
        let branch_id = format!(
            "{:02}",
            self.inner.branches.fetch_add(1, Ordering::Relaxed) + 1
        );
        let reply = self
            .inner
            .dtm
            .http()
            .post(url)
            .query(&[
                ("dtm", self.inner.dtm.base_url()),
                ("gid", &self.inner.gid),
                ("trans_type", "xa"),
                ("branch_id", &branch_id),
                ("op", "action"),
                ("phase2_url", url),
            ])
            .header("content-type", "application/json")
            .body(serde_json::to_string(body)?)
            .send()
            .await?;
        let status = reply.status().as_u16();
        let text = reply.text().await?;
        Error::from_reply(status, &text)?;
        Ok(text)
    }
}

/// Runs an XA global transaction with gid `gid`: prepares it (`trans_type`
/// `xa`), runs `scope`, then submits when the scope returns `Ok` (every
/// registered branch commits) or aborts with the error as rollback reason
/// when it returns an error (every registered branch rolls back; the error
/// is returned). A panic in the scope also aborts, then resumes the panic.
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let n = dtx_client::xa_global_transaction(&dtm, "g", |xa| async move {
///     xa.call_branch(&1, "http://bank/xa").await?;
///     Ok(1)
/// })
/// .await?;
/// assert_eq!(n, 1);
/// # Ok(()) }
/// ```
pub async fn xa_global_transaction<T, F, Fut>(dtm: &Dtm, gid: &str, scope: F) -> Result<T>
where
    F: FnOnce(Xa) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    xa_global_transaction_with(dtm, gid, TransOptions::default(), scope).await
}

/// [`xa_global_transaction`] with options (`wait_result`,
/// `timeout_to_fail`, `branch_headers`, ...).
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let options = dtx_client::TransOptions { wait_result: true, ..Default::default() };
/// dtx_client::xa_global_transaction_with(&dtm, "g", options, |_xa| async { Ok(()) }).await?;
/// # Ok(()) }
/// ```
pub async fn xa_global_transaction_with<T, F, Fut>(
    dtm: &Dtm,
    gid: &str,
    options: TransOptions,
    scope: F,
) -> Result<T>
where
    F: FnOnce(Xa) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let handle = || Xa {
        inner: Arc::new(Inner {
            dtm: dtm.clone(),
            gid: gid.to_owned(),
            branches: AtomicU32::new(0),
        }),
    };
    let global = crate::scope::HttpGlobal::new(dtm, gid, "xa", &options)?;
    crate::scope::run(&global, "xa", handle, scope).await
}

/// The query of an XA branch request: `gid`, `trans_type`, `branch_id`,
/// `op` (`action`, `commit` or `rollback`), and for the action the
/// `phase2_url` to register. As an axum extractor it rejects a request
/// without `gid`, `branch_id` or `op` with `400`.
///
/// ```
/// let p = dtx_client::xa::XaParams {
///     gid: "g".into(), trans_type: "xa".into(), branch_id: "01".into(),
///     op: "action".into(), phase2_url: "http://bank/xa".into(),
/// };
/// assert_eq!(p.xid(), "g-01");
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct XaParams {
    /// Global transaction id.
    pub gid: String,
    /// `xa`.
    #[serde(default)]
    pub trans_type: String,
    /// Branch id within the transaction.
    pub branch_id: String,
    /// `action`, `commit` or `rollback`.
    pub op: String,
    /// The URL the coordinator calls for phase 2 (action requests only).
    #[serde(default)]
    pub phase2_url: String,
}

impl XaParams {
    /// The local XA transaction id: `gid-branch_id`.
    ///
    /// ```
    /// # let p = dtx_client::xa::XaParams { gid: "g".into(), trans_type: "xa".into(), branch_id: "02".into(), op: "commit".into(), phase2_url: String::new() };
    /// assert_eq!(p.xid(), "g-02");
    /// ```
    pub fn xid(&self) -> String {
        format!("{}-{}", self.gid, self.branch_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for XaParams {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<XaParams>::from_request_parts(parts, state).await {
            Ok(Query(p)) if !p.gid.is_empty() && !p.branch_id.is_empty() && !p.op.is_empty() => {
                Ok(p)
            }
            Ok(_) => Err(crate::axum::bad_request(
                "gid, branch_id and op must not be empty",
            )),
            Err(e) => Err(crate::axum::bad_request(&e.body_text())),
        }
    }
}

/// The branch side of XA on MySQL/MariaDB: a pool, the coordinator to
/// register with, and the barrier table (default [`DEFAULT_TABLE`]).
/// Needs a server that keeps prepared XA transactions across disconnects
/// (MySQL 5.7.7+, MariaDB 10.5+).
///
/// ```no_run
/// # async fn f(pool: sqlx::MySqlPool, dtm: dtx_client::Dtm, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
/// let xa = dtx_client::XaMysql::new(pool, dtm).with_table("bank.barrier");
/// match params.op.as_str() {
///     "action" => xa.xa_local(&params, |c| Box::pin(async move {
///         sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(c).await?;
///         Ok(())
///     })).await?,
///     _ => xa.xa_phase2(&params).await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct XaMysql {
    pool: MySqlPool,
    dtm: Registrar,
    table: String,
}

impl XaMysql {
    /// XA branches on `pool`, registered with `dtm`.
    ///
    /// ```no_run
    /// # fn f(pool: sqlx::MySqlPool) {
    /// let xa = dtx_client::XaMysql::new(pool, dtx_client::Dtm::new("http://localhost:36789/api/dtmsvr"));
    /// # let _ = xa; }
    /// ```
    pub fn new(pool: MySqlPool, dtm: Dtm) -> Self {
        Self {
            pool,
            dtm: Registrar::Http(dtm),
            table: DEFAULT_TABLE.to_owned(),
        }
    }

    /// XA branches on `pool` served over gRPC, registered through `dtm`'s
    /// gRPC API (the parameters from [`crate::grpc::xa_params_from_metadata`]).
    pub fn over_grpc(pool: MySqlPool, dtm: DtmGrpc) -> Self {
        Self {
            pool,
            dtm: Registrar::Grpc(dtm),
            table: DEFAULT_TABLE.to_owned(),
        }
    }

    /// Uses another barrier table (`database.table` or a bare name, trusted:
    /// it is put into the SQL text).
    ///
    /// ```no_run
    /// # fn f(xa: dtx_client::XaMysql) {
    /// let xa = xa.with_table("bank.barrier");
    /// # let _ = xa; }
    /// ```
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The action of an XA branch. On a connection of its own: `XA START
    /// 'gid-branch'`, insert the barrier row (op `action`, barrier `01`),
    /// run `busi`, register the branch with the coordinator (`url` =
    /// `phase2_url`), then `XA END` and `XA PREPARE`. On any error (or a
    /// panic in `busi`) the XA transaction is rolled back and the error
    /// returned; a refused registration (the global transaction is no
    /// longer prepared) is such an error.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaMysql, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// xa.xa_local(&params, |c| Box::pin(async move {
    ///     sqlx::query("UPDATE account SET balance = balance + 30 WHERE id = 2").execute(c).await?;
    ///     Ok(())
    /// }))
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_local<F>(&self, params: &XaParams, busi: F) -> Result<()>
    where
        F: for<'c> FnOnce(&'c mut MySqlConnection) -> BoxFuture<'c, Result<()>> + Send,
    {
        let xid = quoted_xid(params)?;
        let mut conn = self.pool.acquire().await?;
        exec(&mut conn, format!("XA START {xid}")).await?;
        let outcome = AssertUnwindSafe(self.local_body(&mut conn, params, xid.clone(), busi))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                roll_back_local(conn, &xid).await;
                Err(e)
            }
            Err(panic) => {
                roll_back_local(conn, &xid).await;
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Everything of the action between XA START and XA PREPARE.
    fn local_body<'a, F>(
        &'a self,
        conn: &'a mut MySqlConnection,
        params: &'a XaParams,
        xid: String,
        busi: F,
    ) -> BoxFuture<'a, Result<()>>
    where
        F: for<'c> FnOnce(&'c mut MySqlConnection) -> BoxFuture<'c, Result<()>> + Send + 'a,
    {
        // Boxed here, where the lifetimes are concrete, so that the future
        // is provably Send for axum handlers.
        async move {
            self.insert_barrier(&mut *conn, params, "action").await?;
            busi(&mut *conn).await?;
            self.dtm.register(params).await?;
            exec(&mut *conn, format!("XA END {xid}")).await?;
            exec(&mut *conn, format!("XA PREPARE {xid}")).await?;
            Ok(())
        }
        .boxed()
    }

    /// Inserts the barrier row (op `action`, barrier `01`, reason `reason`),
    /// ignoring a duplicate.
    fn insert_barrier<'a>(
        &'a self,
        conn: &'a mut MySqlConnection,
        params: &'a XaParams,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            sqlx::query(&MYSQL_INSERT.replace("{table}", &self.table))
                .bind("xa")
                .bind(&params.gid)
                .bind(&params.branch_id)
                .bind("action")
                .bind("01")
                .bind(reason)
                .execute(conn)
                .await?;
            Ok(())
        }
        .boxed()
    }

    /// Phase 2 commit: `XA COMMIT 'gid-branch'`. An unknown xid (already
    /// committed) counts as success.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaMysql, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// xa.xa_commit(&params).await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_commit(&self, params: &XaParams) -> Result<()> {
        let xid = quoted_xid(params)?;
        let mut conn = self.pool.acquire().await?;
        ignore_unknown_xid(exec(&mut conn, format!("XA COMMIT {xid}")).await)
    }

    /// Phase 2 rollback: `XA ROLLBACK 'gid-branch'`, then inserts the
    /// barrier row (op `action`, barrier `01`, reason `rollback`) unless it
    /// exists. An unknown xid (never prepared, or already rolled back)
    /// counts as success.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaMysql, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// xa.xa_rollback(&params).await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_rollback(&self, params: &XaParams) -> Result<()> {
        let xid = quoted_xid(params)?;
        let mut conn = self.pool.acquire().await?;
        // The rollback comes first: a prepared branch still holds the lock
        // on its own (action, 01) row.
        ignore_unknown_xid(exec(&mut conn, format!("XA ROLLBACK {xid}")).await)?;
        self.insert_barrier(&mut conn, params, "rollback").await
    }

    /// Phase 2 by the request's op: [`XaMysql::xa_commit`] for `commit`,
    /// [`XaMysql::xa_rollback`] for `rollback`; another op is an error.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaMysql, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// if params.op != "action" { xa.xa_phase2(&params).await?; }
    /// # Ok(()) }
    /// ```
    pub async fn xa_phase2(&self, params: &XaParams) -> Result<()> {
        match params.op.as_str() {
            "commit" => self.xa_commit(params).await,
            "rollback" => self.xa_rollback(params).await,
            other => Err(Error::other(format!("not an XA phase-2 op: {other}"))),
        }
    }
}

/// Runs one statement over the text protocol (XA statements cannot be
/// prepared), boxed so that callers' futures stay Send.
fn exec(conn: &mut MySqlConnection, sql: String) -> BoxFuture<'_, Result<()>> {
    async move {
        // A bare &str has no arguments, so sqlx sends it as a text query.
        sqlx::Executor::execute(conn, sql.as_str()).await?;
        Ok(())
    }
    .boxed()
}

/// The xid as a SQL string literal. XA statements cannot take bound
/// parameters, so only plain characters are accepted.
fn quoted_xid(params: &XaParams) -> Result<String> {
    let xid = params.xid();
    let plain = xid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !plain || xid.len() > 64 {
        return Err(Error::failure(format!(
            "unusable XA id {xid:?}: at most 64 letters, digits, '-', '_', '.', ':'"
        )));
    }
    Ok(format!("'{xid}'"))
}

/// `XAER_NOTA` (the xid does not exist) means phase 2 already happened.
fn ignore_unknown_xid(r: Result<()>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            if text.contains("XAER_NOTA") || text.contains("does not exist") {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

/// Rolls back a local XA transaction that did not reach PREPARE, whatever
/// its state, and closes the connection rather than return it to the pool
/// in an unknown state.
async fn roll_back_local(mut conn: sqlx::pool::PoolConnection<sqlx::MySql>, xid: &str) {
    let _ = exec(&mut conn, format!("XA END {xid}")).await;
    let _ = exec(&mut conn, format!("XA ROLLBACK {xid}")).await;
    let _ = sqlx::Connection::close(conn.detach()).await;
}

/// The branch side of XA on PostgreSQL: the action runs in a local
/// transaction that ends in `PREPARE TRANSACTION 'gid-branch'`, phase 2 is
/// `COMMIT PREPARED` or `ROLLBACK PREPARED`. The server needs
/// `max_prepared_transactions` > 0 (its default, 0, refuses PREPARE).
/// The barrier table defaults to [`DEFAULT_TABLE`].
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool, dtm: dtx_client::Dtm, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
/// let xa = dtx_client::XaPostgres::new(pool, dtm);
/// match params.op.as_str() {
///     "action" => xa.xa_local(&params, |c| Box::pin(async move {
///         sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(c).await?;
///         Ok(())
///     })).await?,
///     _ => xa.xa_phase2(&params).await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct XaPostgres {
    pool: sqlx::PgPool,
    dtm: Registrar,
    table: String,
}

impl XaPostgres {
    /// XA branches on `pool`, registered with `dtm`.
    ///
    /// ```no_run
    /// # fn f(pool: sqlx::PgPool) {
    /// let xa = dtx_client::XaPostgres::new(pool, dtx_client::Dtm::new("http://localhost:36789/api/dtmsvr"));
    /// # let _ = xa; }
    /// ```
    pub fn new(pool: sqlx::PgPool, dtm: Dtm) -> Self {
        Self {
            pool,
            dtm: Registrar::Http(dtm),
            table: DEFAULT_TABLE.to_owned(),
        }
    }

    /// XA branches on `pool` served over gRPC, registered through `dtm`'s
    /// gRPC API (the parameters from [`crate::grpc::xa_params_from_metadata`]).
    pub fn over_grpc(pool: sqlx::PgPool, dtm: DtmGrpc) -> Self {
        Self {
            pool,
            dtm: Registrar::Grpc(dtm),
            table: DEFAULT_TABLE.to_owned(),
        }
    }

    /// Uses another barrier table (`schema.table` or a bare name, trusted).
    ///
    /// ```no_run
    /// # fn f(xa: dtx_client::XaPostgres) {
    /// let xa = xa.with_table("bank.barrier");
    /// # let _ = xa; }
    /// ```
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The action of an XA branch: `BEGIN`, insert the barrier row (op
    /// `action`, barrier `01`), run `busi`, register the branch (`url` =
    /// `phase2_url`), then `PREPARE TRANSACTION 'gid-branch'`. On any error
    /// (or a panic in `busi`) the transaction is rolled back and the error
    /// returned.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaPostgres, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// xa.xa_local(&params, |c| Box::pin(async move {
    ///     sqlx::query("UPDATE account SET balance = balance + 30 WHERE id = 2").execute(c).await?;
    ///     Ok(())
    /// }))
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_local<F>(&self, params: &XaParams, busi: F) -> Result<()>
    where
        F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, Result<()>> + Send,
    {
        let xid = quoted_xid(params)?;
        let mut conn = self.pool.acquire().await?;
        pg_exec(&mut conn, "BEGIN".to_owned()).await?;
        let outcome = AssertUnwindSafe(self.local_body(&mut conn, params, xid, busi))
            .catch_unwind()
            .await;
        let rollback = |mut conn: sqlx::pool::PoolConnection<sqlx::Postgres>| async move {
            let _ = pg_exec(&mut conn, "ROLLBACK".to_owned()).await;
            let _ = sqlx::Connection::close(conn.detach()).await;
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                rollback(conn).await;
                Err(e)
            }
            Err(panic) => {
                rollback(conn).await;
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn local_body<'a, F>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        params: &'a XaParams,
        xid: String,
        busi: F,
    ) -> BoxFuture<'a, Result<()>>
    where
        F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, Result<()>> + Send + 'a,
    {
        async move {
            self.insert_barrier(&mut *conn, params, "action").await?;
            busi(&mut *conn).await?;
            self.dtm.register(params).await?;
            pg_exec(&mut *conn, format!("PREPARE TRANSACTION {xid}")).await
        }
        .boxed()
    }

    fn insert_barrier<'a>(
        &'a self,
        conn: &'a mut sqlx::PgConnection,
        params: &'a XaParams,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            sqlx::query(&POSTGRES_INSERT.replace("{table}", &self.table))
                .bind("xa")
                .bind(&params.gid)
                .bind(&params.branch_id)
                .bind("action")
                .bind("01")
                .bind(reason)
                .execute(conn)
                .await?;
            Ok(())
        }
        .boxed()
    }

    /// Phase 2 commit: `COMMIT PREPARED 'gid-branch'`; an unknown
    /// transaction (already committed) counts as success.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaPostgres, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// xa.xa_commit(&params).await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_commit(&self, params: &XaParams) -> Result<()> {
        let xid = quoted_xid(params)?;
        let mut conn = self.pool.acquire().await?;
        ignore_unknown_xid(pg_exec(&mut conn, format!("COMMIT PREPARED {xid}")).await)
    }

    /// Phase 2 rollback: `ROLLBACK PREPARED 'gid-branch'` (an unknown
    /// transaction counts as success), then the barrier row (op `action`,
    /// barrier `01`, reason `rollback`) unless it exists.
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaPostgres, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// xa.xa_rollback(&params).await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_rollback(&self, params: &XaParams) -> Result<()> {
        let xid = quoted_xid(params)?;
        let mut conn = self.pool.acquire().await?;
        ignore_unknown_xid(pg_exec(&mut conn, format!("ROLLBACK PREPARED {xid}")).await)?;
        self.insert_barrier(&mut conn, params, "rollback").await
    }

    /// Phase 2 by the request's op (`commit` or `rollback`).
    ///
    /// ```no_run
    /// # async fn f(xa: dtx_client::XaPostgres, params: dtx_client::xa::XaParams) -> dtx_client::Result<()> {
    /// if params.op != "action" { xa.xa_phase2(&params).await?; }
    /// # Ok(()) }
    /// ```
    pub async fn xa_phase2(&self, params: &XaParams) -> Result<()> {
        match params.op.as_str() {
            "commit" => self.xa_commit(params).await,
            "rollback" => self.xa_rollback(params).await,
            other => Err(Error::other(format!("not an XA phase-2 op: {other}"))),
        }
    }
}

/// One statement over PostgreSQL's simple query protocol, boxed so that
/// callers' futures stay Send.
fn pg_exec(conn: &mut sqlx::PgConnection, sql: String) -> BoxFuture<'_, Result<()>> {
    async move {
        sqlx::Executor::execute(conn, sql.as_str()).await?;
        Ok(())
    }
    .boxed()
}
