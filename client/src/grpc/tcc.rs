//! TCC over gRPC (contract §3.7, §7.1): the same scope as
//! [`crate::tcc_global_transaction`], with branches registered through
//! `RegisterBranch` and tries called over gRPC.

use std::future::Future;

use super::{error_of, pb, run_scope, DtmGrpc, Scope};
use crate::{Result, TransOptions};

/// A TCC global transaction in progress over gRPC, handed to the scope of
/// [`DtmGrpc::tcc_global_transaction`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TccGrpc(Scope);

impl TccGrpc {
    /// The gid.
    pub fn gid(&self) -> &str {
        &self.0.gid
    }

    /// Registers a branch (its confirm and cancel methods get `message`
    /// later) and calls its try with `message` and dtm's metadata (`dtm-op`
    /// `try`). A try answering ABORTED is [`crate::Error::Failure`],
    /// FAILED_PRECONDITION [`crate::Error::Ongoing`].
    pub async fn call_branch<M>(
        &self,
        message: &M,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<()>
    where
        M: prost::Message + Clone + Send + 'static,
    {
        let Scope { dtm, gid, .. } = &self.0;
        let branch_id = self.0.next_branch_id();
        let register = pb::DtmBranchRequest {
            gid: gid.to_string(),
            trans_type: "tcc".into(),
            branch_id: branch_id.clone(),
            op: String::new(),
            data: [
                ("confirm".to_owned(), confirm_url.to_owned()),
                ("cancel".to_owned(), cancel_url.to_owned()),
            ]
            .into(),
            busi_payload: message.encode_to_vec(),
        };
        let mut client = dtm.client.clone();
        client.register_branch(register).await.map_err(error_of)?;
        let trans = ("tcc", &**gid);
        dtm.call_branch(try_url, trans, (&branch_id, "try"), &[], message.clone())
            .await
    }
}

impl DtmGrpc {
    /// Runs a TCC global transaction with gid `gid` over gRPC: prepares
    /// it, runs `scope`, then submits when the scope returns `Ok` (every
    /// branch confirmed) or aborts when it returns an error (every
    /// registered branch cancelled, the error returned). A panic in the
    /// scope also aborts, then resumes.
    pub async fn tcc_global_transaction<T, F, Fut>(
        &self,
        gid: &str,
        options: TransOptions,
        scope: F,
    ) -> Result<T>
    where
        F: FnOnce(TccGrpc) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        run_scope(self, gid, "tcc", options, TccGrpc, scope).await
    }
}
