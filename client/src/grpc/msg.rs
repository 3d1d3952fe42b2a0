//! 2-phase messages over gRPC (contract §3.6, §7.1): the same recipe as
//! [`crate::Msg`], with proto payloads and a gRPC check-back.

use std::future::Future;

use serde_json::json;

use super::{pb, trans_options, DtmGrpc};
use crate::barrier::{MSG_BRANCH_ID, MSG_OP};
use crate::msg::{do_and_submit, in_db_barrier, TwoPhase};
use crate::{BarrierDb, BranchBarrier, DbConn, Result, TransOptions};

/// A 2-phase message over gRPC: each action is a gRPC branch URL called
/// with its payload (a proto message) once the msg is submitted; the
/// check-back `query_prepared` is a gRPC method too, answered by
/// [`BranchBarrier::query_prepared_mysql`] or
/// [`BranchBarrier::query_prepared_postgres`] behind [`super::status_of`].
#[derive(Debug, Clone)]
pub struct MsgGrpc {
    dtm: DtmGrpc,
    gid: String,
    steps: Vec<serde_json::Value>,
    payloads: Vec<Vec<u8>>,
    query_prepared: String,
    options: TransOptions,
}

impl MsgGrpc {
    pub(super) fn new(dtm: &DtmGrpc, gid: &str) -> Self {
        Self {
            dtm: dtm.clone(),
            gid: gid.to_owned(),
            steps: Vec::new(),
            payloads: Vec::new(),
            query_prepared: String::new(),
            options: TransOptions::default(),
        }
    }

    /// Adds an action called with `payload` once the msg is submitted.
    pub fn add(mut self, action: &str, payload: &impl prost::Message) -> Self {
        self.steps.push(json!({ "action": action }));
        self.payloads.push(payload.encode_to_vec());
        self
    }

    /// Sets all options at once (`timeout_to_fail` is when a prepared msg
    /// is checked back).
    pub fn options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    fn request(&self) -> pb::DtmRequest {
        pb::DtmRequest {
            gid: self.gid.clone(),
            trans_type: "msg".into(),
            trans_options: Some(trans_options(&self.options)),
            bin_payloads: self.payloads.clone(),
            query_prepared: self.query_prepared.clone(),
            steps: serde_json::Value::from(self.steps.clone()).to_string(),
            ..Default::default()
        }
    }

    /// Prepares the msg; if it is not submitted within `timeout_to_fail`,
    /// the coordinator calls `query_prepared` over gRPC (metadata `dtm-op`
    /// `msg`, branch `00`) and submits on OK, drops it on ABORTED.
    pub async fn prepare(&mut self, query_prepared: &str) -> Result<()> {
        self.query_prepared = query_prepared.to_owned();
        let mut client = self.dtm.client.clone();
        client
            .prepare(self.request())
            .await
            .map_err(super::error_of)?;
        Ok(())
    }

    /// Submits the msg (prepared or not).
    pub async fn submit(&self) -> Result<()> {
        let mut client = self.dtm.client.clone();
        client
            .submit(self.request())
            .await
            .map_err(super::error_of)?;
        Ok(())
    }

    /// Aborts a prepared msg: it ends `failed` and no action is called.
    pub async fn abort(&self) -> Result<()> {
        let request = pb::DtmRequest {
            gid: self.gid.clone(),
            trans_type: "msg".into(),
            ..Default::default()
        };
        let mut client = self.dtm.client.clone();
        client.abort(request).await.map_err(super::error_of)?;
        Ok(())
    }

    /// Prepares, runs `busi` in the msg's barrier and submits, as
    /// [`crate::Msg::do_and_submit`] does; `query_prepared` is the gRPC
    /// check-back.
    pub async fn do_and_submit<F, Fut>(self, query_prepared: &str, busi: F) -> Result<()>
    where
        F: FnOnce(BranchBarrier) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        do_and_submit(self, query_prepared, busi).await
    }

    /// [`MsgGrpc::do_and_submit`] where the local transaction is a database
    /// transaction guarded by the barrier table `table`, as
    /// [`crate::Msg::do_and_submit_db`].
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
}

impl TwoPhase for MsgGrpc {
    fn gid(&self) -> &str {
        &self.gid
    }
    async fn prepare(&mut self, query_prepared: &str) -> Result<()> {
        MsgGrpc::prepare(self, query_prepared).await
    }
    async fn submit(&self) -> Result<()> {
        MsgGrpc::submit(self).await
    }
    async fn abort(&self) -> Result<()> {
        MsgGrpc::abort(self).await
    }
    async fn ask_query_prepared(&self, url: &str) -> Result<()> {
        let trans = ("msg", self.gid.as_str());
        self.dtm
            .call_branch(url, trans, (MSG_BRANCH_ID, MSG_OP), &[], ())
            .await
    }
}
