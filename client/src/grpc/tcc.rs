//! TCC over gRPC (contract §3.7, §7.1): the same scope as
//! [`crate::tcc_global_transaction`], with branches registered through
//! `RegisterBranch` and tries called over gRPC.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::{error_of, pb, trans_options, DtmGrpc};
use crate::scope::Global;
use crate::{Result, TransOptions};

/// A TCC global transaction in progress over gRPC, handed to the scope of
/// [`DtmGrpc::tcc_global_transaction`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TccGrpc {
    dtm: DtmGrpc,
    gid: Arc<str>,
    branches: Arc<AtomicU32>,
}

impl TccGrpc {
    /// The gid.
    pub fn gid(&self) -> &str {
        &self.gid
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
        let branch_id = format!("{:02}", self.branches.fetch_add(1, Ordering::Relaxed) + 1);
        let register = pb::DtmBranchRequest {
            gid: self.gid.to_string(),
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
        let mut client = self.dtm.client.clone();
        client.register_branch(register).await.map_err(error_of)?;
        let trans = ("tcc", &*self.gid);
        self.dtm
            .call_branch(try_url, trans, &branch_id, "try", message.clone())
            .await
    }
}

/// A TCC or XA global transaction on the gRPC API.
struct GrpcGlobal<'a> {
    dtm: &'a DtmGrpc,
    request: pb::DtmRequest,
}

impl Global for GrpcGlobal<'_> {
    async fn prepare(&self) -> Result<()> {
        let mut client = self.dtm.client.clone();
        client
            .prepare(self.request.clone())
            .await
            .map_err(error_of)?;
        Ok(())
    }
    async fn submit(&self) -> Result<()> {
        let mut client = self.dtm.client.clone();
        client
            .submit(self.request.clone())
            .await
            .map_err(error_of)?;
        Ok(())
    }
    async fn abort(&self, reason: &str) -> Result<()> {
        let mut request = self.request.clone();
        request.rollback_reason = reason.to_owned();
        let mut client = self.dtm.client.clone();
        client.abort(request).await.map_err(error_of)?;
        Ok(())
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
        let global = GrpcGlobal {
            dtm: self,
            request: pb::DtmRequest {
                gid: gid.to_owned(),
                trans_type: "tcc".into(),
                trans_options: Some(trans_options(&options)),
                ..Default::default()
            },
        };
        let handle = || TccGrpc {
            dtm: self.clone(),
            gid: gid.into(),
            branches: Arc::default(),
        };
        crate::scope::run(&global, "tcc", handle, scope).await
    }
}
