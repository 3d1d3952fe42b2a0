//! TCC (contract §3.7): a scope that prepares the global transaction, lets
//! user code register branches and call their try, then submits (confirm
//! everything) or aborts (cancel everything) on an error or a panic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::client::{Dtm, TransOptions};
use crate::error::{Error, Result};

/// A TCC global transaction in progress, handed to the scope of
/// [`tcc_global_transaction`]. Cheap to clone.
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let gid = dtm.new_gid().await?;
/// dtx_client::tcc_global_transaction(&dtm, &gid, |tcc| async move {
///     let body = serde_json::json!({"amount": 30});
///     tcc.call_branch(&body, "http://b1/try", "http://b1/confirm", "http://b1/cancel").await?;
///     tcc.call_branch(&body, "http://b2/try", "http://b2/confirm", "http://b2/cancel").await?;
///     Ok(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Tcc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dtm: Dtm,
    gid: String,
    branches: AtomicU32,
}

impl Tcc {
    /// The gid.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// dtx_client::tcc_global_transaction(&dtm, "g", |tcc| async move {
    ///     assert_eq!(tcc.gid(), "g");
    ///     Ok(())
    /// }).await
    /// # }
    /// ```
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Registers a branch (`confirm` and `cancel` receive `body` later) and
    /// calls its try with `body`: POST `try_url` with `gid`,
    /// `trans_type=tcc`, `branch_id` and `op=try` in the query. Returns the
    /// try's reply body; a try answering 409 is [`Error::Failure`], 425
    /// [`Error::Ongoing`].
    ///
    /// ```no_run
    /// # async fn f(tcc: dtx_client::Tcc) -> dtx_client::Result<()> {
    /// let reply = tcc.call_branch(&serde_json::json!({"amount": 1}), "http://b/try", "http://b/confirm", "http://b/cancel").await?;
    /// println!("{reply}");
    /// # Ok(()) }
    /// ```
    pub async fn call_branch(
        &self,
        body: &impl serde::Serialize,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<String> {
        let branch_id = format!(
            "{:02}",
            self.inner.branches.fetch_add(1, Ordering::Relaxed) + 1
        );
        let data = serde_json::to_string(body)?;
        let mut register = BTreeMap::new();
        register.insert("gid", self.inner.gid.clone());
        register.insert("trans_type", "tcc".to_owned());
        register.insert("branch_id", branch_id.clone());
        register.insert("data", data.clone());
        register.insert("confirm", confirm_url.to_owned());
        register.insert("cancel", cancel_url.to_owned());
        self.inner.dtm.register_branch(&register).await?;

        let reply = self
            .inner
            .dtm
            .http()
            .post(try_url)
            .query(&[
                ("dtm", self.inner.dtm.base_url()),
                ("gid", &self.inner.gid),
                ("trans_type", "tcc"),
                ("branch_id", &branch_id),
                ("op", "try"),
            ])
            .header("content-type", "application/json")
            .body(data)
            .send()
            .await?;
        let status = reply.status().as_u16();
        let text = reply.text().await?;
        Error::from_reply(status, &text)?;
        Ok(text)
    }
}

/// Runs a TCC global transaction with gid `gid`: prepares it, runs `scope`,
/// then submits when the scope returns `Ok` (every branch is confirmed) or
/// aborts when it returns an error (every registered branch is cancelled,
/// and the error is returned). A panic in the scope also aborts, then
/// resumes the panic.
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let r = dtx_client::tcc_global_transaction(&dtm, "g", |tcc| async move {
///     tcc.call_branch(&1, "http://b/try", "http://b/confirm", "http://b/cancel").await?;
///     Ok(42)
/// })
/// .await?;
/// assert_eq!(r, 42);
/// # Ok(()) }
/// ```
pub async fn tcc_global_transaction<T, F, Fut>(dtm: &Dtm, gid: &str, scope: F) -> Result<T>
where
    F: FnOnce(Tcc) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    tcc_global_transaction_with(dtm, gid, TransOptions::default(), scope).await
}

/// [`tcc_global_transaction`] with options (`wait_result`,
/// `timeout_to_fail`, `branch_headers`, ...).
///
/// ```no_run
/// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
/// let options = dtx_client::TransOptions { wait_result: true, ..Default::default() };
/// dtx_client::tcc_global_transaction_with(&dtm, "g", options, |_tcc| async { Ok(()) }).await?;
/// # Ok(()) }
/// ```
pub async fn tcc_global_transaction_with<T, F, Fut>(
    dtm: &Dtm,
    gid: &str,
    options: TransOptions,
    scope: F,
) -> Result<T>
where
    F: FnOnce(Tcc) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let handle = || Tcc {
        inner: Arc::new(Inner {
            dtm: dtm.clone(),
            gid: gid.to_owned(),
            branches: AtomicU32::new(0),
        }),
    };
    let global = crate::scope::HttpGlobal::new(dtm, gid, "tcc", &options)?;
    crate::scope::run(&global, "tcc", handle, scope).await
}
