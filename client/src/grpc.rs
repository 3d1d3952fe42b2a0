//! dtm's gRPC API for clients and gRPC branch services: a coordinator
//! client found directly or through etcd ([`DtmGrpc`]), sagas over gRPC
//! ([`SagaGrpc`]), the barrier of a gRPC branch call read from its
//! metadata ([`barrier_from_metadata`]), and the status a branch answers
//! for a business result ([`status_of`]).

use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::{BranchBarrier, Error, Result};

/// The generated client of `dtmgimp.Dtm` (the server's `proto/dtmgimp.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("dtmgimp");
}

use pb::dtm_client::DtmClient;

/// A coordinator's gRPC API.
#[derive(Debug, Clone)]
pub struct DtmGrpc {
    client: DtmClient<Channel>,
}

/// A coordinator's reply status as this crate's error: ABORTED is
/// FAILURE, FAILED_PRECONDITION is ONGOING.
fn error_of(s: Status) -> Error {
    match s.code() {
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
        })
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
        let request = pb::DtmRequest {
            gid: self.gid,
            trans_type: "saga".into(),
            trans_options: Some(pb::DtmTransOptions {
                wait_result: self.wait_result,
                ..Default::default()
            }),
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
