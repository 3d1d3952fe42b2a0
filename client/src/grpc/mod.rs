//! dtm's gRPC API for clients and gRPC branch services: a coordinator
//! client found directly or through etcd ([`DtmGrpc`]), sagas
//! ([`SagaGrpc`]), 2-phase messages ([`MsgGrpc`], with the barrier recipe),
//! TCC ([`TccGrpc`]), XA ([`XaGrpc`]) and workflows
//! ([`DtmGrpc::workflow`]) over gRPC, the barrier and the XA parameters of
//! a gRPC branch call read from its metadata ([`barrier_from_metadata`],
//! [`xa_params_from_metadata`]), and the status a branch answers for a
//! business result ([`status_of`]).

mod msg;
mod tcc;
mod xa;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::{BranchBarrier, Error, Result, TransOptions};

pub use msg::MsgGrpc;
pub use tcc::TccGrpc;
pub use xa::{xa_params_from_metadata, XaGrpc};

/// The generated client of `dtmgimp.Dtm` (the server's `proto/dtmgimp.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("dtmgimp");
}

use pb::dtm_client::DtmClient;

/// A coordinator's gRPC API, and channels to the gRPC branches this
/// client calls itself (TCC tries, msg check-backs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DtmGrpc {
    client: DtmClient<Channel>,
    /// `host:port` of the coordinator (sent as `dtm-dtm`).
    addr: String,
    branches: Arc<Mutex<HashMap<String, Channel>>>,
}

/// A reply status as this crate's error: ABORTED is FAILURE (ONGOING when
/// its message is `ONGOING`), FAILED_PRECONDITION is ONGOING.
pub(crate) fn error_of(s: Status) -> Error {
    match s.code() {
        Code::Aborted if s.message() == "ONGOING" => Error::Ongoing(s.message().to_owned()),
        Code::Aborted => Error::Failure(s.message().to_owned()),
        Code::FailedPrecondition => Error::Ongoing(s.message().to_owned()),
        code => Error::Grpc(format!("{code:?}: {}", s.message())),
    }
}

