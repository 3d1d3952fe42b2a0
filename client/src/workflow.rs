//! Workflow (contract §3.9), in its simplest form: the workflow function
//! runs its steps in the client; each step's outcome is recorded with the
//! coordinator, so running the workflow again with the same gid (after a
//! crash, or from the coordinator's callback) replays the recorded steps
//! instead of running them again, and finishes the rest.
//!
//! ```no_run
//! # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
//! use dtx_client::Workflow;
//! let result = Workflow::new(&dtm, "transfer", "gid-1")
//!     .execute(b"30", |wf| async move {
//!         let debited: i64 = wf.step(|| async { Ok(30) }).await?;
//!         let credited: i64 = wf.step(|| async move { Ok(debited) }).await?;
//!         Ok(format!("moved {credited}").into_bytes())
//!     })
//!     .await?;
//! assert_eq!(result, b"moved 30");
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::client::{Dtm, TransOptions};
use crate::error::{Error, Result};
use crate::grpc::{pb, DtmGrpc};

/// The coordinator API a workflow talks to.
#[derive(Clone, Debug)]
enum Api {
    Http(Dtm),
    Grpc(DtmGrpc),
}

/// What `prepareWorkflow` answered.
struct Prepared {
    status: String,
    /// The result of a finished workflow, base64.
    result: String,
    rollback_reason: String,
    /// Recorded outcomes by branch id: `(succeeded, data)`.
    recorded: HashMap<String, (bool, Vec<u8>)>,
}

impl Api {
    async fn prepare(&self, wf: &Workflow, input: &[u8]) -> Result<Prepared> {
        let custom = json!({"name": wf.name, "data": BASE64.encode(input)}).to_string();
        let mut prepared = Prepared {
            status: String::new(),
            result: String::new(),
            rollback_reason: String::new(),
            recorded: HashMap::new(),
        };
        let mut record = |op: &str, branch_id: &str, status: &str, data: Vec<u8>| {
            if op == "action" {
                let succeeded = status == "succeed";
                prepared
                    .recorded
                    .insert(branch_id.to_owned(), (succeeded, data));
            }
        };
        match self {
            Self::Http(dtm) => {
                let mut body = serde_json::to_value(&wf.options)?;
                body["gid"] = json!(wf.gid);
                body["trans_type"] = json!("workflow");
                body["protocol"] = json!("http");
                body["custom_data"] = json!(custom);
                if !wf.callback.is_empty() {
                    body["query_prepared"] = json!(wf.callback);
                }
                let reply = dtm.post("prepareWorkflow", &body).await?;
                for p in reply["progresses"].as_array().into_iter().flatten() {
                    let text = |k: &str| p[k].as_str().unwrap_or_default();
                    let data = decode(text("bin_data"))?;
                    record(text("op"), text("branch_id"), text("status"), data);
                }
                let trans = &reply["transaction"];
                let text = |k: &str| trans[k].as_str().unwrap_or_default().to_owned();
                prepared.status = text("status");
                prepared.result = text("result");
                prepared.rollback_reason = text("rollback_reason");
            }
            Self::Grpc(dtm) => {
                let request = pb::DtmRequest {
                    gid: wf.gid.clone(),
                    trans_type: "workflow".into(),
                    trans_options: Some(crate::grpc::trans_options(&wf.options)),
                    customed_data: custom,
                    query_prepared: wf.callback.clone(),
                    ..Default::default()
                };
                let reply = dtm
                    .client()
                    .prepare_workflow(request)
                    .await
                    .map_err(crate::grpc::error_of)?
                    .into_inner();
                for p in reply.progresses {
                    record(&p.op, &p.branch_id, &p.status, p.bin_data);
                }
                let trans = reply.transaction.unwrap_or_default();
                prepared.status = trans.status;
                prepared.result = trans.result;
                prepared.rollback_reason = trans.rollback_reason;
            }
        }
        Ok(prepared)
    }

