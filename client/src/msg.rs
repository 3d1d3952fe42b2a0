//! 2-phase message (contract §3.6): prepare, run the local transaction,
//! submit; the coordinator asks `query_prepared` when the submit never
//! came. [`Msg::do_and_submit_db`] makes the local commit and the msg
//! commit atomic through the barrier.

use std::future::Future;

use serde_json::{json, Value};
use sqlx::{MySql, MySqlConnection, PgConnection, Pool, Postgres};

use crate::barrier::{BranchBarrier, MSG_BRANCH_ID, MSG_OP};
use crate::client::{Dtm, TransOptions};
use crate::error::{Error, Result};

/// A 2-phase message under construction: add its actions, then either
/// [`Msg::submit`] directly or go through prepare and submit.
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let gid = dtm.new_gid().await?;
/// dtx_client::Msg::new(&dtm, &gid)
///     .add("http://bank2/trans-in", &serde_json::json!({"amount": 30}))
///     .submit()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Msg {
    dtm: Dtm,
    gid: String,
    steps: Vec<Value>,
    payloads: Vec<String>,
    concurrent: bool,
    delay_s: Option<u64>,
    query_prepared: String,
    options: TransOptions,
}

/// Which database [`Msg::do_and_submit_db`] commits in, with its pool.
///
/// ```no_run
/// # fn f(pool: sqlx::PgPool) {
/// let db = dtx_client::BarrierDb::Postgres(pool);
/// # let _ = db; }
/// ```
#[derive(Clone, Debug)]
pub enum BarrierDb {
    /// A PostgreSQL pool.
    Postgres(Pool<Postgres>),
    /// A MySQL or MariaDB pool.
    MySql(Pool<MySql>),
}

