//! The global-transaction scope shared by TCC and XA, over HTTP or gRPC:
//! prepare, run the user's code, then submit, or abort on an error or a
//! panic.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::{json, Value};

use crate::client::{Dtm, TransOptions};
use crate::error::Result;

/// The three calls a scope makes to its coordinator.
pub(crate) trait Global {
    /// Prepares the global transaction.
    async fn prepare(&self) -> Result<()>;
    /// Submits it.
    async fn submit(&self) -> Result<()>;
    /// Aborts it with this rollback reason.
    async fn abort(&self, reason: &str) -> Result<()>;
}

/// A global transaction on the HTTP API: one body for all three calls.
pub(crate) struct HttpGlobal<'a> {
    dtm: &'a Dtm,
    body: Value,
}

impl<'a> HttpGlobal<'a> {
    /// The `trans_type` global transaction `gid` on `dtm`.
    pub(crate) fn new(
        dtm: &'a Dtm,
        gid: &str,
        trans_type: &str,
        options: &TransOptions,
    ) -> Result<Self> {
        let mut body = serde_json::to_value(options)?;
        body["gid"] = json!(gid);
        body["trans_type"] = json!(trans_type);
        Ok(Self { dtm, body })
    }
}

impl Global for HttpGlobal<'_> {
    async fn prepare(&self) -> Result<()> {
        self.dtm.post("prepare", &self.body).await.map(drop)
    }
    async fn submit(&self) -> Result<()> {
        self.dtm.post("submit", &self.body).await.map(drop)
    }
    async fn abort(&self, reason: &str) -> Result<()> {
        let mut body = self.body.clone();
        body["rollback_reason"] = json!(reason);
        self.dtm.post("abort", &body).await.map(drop)
    }
}

/// Prepares `global`, runs `scope` on the handle `handle` builds, then
/// submits when the scope returns `Ok`, or aborts (with the error as
/// rollback reason) when it returns an error, which is then returned. A
/// panic in the scope also aborts, then resumes.
pub(crate) async fn run<H, T, F, Fut>(
    global: &impl Global,
    trans_type: &str,
    handle: impl FnOnce() -> H,
    scope: F,
) -> Result<T>
where
    F: FnOnce(H) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    global.prepare().await?;
    // the scope is user code: a panic must still abort the transaction, so
    // it is caught here and resumed after the abort
    let outcome = AssertUnwindSafe(scope(handle())).catch_unwind().await;
    match outcome {
        Ok(Ok(value)) => {
            global.submit().await?;
            Ok(value)
        }
        Ok(Err(e)) => {
            global.abort(&e.to_string()).await?;
            Err(e)
        }
        Err(panic) => {
            let reason = format!("panic in the {trans_type} scope");
            let _ = global.abort(&reason).await;
            std::panic::resume_unwind(panic)
        }
    }
}