    /// Records step `branch_id`'s outcome: `status` with `data`.
    async fn record(&self, gid: &str, branch_id: String, status: &str, data: String) -> Result<()> {
        match self {
            Self::Http(dtm) => {
                let mut register = BTreeMap::new();
                register.insert("gid", gid.to_owned());
                register.insert("trans_type", "workflow".to_owned());
                register.insert("branch_id", branch_id);
                register.insert("op", "action".to_owned());
                register.insert("status", status.to_owned());
                register.insert("data", data);
                dtm.register_branch(&register).await
            }
            Self::Grpc(dtm) => {
                let request = pb::DtmBranchRequest {
                    gid: gid.to_owned(),
                    trans_type: "workflow".into(),
                    branch_id,
                    op: "action".into(),
                    data: [("status".to_owned(), status.to_owned())].into(),
                    busi_payload: data.into_bytes(),
                };
                dtm.client()
                    .register_branch(request)
                    .await
                    .map_err(crate::grpc::error_of)?;
                Ok(())
            }
        }
    }

    /// Submits the workflow's outcome (`status`, `result`,
    /// `rollback_reason`).
    async fn submit(&self, gid: &str, extra: BTreeMap<&str, String>) -> Result<()> {
        match self {
            Self::Http(dtm) => {
                let submit = json!({"gid": gid, "trans_type": "workflow", "req_extra": extra});
                dtm.post("submit", &submit).await.map(drop)
            }
            Self::Grpc(dtm) => {
                let request = pb::DtmRequest {
                    gid: gid.to_owned(),
                    trans_type: "workflow".into(),
                    req_extra: extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    ..Default::default()
                };
                dtm.client()
                    .submit(request)
                    .await
                    .map_err(crate::grpc::error_of)?;
                Ok(())
            }
        }
    }
}

/// A workflow to run (or resume) under a gid. See the module example.
///
/// ```
/// let dtm = dtx_client::Dtm::new("http://localhost:36789/api/dtmsvr");
/// let wf = dtx_client::Workflow::new(&dtm, "transfer", "gid-1").callback("http://svc/resume");
/// # let _ = wf;
/// ```
#[derive(Clone, Debug)]
pub struct Workflow {
    api: Api,
    name: String,
    gid: String,
    callback: String,
    options: TransOptions,
}

/// The running workflow, handed to the workflow function: its steps go
/// through [`WorkflowCtx::step`]. Cheap to clone.
///
/// ```no_run
/// # async fn f(wf: dtx_client::WorkflowCtx) -> dtx_client::Result<()> {
/// let n: u32 = wf.step(|| async { Ok(1) }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct WorkflowCtx {
    inner: Arc<Ctx>,
}

#[derive(Debug)]
struct Ctx {
    api: Api,
    gid: String,
    input: Vec<u8>,
    /// Recorded outcomes by branch id: `(succeeded, data)`.
    recorded: HashMap<String, (bool, Vec<u8>)>,
    steps: AtomicU32,
}

impl Workflow {
    /// The workflow `name` under gid `gid`, on the coordinator `dtm`.
    ///
    /// ```
    /// let dtm = dtx_client::Dtm::new("http://localhost:36789/api/dtmsvr");
    /// let wf = dtx_client::Workflow::new(&dtm, "transfer", "gid-1");
    /// # let _ = wf;
    /// ```
    pub fn new(dtm: &Dtm, name: &str, gid: &str) -> Self {
        Self::on(Api::Http(dtm.clone()), name, gid)
    }

    /// The same over the gRPC API (see [`DtmGrpc::workflow`]); the
    /// callback is then a gRPC method (`workflow.Workflow/Execute`).
    pub(crate) fn over_grpc(dtm: &DtmGrpc, name: &str, gid: &str) -> Self {
        Self::on(Api::Grpc(dtm.clone()), name, gid)
    }