/// The local transaction's connection, for [`Msg::do_and_submit_db`]'s
/// business code.
///
/// ```no_run
/// # async fn f(conn: dtx_client::DbConn<'_>) -> dtx_client::Result<()> {
/// match conn {
///     dtx_client::DbConn::Postgres(c) => { sqlx::query("SELECT 1").execute(c).await?; }
///     dtx_client::DbConn::MySql(c) => { sqlx::query("SELECT 1").execute(c).await?; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum DbConn<'c> {
    /// Inside a PostgreSQL transaction.
    Postgres(&'c mut PgConnection),
    /// Inside a MySQL/MariaDB transaction.
    MySql(&'c mut MySqlConnection),
}

impl Msg {
    /// A msg with this gid on this coordinator.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Msg::new(&dtm, "g").gid(), "g");
    /// ```
    pub fn new(dtm: &Dtm, gid: &str) -> Self {
        Self {
            dtm: dtm.clone(),
            gid: gid.to_owned(),
            steps: Vec::new(),
            payloads: Vec::new(),
            concurrent: false,
            delay_s: None,
            query_prepared: String::new(),
            options: TransOptions::default(),
        }
    }

    /// The gid.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Msg::new(&dtm, "g").gid(), "g");
    /// ```
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds an action called with `payload` as JSON body once the msg is
    /// submitted; `topic://<name>` reaches every subscriber of a topic.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let m = dtx_client::Msg::new(&dtm, "g").add("http://b/in", &serde_json::json!({"amount": 1}));
    /// assert_eq!(m.body()["payloads"][0], "{\"amount\":1}");
    /// ```
    pub fn add(mut self, action: &str, payload: &impl serde::Serialize) -> Self {
        self.steps.push(json!({ "action": action }));
        self.payloads
            .push(serde_json::to_string(payload).unwrap_or_else(|_| "null".into()));
        self
    }

    /// Calls the actions in parallel instead of one after another.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Msg::new(&dtm, "g").concurrent().body()["concurrent"], true);
    /// ```
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// Runs the actions no earlier than `seconds` after the msg was created.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Msg::new(&dtm, "g").delay(10).body()["custom_data"], "{\"delay\":10}");
    /// ```
    pub fn delay(mut self, seconds: u64) -> Self {
        self.delay_s = Some(seconds);
        self
    }

    /// Sets all options at once (`timeout_to_fail` is when a prepared msg
    /// is checked back).
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let o = dtx_client::TransOptions { timeout_to_fail: Some(3), ..Default::default() };
    /// assert_eq!(dtx_client::Msg::new(&dtm, "g").options(o).body()["timeout_to_fail"], 3);
    /// ```
    pub fn options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    /// The JSON body of prepare and submit.
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// assert_eq!(dtx_client::Msg::new(&dtm, "g").body()["trans_type"], "msg");
    /// ```
    pub fn body(&self) -> Value {
        let mut body = serde_json::to_value(&self.options).unwrap_or_else(|_| json!({}));
        body["gid"] = json!(self.gid);
        body["trans_type"] = json!("msg");
        body["steps"] = json!(self.steps);
        body["payloads"] = json!(self.payloads);
        body["concurrent"] = json!(self.concurrent);
        if !self.query_prepared.is_empty() {
            body["query_prepared"] = json!(self.query_prepared);
        }
        if let Some(delay) = self.delay_s {
            body["custom_data"] = json!(json!({ "delay": delay }).to_string());
        }
        body
    }

    /// Prepares the msg: the coordinator stores it and, if it is not
    /// submitted within `timeout_to_fail`, asks `query_prepared` (GET with
    /// `gid`, `trans_type=msg`, `branch_id=00`, `op=msg`) whether to
    /// submit (200) or drop it (409).
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let mut msg = dtx_client::Msg::new(&dtm, "g").add("http://b/in", &1);
    /// msg.prepare("http://a/query-prepared").await?;
    /// msg.submit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn prepare(&mut self, query_prepared: &str) -> Result<()> {
        self.query_prepared = query_prepared.to_owned();
        self.dtm.post("prepare", &self.body()).await.map(drop)
    }

    /// Submits the msg (prepared or not); the coordinator then calls every
    /// action until it succeeds.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// dtx_client::Msg::new(&dtm, "g").add("http://b/in", &1).submit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self) -> Result<()> {
        self.dtm.post("submit", &self.body()).await.map(drop)
    }

    /// Aborts a prepared msg: it ends `failed` and no action is called.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let mut msg = dtx_client::Msg::new(&dtm, "g").add("http://b/in", &1);
    /// msg.prepare("http://a/qp").await?;
    /// msg.abort().await?;
    /// # Ok(()) }
    /// ```
    pub async fn abort(&self) -> Result<()> {
        let body = json!({ "gid": self.gid, "trans_type": "msg" });
        self.dtm.post("abort", &body).await.map(drop)
    }

    /// Prepares, runs `busi` (the local transaction, given the msg's own
    /// barrier), and submits; the recipe of contract §3.6:
    /// - `busi` returns `Ok`: submit.
    /// - `busi` returns [`Error::Failure`]: abort, and return that error.
    /// - any other error: ask `query_prepared` for the truth; submit if the
    ///   local transaction committed after all, abort if it answers
    ///   FAILURE, and return `busi`'s error either way.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let msg = dtx_client::Msg::new(&dtm, "g").add("http://b/in", &1);
    /// msg.do_and_submit("http://a/qp", |_barrier| async { Ok(()) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn do_and_submit<F, Fut>(self, query_prepared: &str, busi: F) -> Result<()>
    where
        F: FnOnce(BranchBarrier) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        do_and_submit(self, query_prepared, busi).await
    }

    /// [`Msg::do_and_submit`] where the local transaction is a database
    /// transaction guarded by the barrier table `table`: the barrier row
    /// and `busi`'s writes commit together, so the check-back (answered by
    /// [`BranchBarrier::query_prepared_postgres`] or
    /// [`BranchBarrier::query_prepared_mysql`]) knows for sure whether the
    /// local transaction committed.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm, pool: sqlx::PgPool) -> dtx_client::Result<()> {
    /// use dtx_client::{BarrierDb, DbConn, Msg};
    /// Msg::new(&dtm, "g")
    ///     .add("http://bank2/trans-in", &serde_json::json!({"amount": 30}))
    ///     .do_and_submit_db("http://bank1/query-prepared", &BarrierDb::Postgres(pool), "dtm_barrier.barrier", |conn| {
    ///         Box::pin(async move {
    ///             if let DbConn::Postgres(c) = conn {
    ///                 sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(c).await?;
    ///             }
    ///             Ok(())
    ///         })
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn do_and_submit_db<F>(
        self,
        query_prepared: &str,
        db: &BarrierDb,
        table: &str,
        busi: F,
    ) -> Result<()>
    where
        F: for<'c> FnOnce(DbConn<'c>) -> futures_util::future::BoxFuture<'c, Result<()>>,
    {
        self.do_and_submit(query_prepared, |barrier| {
            in_db_barrier(barrier, db, table, busi)
        })
        .await
    }

    /// Calls `query_prepared` the way the coordinator's check-back does.
    async fn ask(&self, url: &str) -> Result<()> {
        let reply = self
            .dtm
            .http()
            .get(url)
            .query(&[
                ("gid", self.gid.as_str()),
                ("trans_type", "msg"),
                ("branch_id", MSG_BRANCH_ID),
                ("op", MSG_OP),
            ])
            .send()
            .await?;
        let status = reply.status().as_u16();
        let body = reply.text().await?;
        Error::from_reply(status, &body)
    }
}

