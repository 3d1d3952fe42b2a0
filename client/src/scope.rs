//! The global-transaction scope shared by TCC and XA: prepare, run the
//! user's code, then submit, or abort on an error or a panic.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::{json, Value};

use crate::client::{Dtm, TransOptions};
use crate::error::Result;

/// Prepares a `trans_type` global transaction `gid`, runs `scope` on the
/// handle `handle` builds, then submits when the scope returns `Ok`, or
/// aborts (with the error as rollback reason) when it returns an error,
/// which is then returned. A panic in the scope also aborts, then resumes.
pub(crate) async fn run<H, T, F, Fut>(
    dtm: &Dtm,
    gid: &str,
    trans_type: &str,
    options: TransOptions,
    handle: impl FnOnce() -> H,
    scope: F,
) -> Result<T>
where
    F: FnOnce(H) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut body = serde_json::to_value(&options)?;
    body["gid"] = json!(gid);
    body["trans_type"] = json!(trans_type);
    dtm.post("prepare", &body).await?;
    // the scope is user code: a panic must still abort the transaction, so
    // it is caught here and resumed after the abort
    let outcome = AssertUnwindSafe(scope(handle())).catch_unwind().await;
    match outcome {
        Ok(Ok(value)) => {
            dtm.post("submit", &body).await?;
            Ok(value)
        }
        Ok(Err(e)) => {
            abort(dtm, &body, &e.to_string()).await?;
            Err(e)
        }
        Err(panic) => {
            let reason = format!("panic in the {trans_type} scope");
            let _ = abort(dtm, &body, &reason).await;
            std::panic::resume_unwind(panic)
        }
    }
}

/// Aborts with a rollback reason.
async fn abort(dtm: &Dtm, body: &Value, reason: &str) -> Result<()> {
    let mut body = body.clone();
    body["rollback_reason"] = json!(reason);
    dtm.post("abort", &body).await.map(drop)
}