    fn on(api: Api, name: &str, gid: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            gid: gid.to_owned(),
            callback: String::new(),
            options: TransOptions::default(),
        }
    }

    /// The URL the coordinator calls back to resume an unfinished workflow
    /// (`query_prepared`; it receives `gid` and `op=<name>` in the query and
    /// the input as body). Its handler should run the same workflow again
    /// with [`Workflow::execute`].
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let wf = dtx_client::Workflow::new(&dtm, "w", "g").callback("http://svc/resume");
    /// # let _ = wf;
    /// ```
    pub fn callback(mut self, url: &str) -> Self {
        self.callback = url.to_owned();
        self
    }

    /// Options of the global transaction (`timeout_to_fail` delays the
    /// first callback, `retry_interval` spaces the next ones).
    ///
    /// ```
    /// # let dtm = dtx_client::Dtm::new("http://h/api/dtmsvr");
    /// let o = dtx_client::TransOptions { timeout_to_fail: Some(60), ..Default::default() };
    /// let wf = dtx_client::Workflow::new(&dtm, "w", "g").options(o);
    /// # let _ = wf;
    /// ```
    pub fn options(mut self, options: TransOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs or resumes the workflow with `input`:
    /// 1. `prepareWorkflow`; if the workflow already finished, returns its
    ///    result (`succeed`) or [`Error::Failure`] with its reason
    ///    (`failed`) without running anything.
    /// 2. Runs `f`; steps recorded earlier are replayed, not run again.
    /// 3. Submits the outcome: `Ok(result)` as `succeed` with the result,
    ///    [`Error::Failure`] as `failed` with its reason. Any other error (or
    ///    ONGOING) is returned without submitting, so the workflow stays
    ///    prepared and can be resumed.
    ///
    /// ```no_run
    /// # async fn f(dtm: dtx_client::Dtm) -> dtx_client::Result<()> {
    /// let r = dtx_client::Workflow::new(&dtm, "w", "g")
    ///     .execute(b"", |_wf| async { Ok(b"done".to_vec()) })
    ///     .await?;
    /// assert_eq!(r, b"done");
    /// # Ok(()) }
    /// ```
    pub async fn execute<F, Fut>(&self, input: &[u8], f: F) -> Result<Vec<u8>>
    where
        F: FnOnce(WorkflowCtx) -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let prepared = self.api.prepare(self, input).await?;
        match prepared.status.as_str() {
            "succeed" => return decode(&prepared.result),
            "failed" => return Err(Error::failure(prepared.rollback_reason)),
            _ => {}
        }
        let ctx = WorkflowCtx {
            inner: Arc::new(Ctx {
                api: self.api.clone(),
                gid: self.gid.clone(),
                input: input.to_vec(),
                recorded: prepared.recorded,
                steps: AtomicU32::new(0),
            }),
        };
        let outcome = f(ctx).await;
        let mut extra = BTreeMap::new();
        match &outcome {
            Ok(result) => {
                extra.insert("status", "succeed".to_owned());
                extra.insert("result", BASE64.encode(result));
            }
            Err(Error::Failure(reason)) => {
                extra.insert("status", "failed".to_owned());
                extra.insert("rollback_reason", reason.clone());
            }
            Err(_) => return outcome,
        }
        self.api.submit(&self.gid, extra).await?;
        outcome
    }
}

impl WorkflowCtx {
    /// The gid.
    ///
    /// ```no_run
    /// # fn f(wf: dtx_client::WorkflowCtx) { println!("{}", wf.gid()); }
    /// ```
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// The workflow's input.
    ///
    /// ```no_run
    /// # fn f(wf: dtx_client::WorkflowCtx) { println!("{} bytes", wf.input().len()); }
    /// ```
    pub fn input(&self) -> &[u8] {
        &self.inner.input
    }

    /// Runs one recorded step (branch ids `01`, `02`, ... in call order).
    /// If this step was recorded by an earlier run, its outcome is
    /// replayed and `f` is not called. Otherwise `f` runs, and its outcome
    /// is recorded with `registerBranch` (`op` action, `status` succeed
    /// with the JSON of the value as `data`, or failed with the reason for
    /// an [`Error::Failure`]). Other errors are not recorded: the step runs
    /// again on resume.
    ///
    /// ```no_run
    /// # async fn f(wf: dtx_client::WorkflowCtx) -> dtx_client::Result<()> {
    /// let id: String = wf.step(|| async { Ok("order-7".to_string()) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn step<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let branch_id = format!(
            "{:02}",
            self.inner.steps.fetch_add(1, Ordering::Relaxed) + 1
        );
        if let Some((succeeded, data)) = self.inner.recorded.get(&branch_id) {
            return if *succeeded {
                Ok(serde_json::from_slice(data)?)
            } else {
                Err(Error::failure(String::from_utf8_lossy(data)))
            };
        }
        let outcome = f().await;
        let (status, data) = match &outcome {
            Ok(value) => ("succeed", serde_json::to_string(value)?),
            Err(Error::Failure(reason)) => ("failed", reason.clone()),
            Err(_) => return outcome,
        };
        self.inner
            .api
            .record(&self.inner.gid, branch_id, status, data)
            .await?;
        outcome
    }
}

fn decode(b64: &str) -> Result<Vec<u8>> {
    BASE64
        .decode(b64)
        .map_err(|e| Error::other(format!("bad base64 from the coordinator: {e}")))
}