/// What the two-phase recipe asks of a msg, whichever API carries it.
pub(crate) trait TwoPhase {
    /// The gid.
    fn gid(&self) -> &str;
    /// Prepares it with this check-back URL.
    async fn prepare(&mut self, query_prepared: &str) -> Result<()>;
    /// Submits it.
    async fn submit(&self) -> Result<()>;
    /// Aborts it.
    async fn abort(&self) -> Result<()>;
    /// Asks `url` what the coordinator's check-back would be told.
    async fn ask_query_prepared(&self, url: &str) -> Result<()>;
}

impl TwoPhase for Msg {
    fn gid(&self) -> &str {
        &self.gid
    }
    async fn prepare(&mut self, query_prepared: &str) -> Result<()> {
        Msg::prepare(self, query_prepared).await
    }
    async fn submit(&self) -> Result<()> {
        Msg::submit(self).await
    }
    async fn abort(&self) -> Result<()> {
        Msg::abort(self).await
    }
    async fn ask_query_prepared(&self, url: &str) -> Result<()> {
        self.ask(url).await
    }
}

/// The recipe of contract §3.6 (see [`Msg::do_and_submit`]): prepare, run
/// `busi` in the msg's barrier, then submit, abort, or ask the check-back.
pub(crate) async fn do_and_submit<M, F, Fut>(
    mut msg: M,
    query_prepared: &str,
    busi: F,
) -> Result<()>
where
    M: TwoPhase,
    F: FnOnce(BranchBarrier) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let barrier = BranchBarrier::new("msg", msg.gid(), MSG_BRANCH_ID, MSG_OP);
    msg.prepare(query_prepared).await?;
    let busi_result = busi(barrier).await;
    let check = match &busi_result {
        Err(e) if !e.is_failure() => msg.ask_query_prepared(query_prepared).await,
        _ => Ok(()),
    };
    let failed = busi_result.as_ref().is_err_and(Error::is_failure)
        || check.as_ref().is_err_and(Error::is_failure);
    if failed {
        // Best effort: a prepared msg that is not aborted is checked
        // back and dropped by the coordinator anyway.
        let _ = msg.abort().await;
    } else if check.is_ok() {
        msg.submit().await?;
    }
    busi_result?;
    check
}

/// Runs `busi` inside `barrier` on `db`'s barrier table `table`, so the
/// barrier row and `busi`'s writes commit together.
pub(crate) async fn in_db_barrier<F>(
    barrier: BranchBarrier,
    db: &BarrierDb,
    table: &str,
    busi: F,
) -> Result<()>
where
    F: for<'c> FnOnce(DbConn<'c>) -> futures_util::future::BoxFuture<'c, Result<()>>,
{
    let barrier = barrier.with_table(table);
    match db {
        BarrierDb::Postgres(pool) => {
            barrier
                .call_postgres(pool, |c| busi(DbConn::Postgres(c)))
                .await
        }
        BarrierDb::MySql(pool) => barrier.call_mysql(pool, |c| busi(DbConn::MySql(c))).await,
    }
}