impl DtmGrpc {
    /// Connects to `target`: `host:port`, or `etcd://host:port/key` for a
    /// coordinator registered in etcd under `<key>/` (go-zero's layout).
    pub async fn connect(target: &str) -> Result<Self> {
        let addr = match target.strip_prefix("etcd://") {
            Some(rest) => resolve(rest).await?,
            None => target.to_owned(),
        };
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Other(format!("bad gRPC target {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| Error::Other(format!("cannot reach {addr}: {e}")))?;
        Ok(Self {
            client: DtmClient::new(channel),
            addr,
            branches: Arc::default(),
        })
    }

    /// The generated client, for calls this crate does not wrap.
    pub fn client(&self) -> DtmClient<Channel> {
        self.client.clone()
    }

    /// A fresh gid from the coordinator.
    pub async fn new_gid(&self) -> Result<String> {
        let reply = self.client.clone().new_gid(()).await.map_err(error_of)?;
        Ok(reply.into_inner().gid)
    }

    /// A saga with this gid, to add steps to.
    pub fn saga(&self, gid: &str) -> SagaGrpc {
        SagaGrpc {
            client: self.client.clone(),
            gid: gid.to_owned(),
            steps: Vec::new(),
            payloads: Vec::new(),
            wait_result: false,
        }
    }

    /// A 2-phase message with this gid, to add steps to.
    pub fn msg(&self, gid: &str) -> MsgGrpc {
        MsgGrpc::new(self, gid)
    }

    /// The workflow `name` under gid `gid` over gRPC: the same
    /// [`crate::Workflow`] as over HTTP; its callback is a gRPC method
    /// (`host:port/workflow.Workflow/Execute`) that gets the input in
    /// `workflow.WorkflowData`.
    pub fn workflow(&self, name: &str, gid: &str) -> crate::Workflow {
        crate::Workflow::over_grpc(self, name, gid)
    }

    /// Calls the gRPC branch method `url` (`host:port/pkg.Svc/Method`,
    /// `grpc://...`, or `etcd://host:port/key/pkg.Svc/Method`) with
    /// `message` and dtm's metadata for `branch` (id, op) of `trans`
    /// (type, gid), plus `extra` metadata.
    pub(crate) async fn call_branch<M>(
        &self,
        url: &str,
        trans: (&str, &str),
        branch: (&str, &str),
        extra: &[(&'static str, &str)],
        message: M,
    ) -> Result<()>
    where
        M: prost::Message + Send + 'static,
    {
        let (trans_type, gid) = trans;
        let (branch_id, op) = branch;
        let (addr, path) = locate(url).await?;
        let path = PathAndQuery::try_from(path.as_str())
            .map_err(|e| Error::Other(format!("bad gRPC method in {url}: {e}")))?;
        let channel = self.branch_channel(&addr)?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Error::Grpc(format!("cannot reach {addr}: {e}")))?;
        let mut request = tonic::Request::new(message);
        let meta = request.metadata_mut();
        for (k, v) in [
            ("dtm-gid", gid),
            ("dtm-trans_type", trans_type),
            ("dtm-branch_id", branch_id),
            ("dtm-op", op),
            ("dtm-dtm", self.addr.as_str()),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            let v = MetadataValue::try_from(v)
                .map_err(|_| Error::Other(format!("{k} {v:?} is not valid metadata")))?;
            meta.insert(k, v);
        }
        grpc.unary(request, path, tonic_prost::ProstCodec::<M, ()>::default())
            .await
            .map_err(error_of)?;
        Ok(())
    }

    fn branch_channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.branches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Other(format!("bad gRPC target {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// A TCC or XA global transaction on the gRPC API, for the shared scope.
pub(crate) struct GrpcGlobal<'a> {
    pub(crate) dtm: &'a DtmGrpc,
    pub(crate) request: pb::DtmRequest,
}

impl crate::scope::Global for GrpcGlobal<'_> {
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

/// What a TCC or XA handle holds: the coordinator, the gid and the count
/// of branches so far. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) dtm: DtmGrpc,
    pub(crate) gid: Arc<str>,
    branches: Arc<std::sync::atomic::AtomicU32>,
}

impl Scope {
    /// The next branch id: `01`, `02`, ... in call order.
    pub(crate) fn next_branch_id(&self) -> String {
        use std::sync::atomic::Ordering;
        format!("{:02}", self.branches.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Runs the shared TCC/XA scope over gRPC for the `trans_type` global
/// transaction `gid`, the scope's handle made by `wrap`.
pub(crate) async fn run_scope<H, T, F, Fut>(
    dtm: &DtmGrpc,
    gid: &str,
    trans_type: &str,
    options: TransOptions,
    wrap: fn(Scope) -> H,
    scope: F,
) -> Result<T>
where
    F: FnOnce(H) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let global = GrpcGlobal::new(dtm, gid, trans_type, &options);
    let handle = || {
        wrap(Scope {
            dtm: dtm.clone(),
            gid: gid.into(),
            branches: Arc::default(),
        })
    };
    crate::scope::run(&global, trans_type, handle, scope).await
}

impl<'a> GrpcGlobal<'a> {
    /// The `trans_type` global transaction `gid` on `dtm`.
    pub(crate) fn new(dtm: &'a DtmGrpc, gid: &str, trans_type: &str, o: &TransOptions) -> Self {
        Self {
            dtm,
            request: pb::DtmRequest {
                gid: gid.to_owned(),
                trans_type: trans_type.to_owned(),
                trans_options: Some(trans_options(o)),
                ..Default::default()
            },
        }
    }
}

/// The options as the gRPC API carries them.
pub(crate) fn trans_options(o: &TransOptions) -> pb::DtmTransOptions {
    pb::DtmTransOptions {
        wait_result: o.wait_result,
        timeout_to_fail: o.timeout_to_fail.unwrap_or_default(),
        retry_interval: o.retry_interval.unwrap_or_default(),
        branch_headers: o.branch_headers.clone().into_iter().collect(),
        request_timeout: o.request_timeout.unwrap_or_default(),
        retry_limit: o.retry_limit.unwrap_or_default(),
    }
}

/// The endpoint and method path of a gRPC branch URL; `etcd://` targets
/// are looked up in etcd on every call.
async fn locate(url: &str) -> Result<(String, String)> {
    let bad = || Error::Other(format!("{url} is not a gRPC branch URL"));
    if let Some(rest) = url.strip_prefix("etcd://") {
        let mut parts = rest.splitn(3, '/');
        let (hosts, key, method) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().ok_or_else(bad)?,
        );
        let addr = resolve(&format!("{hosts}/{key}")).await?;
        return Ok((addr, format!("/{method}")));
    }
    if url.starts_with("grpcs://") {
        return Err(Error::Other(format!(
            "{url}: this client calls branches without TLS"
        )));
    }
    let rest = url.strip_prefix("grpc://").unwrap_or(url);
    let (addr, method) = rest.split_once('/').ok_or_else(bad)?;
    if addr.is_empty() || !method.contains('/') {
        return Err(bad());
    }
    Ok((addr.to_owned(), format!("/{method}")))
}

/// The first live endpoint under `<key>/` in the etcd of `rest`
/// (`host:port[,host:port]/key`).
async fn resolve(rest: &str) -> Result<String> {
    let (hosts, key) = rest
        .split_once('/')
        .ok_or_else(|| Error::Other(format!("etcd://{rest} names no key")))?;
    let endpoints: Vec<&str> = hosts.split(',').collect();
    let mut etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .map_err(|e| Error::Other(format!("etcd {hosts}: {e}")))?;
    let found = etcd
        .get(
            format!("{key}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| Error::Other(format!("etcd {hosts}: {e}")))?;
    found
        .kvs()
        .iter()
        .find_map(|kv| kv.value_str().ok().map(str::to_owned))
        .ok_or_else(|| {
            Error::Other(format!(
                "no endpoint registered under {key}/ in etcd {hosts}"
            ))
        })
}

/// A saga over gRPC: each step's action and compensation are gRPC branch
/// URLs (`host:port/pkg.Svc/Method` or `etcd://host:port/key/pkg.Svc/Method`)
/// called with the step's payload, a proto message.
#[derive(Debug, Clone)]
pub struct SagaGrpc {
    client: DtmClient<Channel>,
    gid: String,
    steps: Vec<serde_json::Value>,
    payloads: Vec<Vec<u8>>,
    wait_result: bool,
}

impl SagaGrpc {
    /// Adds a step.
    pub fn add(mut self, action: &str, compensate: &str, payload: &impl prost::Message) -> Self {
        self.steps
            .push(serde_json::json!({"action": action, "compensate": compensate}));
        self.payloads.push(payload.encode_to_vec());
        self
    }

    /// Makes `submit` wait for the saga's outcome.
    pub fn wait_result(mut self, wait: bool) -> Self {
        self.wait_result = wait;
        self
    }

    /// Submits it. With `wait_result`, a saga that rolled back answers
    /// [`Error::Failure`].
    pub async fn submit(self) -> Result<()> {
        let options = TransOptions {
            wait_result: self.wait_result,
            ..Default::default()
        };
        let request = pb::DtmRequest {
            gid: self.gid,
            trans_type: "saga".into(),
            trans_options: Some(trans_options(&options)),
            steps: serde_json::to_string(&self.steps)?,
            bin_payloads: self.payloads,
            ..Default::default()
        };
        self.client
            .clone()
            .submit(request)
            .await
            .map_err(error_of)?;
        Ok(())
    }
}

/// The barrier of a gRPC branch call, from the `dtm-trans_type`, `dtm-gid`,
/// `dtm-branch_id` and `dtm-op` metadata the coordinator sends.
pub fn barrier_from_metadata(meta: &MetadataMap) -> Result<BranchBarrier> {
    let get = |k: &str| {
        meta.get(k)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::Other(format!("the call carries no {k} metadata")))
    };
    Ok(BranchBarrier::new(
        get("dtm-trans_type")?,
        get("dtm-gid")?,
        get("dtm-branch_id")?,
        get("dtm-op")?,
    ))
}

/// The status a gRPC branch answers for a business result: OK, ABORTED
/// for FAILURE (roll back), FAILED_PRECONDITION for ONGOING (ask again),
/// INTERNAL for anything else (retried).
pub fn status_of(result: Result<()>) -> std::result::Result<tonic::Response<()>, Status> {
    match result {
        Ok(()) => Ok(tonic::Response::new(())),
        Err(Error::Failure(m)) => Err(Status::aborted(m)),
        Err(Error::Ongoing(m)) => Err(Status::failed_precondition(m)),
        Err(e) => Err(Status::internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_comes_from_the_metadata() {
        let mut meta = MetadataMap::new();
        for (k, v) in [
            ("dtm-trans_type", "saga"),
            ("dtm-gid", "g1"),
            ("dtm-branch_id", "01"),
            ("dtm-op", "compensate"),
        ] {
            meta.insert(k, v.parse().unwrap());
        }
        let b = barrier_from_metadata(&meta).unwrap();
        assert_eq!(
            (b.trans_type(), b.gid(), b.branch_id(), b.op()),
            ("saga", "g1", "01", "compensate")
        );
        meta.remove("dtm-gid");
        assert!(barrier_from_metadata(&meta).is_err());
    }

    #[tokio::test]
    async fn branch_urls_locate_their_endpoint_and_method() {
        for (url, addr, path) in [
            (
                "localhost:5000/user.User/saveUser",
                "localhost:5000",
                "/user.User/saveUser",
            ),
            ("grpc://svc:1/a.B/C", "svc:1", "/a.B/C"),
        ] {
            assert_eq!(locate(url).await.unwrap(), (addr.into(), path.into()));
        }
        for bad in [
            "localhost:5000",
            "svc:1/C",
            "grpcs://svc:1/a.B/C",
            "etcd://e:2379/key",
        ] {
            assert!(locate(bad).await.is_err(), "{bad}");
        }
    }

    #[test]
    fn business_results_map_to_the_contracts_codes() {
        let code = |r: Result<()>| status_of(r).err().map(|s| s.code());
        assert_eq!(code(Ok(())), None);
        assert_eq!(code(Err(Error::Failure("no".into()))), Some(Code::Aborted));
        assert_eq!(
            code(Err(Error::Ongoing("later".into()))),
            Some(Code::FailedPrecondition)
        );
        assert_eq!(
            code(Err(Error::Other("db down".into()))),
            Some(Code::Internal)
        );
        assert!(matches!(error_of(Status::aborted("x")), Error::Failure(_)));
        assert!(matches!(
            error_of(Status::failed_precondition("x")),
            Error::Ongoing(_)
        ));
        assert!(matches!(error_of(Status::unavailable("x")), Error::Grpc(_)));
    }
}
