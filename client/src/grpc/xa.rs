//! XA over gRPC (contract §3.8, §7.1): the same scope as
//! [`crate::xa_global_transaction`], the branch actions called over gRPC
//! with `dtm-phase2_url` metadata; on the branch side the parameters come
//! from the call's metadata and [`crate::XaMysql::over_grpc`] registers
//! through the gRPC API.

use std::future::Future;

use tonic::metadata::MetadataMap;

use super::{run_scope, DtmGrpc, Scope};
use crate::xa::XaParams;
use crate::{Error, Result, TransOptions};

/// An XA global transaction in progress over gRPC, handed to the scope of
/// [`DtmGrpc::xa_global_transaction`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct XaGrpc(Scope);

impl XaGrpc {
    /// The gid.
    pub fn gid(&self) -> &str {
        &self.0.gid
    }

    /// Calls a branch's action, the gRPC method `url`, with `message` and
    /// dtm's metadata (`dtm-op` `action`, `dtm-branch_id` `01`, `02`, ...
    /// in call order) plus `dtm-phase2_url` = `url`: the branch registers
    /// itself, and the coordinator later calls the same method with
    /// `dtm-op` `commit` or `rollback`. A reply of ABORTED is
    /// [`Error::Failure`].
    pub async fn call_branch<M>(&self, message: &M, url: &str) -> Result<()>
    where
        M: prost::Message + Clone + Send + 'static,
    {
        let branch_id = self.0.next_branch_id();
        let trans = ("xa", &*self.0.gid);
        let extra = [("dtm-phase2_url", url)];
        self.0
            .dtm
            .call_branch(url, trans, (&branch_id, "action"), &extra, message.clone())
            .await
    }
}

impl DtmGrpc {
    /// Runs an XA global transaction with gid `gid` over gRPC: prepares
    /// it, runs `scope`, then submits when the scope returns `Ok` (every
    /// registered branch commits) or aborts when it returns an error
    /// (every registered branch rolls back, the error returned). A panic
    /// in the scope also aborts, then resumes.
    pub async fn xa_global_transaction<T, F, Fut>(
        &self,
        gid: &str,
        options: TransOptions,
        scope: F,
    ) -> Result<T>
    where
        F: FnOnce(XaGrpc) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        run_scope(self, gid, "xa", options, XaGrpc, scope).await
    }

    /// Registers XA branch `params` (its phase-2 method `phase2_url`).
    pub(crate) async fn register_xa(&self, params: &XaParams) -> Result<()> {
        let request = super::pb::DtmBranchRequest {
            gid: params.gid.clone(),
            trans_type: "xa".into(),
            branch_id: params.branch_id.clone(),
            data: [("url".to_owned(), params.phase2_url.clone())].into(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        client
            .register_branch(request)
            .await
            .map_err(super::error_of)?;
        Ok(())
    }
}

/// The XA parameters of a gRPC branch call, from its `dtm-gid`,
/// `dtm-trans_type`, `dtm-branch_id`, `dtm-op` and (actions only)
/// `dtm-phase2_url` metadata.
pub fn xa_params_from_metadata(meta: &MetadataMap) -> Result<XaParams> {
    let get = |k: &str| {
        meta.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let params = XaParams {
        gid: get("dtm-gid"),
        trans_type: get("dtm-trans_type"),
        branch_id: get("dtm-branch_id"),
        op: get("dtm-op"),
        phase2_url: get("dtm-phase2_url"),
    };
    if params.gid.is_empty() || params.branch_id.is_empty() || params.op.is_empty() {
        return Err(Error::Other(
            "the call carries no dtm-gid, dtm-branch_id or dtm-op metadata".into(),
        ));
    }
    Ok(params)
}
